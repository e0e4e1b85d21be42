"""Rectified crops of detected regions: what a text recogniser wants as input.

Each region is warped from its quadrilateral to an upright rectangle (perspective transform,
bicubic, edges replicated), so a rotated or slanted word comes out horizontal. A polygon is first
reduced to its minimum-area rectangle. Quads come from post-processing as TL, TR, BR, BL; the
crop is `width x height` of that order's longer opposite sides. A crop much taller than wide
(a vertical word, or a quad listed a quarter turn round) is turned 90 degrees so that text runs
left to right, as recognisers expect.
"""

from __future__ import annotations

import cv2
import numpy as np

from openocr_cli.postprocess import mini_box

# A crop at least this many times taller than wide is turned a quarter (vertical text reads top to bottom).
VERTICAL_RATIO = 1.5


def region_quad(points: np.ndarray) -> np.ndarray:
    """float32 (4, 2) TL, TR, BR, BL: the points themselves for a quad, else the polygon's min-area rectangle."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    if len(pts) == 4:
        return pts
    quad, _ = mini_box(pts)
    return quad.astype(np.float32)


def crop_region(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The region `points` (image pixels) of a BGR `image` as an upright crop (at least 1 x 1)."""
    quad = region_quad(points)
    width = max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[3] - quad[2]))
    height = max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))
    w, h = max(1, int(round(width))), max(1, int(round(height)))
    target = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad, target)
    crop = cv2.warpPerspective(image, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if h >= VERTICAL_RATIO * w:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)
