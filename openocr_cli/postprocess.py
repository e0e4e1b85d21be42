"""DBNet post-processing: probability map -> text boxes in original-image pixels.

Every rounding, ordering and threshold rule below follows OpenOCR's DBPostProcess, because the
boxes feed the detection metric and small differences change its numbers. The one deliberate
change (openocr-compat: postprocess-overrides): settings never change after construction.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import cv2
import numpy as np
import shapely

from openocr_cli.errors import SettingError
from openocr_cli.geometry import offset_polygon

SCORE_MODES = ("slow", "fast")
BOX_TYPES = ("quad", "poly")
# unclip_ratio expands a box by area * ratio / perimeter: 1.5 is OpenOCR's, eval --tune searches 1.0-2.5; far above
# 10 the offset overflows the polygon clipper (1e9 raised OverflowError deep in pyclipper)
MAX_UNCLIP_RATIO = 10.0
MIN_SIZE = 3  # fixed in OpenOCR; boxes need sside >= 3 before and >= MIN_SIZE + 2 after unclip


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected text region: int32 (P, 2) points (quads: TL, TR, BR, BL) and its map score."""

    points: np.ndarray
    score: float


@dataclass(frozen=True, eq=False)
class Candidate:
    """A region found at `thresh`, before box_thresh and unclipping: the points to unclip (map pixels)
    and its score."""

    points: np.ndarray
    score: float


