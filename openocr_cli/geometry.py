"""Polygon helpers shared by the augmentations, the label makers and the post-processing.

A polygon is a (P, 2) array of (x, y) vertices; a sample's polygons are a (K, P, 2) array or a
list of (P, 2) arrays. Offsets are pyclipper's, with the exact integer input OpenOCR feeds it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyclipper


def as_poly_array(polys: Any) -> np.ndarray:
    """Any polygon container -> float64 (K, P, 2); an empty one becomes (0, P or 4, 2)."""
    arr = np.asarray(polys, np.float64)
    if arr.size == 0:
        return np.zeros((0, arr.shape[1] if arr.ndim == 3 else 4, 2))
    return arr


def as_poly_list(polys: Any) -> list[np.ndarray]:
    """(K, P, 2) arrays, empty arrays, None or lists of (P, 2) arrays -> list of float64 (P, 2) copies."""
    if polys is None or (isinstance(polys, np.ndarray) and polys.size == 0):
        return []
    return [np.array(p, dtype=np.float64).reshape(-1, 2) for p in polys]


def pad_vertices(poly: np.ndarray, count: int) -> np.ndarray:
    """Repeat the last vertex up to `count` vertices, so a sample's polygons can share one array."""
    if len(poly) >= count:
        return poly
    return np.concatenate([poly, np.repeat(poly[-1:], count - len(poly), axis=0)])


def offset_polygon(points: np.ndarray, delta: float) -> list:
    """Grow (delta > 0) or shrink (delta < 0) a polygon with round joins: pyclipper paths of int points.

    The vertices are truncated toward zero first, as pyclipper would do with floats, but explicitly
    so that the result never depends on that.
    """
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(np.trunc(points).astype(np.int64).tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return offset.Execute(delta)


def is_poly_outside_rect(poly: np.ndarray, x: float, y: float, w: float, h: float) -> bool:
    """True iff the polygon's bounding box misses the rectangle; touching counts as overlapping."""
    xs, ys = poly[:, 0], poly[:, 1]
    return bool(xs.max() < x or xs.min() > x + w or ys.max() < y or ys.min() > y + h)
