"""OpenOCR's IoU detection metric (DetMetric + DetectionIoUEvaluator), same numbers.

Kept as in the reference on purpose (openocr-compat: invalid-gt): invalid GT polygons vanish from
the count, IoU must be strictly above 0.5, and matching is greedy in GT order, then det order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import shapely

IOU_CONSTRAINT = 0.5
AREA_PRECISION_CONSTRAINT = 0.5


@dataclass(frozen=True)
class ImageRecord:
    """What one image contributes to the micro average."""

    gt_care: int
    det_care: int
    det_matched: int


def _polygons(polys: Iterable, what: str) -> np.ndarray:
    """Shapely polygons from (x, y) point lists; a Detection's `.points` is accepted too."""
    out = []
    for i, poly in enumerate(polys):
        pts = np.asarray(getattr(poly, "points", poly), dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
            raise ValueError(f"{what} polygon {i} must be at least 3 (x, y) points, got shape {pts.shape}")
        out.append(shapely.Polygon(pts))
    return np.array(out, dtype=object)


# Per-region outcomes of `match_image`, in the order of the polygons given.
MATCHED, MISSED, FALSE_POSITIVE, DONT_CARE, INVALID = "matched", "missed", "false_positive", "dont_care", "invalid"


@dataclass(frozen=True)
class ImageMatch:
    """Which GT and detections matched, and why the others do not count; `record()` gives the metric's counts.

    `gt_state[i]` is matched / missed / dont_care / invalid for GT polygon i; `det_state[j]` is
    matched / false_positive / dont_care (mostly inside a do-not-care region) / invalid for detection j;
    `pairs` are the (GT index, detection index) matches. Error reports and the metric both come from here.
    """

    gt_state: tuple[str, ...]
    det_state: tuple[str, ...]
    pairs: tuple[tuple[int, int], ...]

    def record(self) -> ImageRecord:
        matched = len(self.pairs)
        return ImageRecord(matched + self.gt_state.count(MISSED), matched + self.det_state.count(FALSE_POSITIVE),
                           matched)


def match_image(gt_polys: Sequence, gt_ignore: Sequence[bool], det_polys: Sequence) -> ImageMatch:
    """One-to-one IoU matching of one image's detections to its GT (the metric's only implementation)."""
    if len(gt_polys) != len(gt_ignore):
        raise ValueError(f"got {len(gt_polys)} GT polygons but {len(gt_ignore)} ignore flags")
    all_gts = _polygons(gt_polys, "GT")
    gt_index = np.flatnonzero(shapely.is_valid(all_gts)) if len(all_gts) else np.zeros(0, int)
    gts = all_gts[gt_index]
    gt_dc = np.asarray(gt_ignore, dtype=bool).reshape(-1)[gt_index]
    all_dets = _polygons(det_polys, "detection")
    det_index = np.flatnonzero(shapely.is_valid(all_dets)) if len(all_dets) else np.zeros(0, int)
    dets = all_dets[det_index]

    # A detection lying mostly (> half its area) inside a don't-care GT is not counted.
    det_dc = np.zeros(len(dets), dtype=bool)
    dc_gts = gts[gt_dc]
    if len(dc_gts) and len(dets):
        inter = shapely.area(shapely.intersection(dc_gts[None, :], dets[:, None]))
        det_area = shapely.area(dets)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            cover = np.where(det_area == 0, 0.0, inter / det_area)
        det_dc = (cover > AREA_PRECISION_CONSTRAINT).any(axis=1)

    pairs = []
    if len(gts) and len(dets):
        # Operand order (det first) as in the reference, so float results agree bit for bit.
        inter = shapely.area(shapely.intersection(dets[None, :], gts[:, None]))
        union = shapely.area(shapely.union(dets[None, :], gts[:, None]))
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union == 0, 0.0, inter / union)
        gt_used = gt_dc.copy()  # don't-care entries can never match
        det_used = det_dc.copy()
        for g in range(len(gts)):
            for d in range(len(dets)):
                if not gt_used[g] and not det_used[d] and iou[g, d] > IOU_CONSTRAINT:
                    gt_used[g] = det_used[d] = True
                    pairs.append((int(gt_index[g]), int(det_index[d])))

    gt_state = [INVALID] * len(all_gts)
    for g, dc in zip(gt_index, gt_dc):
        gt_state[g] = DONT_CARE if dc else MISSED
    det_state = [INVALID] * len(all_dets)
    for d, dc in zip(det_index, det_dc):
        det_state[d] = DONT_CARE if dc else FALSE_POSITIVE
    for g, d in pairs:
        gt_state[g], det_state[d] = MATCHED, MATCHED
    return ImageMatch(tuple(gt_state), tuple(det_state), tuple(pairs))


def evaluate_image(gt_polys: Sequence, gt_ignore: Sequence[bool], det_polys: Sequence) -> ImageRecord:
    """Count care GT, care detections and one-to-one IoU matches for one image."""
    return match_image(gt_polys, gt_ignore, det_polys).record()


def summarize(records: Iterable[ImageRecord]) -> dict[str, float]:
    """Micro-averaged precision, recall and hmean; each is 0 when its denominator is 0."""
    gt = det = hit = 0
    for r in records:
        gt, det, hit = gt + r.gt_care, det + r.det_care, hit + r.det_matched
    recall = hit / gt if gt else 0.0
    precision = hit / det if det else 0.0
    hmean = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "hmean": hmean}


class DetMetric:
    """Collects per-image records over an evaluation run; `result()` does not clear them."""

    def __init__(self) -> None:
        self.records: list[ImageRecord] = []

    def update(self, gt_polys: Sequence, gt_ignore: Sequence[bool], det_polys: Sequence) -> ImageRecord:
        record = evaluate_image(gt_polys, gt_ignore, det_polys)
        self.records.append(record)
        return record

    def result(self) -> dict[str, float]:
        return summarize(self.records)