def mini_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Min-area rectangle as float32 [TL, TR, BR, BL] plus its short side.

    The vertex order uses OpenOCR's rule (stable sort by x, then compare y within each pair),
    not a geometric definition, so that rotated boxes start at the same corner as the reference.
    """
    rect = cv2.minAreaRect(points)
    corners = cv2.boxPoints(rect)
    p = corners[np.argsort(corners[:, 0], kind="stable")]
    tl, bl = (p[0], p[1]) if p[1, 1] > p[0, 1] else (p[1], p[0])
    tr, br = (p[2], p[3]) if p[3, 1] > p[2, 1] else (p[3], p[2])
    return np.stack([tl, tr, br, bl]), float(min(rect[1]))


def _masked_mean(pred: np.ndarray, pts: np.ndarray, top: int = 0) -> float:
    """Mean of `pred` over the polygon `pts` filled inside its bbox clipped to the map (whose first row is row
    `top` of the points' coordinates)."""
    if top:
        pts = pts - np.array([0, top], pts.dtype)  # exact: an integer shift of values far below 2**24
    h, w = pred.shape
    x0 = int(np.clip(np.floor(pts[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(pts[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    shifted = (pts - np.array([x0, y0], pts.dtype)).astype(np.int32)  # truncation toward zero
    cv2.fillPoly(mask, [shifted.reshape(-1, 1, 2)], 1)
    return float(cv2.mean(pred[y0:y1 + 1, x0:x1 + 1], mask)[0])


def _unclip(points: np.ndarray, ratio: float) -> list:
    """Grow the polygon by D = A * ratio / L with a rounded pyclipper offset (ints in, ints out)."""
    poly = shapely.Polygon(points)
    return offset_polygon(points, poly.area * ratio / poly.length)


def _to_source(pts: np.ndarray, map_h: int, map_w: int, src_h: float, src_w: float) -> np.ndarray:
    """Scale map coordinates to the source image: half-to-even rounding, clip to [0, src] inclusive.

    Arithmetic mirrors the reference: the division runs in the points' own dtype (float32 for
    quads), the multiplication by the float64 source size in float64 (openocr-compat: box-mapping).
    """
    out = np.empty(pts.shape, np.float64)
    out[:, 0] = np.clip(np.round((pts[:, 0] / map_w).astype(np.float64) * src_w), 0, src_w)
    out[:, 1] = np.clip(np.round((pts[:, 1] / map_h).astype(np.float64) * src_h), 0, src_h)
    return out.astype(np.int32)


# OpenOCR keeps the first max_candidates (1000) contours of one network input, at most 960 x 960 pixels. A map of
# a huge image at full resolution (or a stripe of a tiled one) has many times that area and mostly small noise
# contours, so one cap over it drops whole regions (recall 0.22 on a 12160x9120 mosaic of 1,165 words): larger maps
# get the cap times their area in 960 x 960 inputs, the density of candidates OpenOCR allows.
CAP_AREA = 960 * 960


@dataclass(frozen=True)
class DBPostProcess:
    """Turns one DBNet probability map into Detections; defaults are the repvit_db.yml values."""

    thresh: float = 0.3
    box_thresh: float = 0.6
    max_candidates: int = 1000
    unclip_ratio: float = 1.5
    use_dilation: bool = False
    score_mode: str = "slow"
    box_type: str = "quad"

    def __post_init__(self) -> None:
        for name in ("thresh", "box_thresh"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
        ratio = self.unclip_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 < ratio <= MAX_UNCLIP_RATIO:
            raise ValueError(f"unclip_ratio must be a number above 0 and at most {MAX_UNCLIP_RATIO:g}, got {ratio!r}")
        cand = self.max_candidates
        if isinstance(cand, bool) or not isinstance(cand, numbers.Integral) or cand < 1:
            raise ValueError(f"max_candidates must be a positive integer, got {cand!r}")
        if not isinstance(self.use_dilation, (bool, np.bool_)):
            raise ValueError(f"use_dilation must be true or false, got {self.use_dilation!r}")
        if self.score_mode not in SCORE_MODES:
            raise ValueError(f"score_mode must be one of {', '.join(SCORE_MODES)}, got {self.score_mode!r}")
        if self.box_type not in BOX_TYPES:
            raise ValueError(f"box_type must be one of {', '.join(BOX_TYPES)}, got {self.box_type!r}")
        # Canonical Python types: `pred > thresh` must compare in float32 like the reference does
        # with a plain float, and a NumPy scalar from a config would silently change that.
        for name, kind in (("thresh", float), ("box_thresh", float), ("unclip_ratio", float),
                           ("max_candidates", int), ("use_dilation", bool)):
            object.__setattr__(self, name, kind(getattr(self, name)))

    def __call__(self, pred: np.ndarray, src_h: float, src_w: float) -> list[Detection]:
        """Detections for one (h, w) probability map whose source image is src_h x src_w."""
        pred = _checked_map(pred, src_h, src_w)
        return self.boxes(pred, pred.shape, src_h, src_w)

    def boxes(self, pred: np.ndarray, map_hw: tuple[int, int], src_h: float, src_w: float,
              top: int = 0) -> list[Detection]:
        """The candidates of `pred` (rows of an (h, w) map `map_hw` from row `top`, see `candidates`) that pass
        `box_thresh`, unclipped and in source pixels."""
        out = []
        for candidate in self.candidates(pred, top=top):
            if candidate.score < self.box_thresh:
                continue
            det = self.expand(candidate, map_hw, src_h, src_w)
            if det is not None:
                out.append(det)
        return out

    def candidates(self, pred: np.ndarray, top: int = 0) -> list[Candidate]:
        """The scored regions of the map before `box_thresh` and unclipping: depends on `thresh` only.

        Split out so that `eval --tune` can reuse one thresh's candidates for every box_thresh and
        unclip_ratio it tries; `__call__` goes through exactly these two steps. `pred` may be rows of a larger
        map starting at row `top` (tiled inference post-processes stripes): the points are then the larger
        map's, computed from the same contour coordinates, so the boxes are those of the whole map.
        """
        pred = np.asarray(pred, dtype=np.float32)
        bitmap = (pred > self.thresh).astype(np.uint8)
        if self.use_dilation:
            bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
        found = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE, offset=(0, top))
        contours = found[-2]  # OpenCV 3 returns (image, contours, hierarchy), 4+ (contours, hierarchy)
        contours = contours[: self.candidate_cap(pred.size)]
        one = self._quad_candidate if self.box_type == "quad" else self._poly_candidate
        return [c for c in (one(pred, contour, top) for contour in contours) if c is not None]

    def candidate_cap(self, area: int) -> int:
        """How many contours a map of `area` pixels keeps: `max_candidates` per CAP_AREA pixels, never fewer than
        `max_candidates`, so a normal input keeps OpenOCR's 1000 and a 6000-pixel map (or a stripe of a tiled
        one) the same density of candidates instead of the first 1000 of its contours."""
        return max(self.max_candidates, math.ceil(self.max_candidates * area / CAP_AREA))

    def expand(self, candidate: Candidate, map_hw: tuple[int, int], src_h: float, src_w: float) -> Detection | None:
        """Unclip a candidate by `unclip_ratio` and map it to source pixels; None when it collapses."""
        src_h, src_w = float(src_h), float(src_w)
        expanded = _unclip(candidate.points, self.unclip_ratio)
        if len(expanded) != 1:
            return None
        if self.box_type == "quad":
            box, sside = mini_box(np.array(expanded[0], np.int32).reshape(-1, 1, 2))
            if sside < MIN_SIZE + 2:
                return None
            return Detection(_to_source(box, *map_hw, src_h, src_w), candidate.score)
        poly = np.array(expanded[0], np.int64)
        if mini_box(poly.astype(np.int32).reshape(-1, 1, 2))[1] < MIN_SIZE + 2:
            return None
        return Detection(_to_source(poly, *map_hw, src_h, src_w), candidate.score)

    def _quad_candidate(self, pred, contour, top=0):
        box, sside = mini_box(contour)
        if sside < MIN_SIZE:
            return None
        pts = contour.reshape(-1, 2) if self.score_mode == "slow" else box
        return Candidate(box, _masked_mean(pred, pts, top))

    def _poly_candidate(self, pred, contour, top=0):
        eps = 0.002 * cv2.arcLength(contour, True)
        pts = cv2.approxPolyDP(contour, eps, True).reshape(-1, 2)
        if len(pts) < 4:
            return None
        return Candidate(pts, _masked_mean(pred, pts, top))  # poly mode always scores the "fast" way


def reading_order(detections: list[Detection]) -> list[Detection]:
    """The boxes as a reader meets them: lines top to bottom, boxes left to right within a line.

    Contours come out of the map bottom line first; recognisers and labelling tools expect reading order. Boxes
    are taken by the height of their centre; a box whose centre lies within the vertical span of the line being
    built joins it (tilted or uneven boxes of one line still share that span), else it starts the next line.
    """
    spans = sorted(((float(d.points[:, 1].min()), float(d.points[:, 1].max()), d) for d in detections),
                   key=lambda span: span[0] + span[1])
    lines: list[list] = []  # [top, bottom, members]
    for top, bottom, det in spans:
        centre = (top + bottom) / 2
        if lines and lines[-1][0] <= centre <= lines[-1][1]:
            lines[-1][1] = max(lines[-1][1], bottom)
            lines[-1][2].append(det)
        else:
            lines.append([top, bottom, [det]])
    return [det for _, _, members in lines for det in sorted(members, key=lambda d: float(d.points[:, 0].min()))]


def _checked_map(pred: np.ndarray, src_h: float, src_w: float) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float32)
    if pred.ndim != 2 or pred.size == 0:
        raise ValueError(f"expected a non-empty (h, w) probability map, got shape {pred.shape}")
    if not (src_h > 0 and src_w > 0):
        raise ValueError(f"source size must be positive, got {src_h} x {src_w}")
    return pred


def make_postprocess(params: dict) -> DBPostProcess:
    """DBPostProcess from keyword settings; settings it refuses are a usage error (exit 2)."""
    try:
        return DBPostProcess(**params)
    except (TypeError, ValueError) as exc:
        raise SettingError(f"post-processing settings are invalid: {exc}") from None
