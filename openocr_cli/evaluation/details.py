"""Per-image error records and recall by text height, both read off the metric's own matching.

Everything here comes from `metrics.match_image` (via `ScoredImage.match`), so summing the records
gives exactly the precision and recall `eval` prints; nothing re-derives a match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from openocr_cli.data.resize import ResizeSpec
from openocr_cli.data.text_heights import HEIGHT_BUCKETS, MAX_TINY_SHARE, TINY_HEIGHT, bucket_of, text_heights
from openocr_cli.errors import UserError
from openocr_cli.evaluation.evaluator import ScoredImage
from openocr_cli.evaluation.iou_metric import DONT_CARE, FALSE_POSITIVE, MATCHED, MISSED


def _points(poly) -> list[list[float]]:
    """JSON-friendly points: integers stay integers."""
    arr = np.asarray(poly)
    return arr.astype(int).tolist() if np.all(np.mod(arr, 1) == 0) else arr.astype(float).tolist()


@dataclass
class ImageErrors:
    """One image's outcome. `ignored` counts its do-not-care GT regions (valid ones, as the metric
    sees them); detections dropped because they lie mostly inside one are `ignored_detections`,
    counted neither as true nor as false positives."""

    image: str
    tp: int
    fp: int
    fn: int
    ignored: int
    ignored_detections: int
    matched: list
    false_positives: list
    missed: list
    dont_care: list
    tiles: list = field(default_factory=list)  # the tiles' (x0, y0, x1, y1) when it ran as tiles

    @classmethod
    def from_scored(cls, scored: ScoredImage) -> ImageErrors:
        match, sample = scored.match, scored.sample
        dets = scored.detections
        return cls(
            image=sample.key, tp=len(match.pairs), fp=match.det_state.count(FALSE_POSITIVE),
            fn=match.gt_state.count(MISSED), ignored=match.gt_state.count(DONT_CARE),
            ignored_detections=match.det_state.count(DONT_CARE),
            matched=[dets[j] for j, s in enumerate(match.det_state) if s == MATCHED],
            false_positives=[dets[j] for j, s in enumerate(match.det_state) if s == FALSE_POSITIVE],
            missed=[sample.polys[i] for i, s in enumerate(match.gt_state) if s == MISSED],
            dont_care=[sample.polys[i] for i, s in enumerate(sample.ignore) if s], tiles=list(scored.tiles))

    @property
    def errors(self) -> int:
        return self.fp + self.fn

    def to_json(self) -> dict:
        return {"image": self.image, "tp": self.tp, "fp": self.fp, "fn": self.fn, "ignored": self.ignored,
                "ignored_detections": self.ignored_detections,
                "false_positives": [_points(p) for p in self.false_positives],
                "missed": [_points(p) for p in self.missed]}


def error_records(scored: Sequence[ScoredImage]) -> list[ImageErrors]:
    """Worst first: most false positives + misses, then most misses, then the label order."""
    records = [ImageErrors.from_scored(s) for s in scored]
    order = sorted(range(len(records)), key=lambda i: (-records[i].errors, -records[i].fn, i))
    return [records[i] for i in order]


def by_height(scored: Sequence[ScoredImage], spec: ResizeSpec) -> Optional[dict[str, dict]]:
    """{bucket: {"gt", "matched", "recall"}} over the care GT the metric counts (check-data's heights:
    shorter side of the minimum-area rectangle after the evaluation resize). None if an image cannot be
    read for its size (e.g. `--predictions` without the images)."""
    counts = {name: [0, 0] for name, _ in HEIGHT_BUCKETS}
    for item in scored:
        try:
            heights = iter(text_heights(item.sample, spec))
        except (UserError, OSError):
            return None
        for state, ignored in zip(item.match.gt_state, item.sample.ignore):
            if ignored:
                continue
            height = next(heights)
            if state in (MATCHED, MISSED):  # invalid polygons are not in the metric either
                bucket = counts[bucket_of(height)]
                bucket[0] += 1
                bucket[1] += state == MATCHED
    return {name: {"gt": gt, "matched": hit, "recall": hit / gt if gt else 0.0} for name, (gt, hit) in counts.items()}


def tiny_text_warning(buckets: Optional[dict[str, dict]], spec: ResizeSpec) -> Optional[str]:
    """Advice when more than 5 % of the care GT is under 8 px high after the resize."""
    if not buckets:
        return None
    total = sum(b["gt"] for b in buckets.values())
    tiny = buckets["0-8"]["gt"]
    if not total or tiny <= MAX_TINY_SHARE * total:
        return None
    now = f"limit_side_len {spec.limit_side_len}, limit_type {spec.limit_type}" if spec.image_shape is None \
        and spec.resize_long is None else "the current resize"
    return (f"{tiny} of {total} text regions ({tiny / total:.0%}) are under {TINY_HEIGHT:g} px high after the "
            f"evaluation resize ({now}), and the detector rarely finds text that small (recall in that bucket: "
            f"{buckets['0-8']['recall']:.1%}). Try a larger --limit-side-len, or --limit-type min; "
            "--sizes 960,1280,1600 compares them in one run.")
