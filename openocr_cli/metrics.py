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


def evaluate_image(gt_polys: Sequence, gt_ignore: Sequence[bool], det_polys: Sequence) -> ImageRecord:
    """Count care GT, care detections and one-to-one IoU matches for one image."""
    if len(gt_polys) != len(gt_ignore):
        raise ValueError(f"got {len(gt_polys)} GT polygons but {len(gt_ignore)} ignore flags")
    gts = _polygons(gt_polys, "GT")
    gt_valid = shapely.is_valid(gts)
    gts = gts[gt_valid]
    gt_dc = np.asarray(gt_ignore, dtype=bool).reshape(-1)[gt_valid]
    dets = _polygons(det_polys, "detection")
    dets = dets[shapely.is_valid(dets)]

    # A detection lying mostly (> half its area) inside a don't-care GT is not counted.
    det_dc = np.zeros(len(dets), dtype=bool)
    dc_gts = gts[gt_dc]
    if len(dc_gts) and len(dets):
        inter = shapely.area(shapely.intersection(dc_gts[None, :], dets[:, None]))
        det_area = shapely.area(dets)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            cover = np.where(det_area == 0, 0.0, inter / det_area)
        det_dc = (cover > AREA_PRECISION_CONSTRAINT).any(axis=1)

    matched = 0
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
                    matched += 1
    return ImageRecord(int(len(gts) - gt_dc.sum()), int(len(dets) - det_dc.sum()), matched)


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
