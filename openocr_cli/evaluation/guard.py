"""Whether a lower-precision model (int8, fp16, bf16) may replace its float32 one: agreement, a paired bootstrap,
and one decision rule, shared by `export --int8` and `eval --precision`.

hmean against ground truth on a few dozen images is decided by a handful of boxes, so a raw
"int8 lost 2.6 points" can be noise: the same model may lose 0.1 points on other images. Two
measurements are therefore made on the check images, and a rule decides on them:

* **Agreement**, labels or not: the candidate's detections scored against the float32 detections as
  if those were ground truth (the eval metric: IoU > 0.5, one-to-one), plus the largest difference of
  the two probability maps (when both runs kept them). Both models see the same pixels, so this
  measures the precision change alone.
* **The hmean drop with a paired bootstrap interval** (labels only): images are resampled with
  replacement BOOTSTRAP_SAMPLES times, both models' hmean recomputed on each resample, and the
  central CONFIDENCE interval of 100 x (float32 - candidate) taken.

The rule (docs/guides/export.md, "int8 without losing accuracy"; docs/guides/mixed-precision.md):
1. The float32 model finds no text on the check images: nothing can be compared, the check fails.
2. With labels, an interval entirely above --max-drop fails (the loss is real); an interval entirely
   at or below it passes (the loss is within the limit).
3. Otherwise the set is too small to resolve --max-drop (said so), or there are no labels: the
   candidate passes when its agreement hmean is at least --min-agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from openocr_cli.evaluation.iou_metric import ImageRecord, match_image, summarize

if TYPE_CHECKING:
    from openocr_cli.data.labels import LabelSample
    from openocr_cli.evaluation.evaluator import EvalResult
    from openocr_cli.inference.predictor import Predictor

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95
DEFAULT_MIN_AGREEMENT = 0.95
DEFAULT_MAX_DROP = 0.5  # points of hmean

PASS, FAIL = "pass", "fail"
NOTHING_TO_COMPARE = "nothing to compare"


@dataclass(frozen=True)
class Run:
    """One model on the check images: polygons and probability map per image, scores against labels."""

    polygons: list[list[np.ndarray]]
    maps: Optional[list[np.ndarray]]  # None: not kept (a whole evaluation's maps would not fit in memory)
    records: Optional[list[ImageRecord]]  # against the labels, per image (None without labels)
    ms_per_image: float

    @property
    def hmean(self) -> Optional[float]:
        return None if self.records is None else summarize(self.records)["hmean"]

    @property
    def boxes(self) -> int:
        return sum(len(p) for p in self.polygons)

    @classmethod
    def from_eval(cls, result: EvalResult) -> Run:
        """An evaluation's detections and per-image scores (no maps) as a Run."""
        return cls([s.detections for s in result.scored], None, list(result.records),
                   1000.0 * result.seconds / max(result.images, 1))


@dataclass(frozen=True)
class Verdict:
    """A candidate's measurements against the float32 run, and the rule's decision on them."""

    agreement: dict[str, float]  # precision / recall / hmean of the candidate's boxes against float32 boxes
    max_prob_diff: Optional[float]  # None when the runs kept no maps
    mean_prob_diff: Optional[float]
    hmean: Optional[float]
    drop: Optional[float]  # points, 100 x (float32 - candidate)
    interval: Optional[tuple[float, float]]  # CONFIDENCE bootstrap interval of `drop`
    ms_per_image: float
    decision: str  # PASS or FAIL
    basis: str  # "labels", "agreement" or "nothing to compare"
    reason: str

    @property
    def ok(self) -> bool:
        return self.decision == PASS


def run_model(predictor: Predictor, images: Sequence[str], samples: Optional[Sequence[LabelSample]]) -> Run:
    """Detections and maps of `predictor` on `images` (the samples' images when labelled); a warm-up first."""
    list(predictor.run(images[:1]))  # the first run of a session is slower; keep it out of ms/image
    polygons, maps, records, seconds, count = [], [], [], 0.0, 0
    for result in predictor.run(images, keep_maps=True):
        if result.error is not None:
            raise ValueError(result.error)
        polys = [d.points for d in result.detections]
        polygons.append(polys)
        maps.append(result.prob_map)
        seconds += result.times.inference
        count += 1
        if samples is not None:
            sample = samples[result.index]
            records.append(match_image(sample.polys, sample.ignore, polys).record())
    return Run(polygons, maps, records if samples is not None else None, 1000.0 * seconds / max(count, 1))


def check_precision(predictor: Predictor, samples: Sequence[LabelSample], candidate: EvalResult,
                    on_image: Callable[[], None] = lambda: None, max_drop: float = DEFAULT_MAX_DROP,
                    min_agreement: float = DEFAULT_MIN_AGREEMENT) -> tuple[EvalResult, Verdict]:
    """`eval --precision bf16|fp16`: the same model evaluated again at float32 on the same labelled images, and the
    rule's verdict on `candidate` (the evaluation `predictor` made at its own precision) against it."""
    from openocr_cli.evaluation.evaluator import evaluate_model

    reference = evaluate_model(predictor.replace(backend=predictor.backend.with_precision("fp32")), samples, on_image)
    name = getattr(predictor.backend, "precision", "candidate")
    return reference, judge(Run.from_eval(reference), Run.from_eval(candidate), max_drop, min_agreement, name)


def agreement(reference: Run, candidate: Run) -> dict[str, float]:
    """The candidate's boxes scored against the reference's boxes (the eval metric)."""
    records = [match_image(ref, [False] * len(ref), cand).record()
               for ref, cand in zip(reference.polygons, candidate.polygons)]
    return summarize(records)


def _hmeans(counts: np.ndarray) -> np.ndarray:
    """hmean per row of (gt, det, matched) sums (0 where undefined), as metrics.summarize computes it."""
    gt, det, hit = counts[..., 0], counts[..., 1], counts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(gt > 0, hit / np.maximum(gt, 1), 0.0)
        precision = np.where(det > 0, hit / np.maximum(det, 1), 0.0)
        total = precision + recall
        return np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)


def bootstrap_drop(reference: Sequence[ImageRecord], candidate: Sequence[ImageRecord],
                   samples: int = BOOTSTRAP_SAMPLES, confidence: float = CONFIDENCE,
                   seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap interval of 100 x (hmean(reference) - hmean(candidate)) over images."""
    def counts(records):
        return np.array([(r.gt_care, r.det_care, r.det_matched) for r in records], dtype=np.float64)

    ref, cand = counts(reference), counts(candidate)
    if len(ref) == 0:
        return 0.0, 0.0
    index = np.random.default_rng(seed).integers(0, len(ref), size=(samples, len(ref)))
    drops = 100.0 * (_hmeans(ref[index].sum(axis=1)) - _hmeans(cand[index].sum(axis=1)))
    tail = 100.0 * (1 - confidence) / 2
    lo, hi = np.percentile(drops, [tail, 100.0 - tail])
    return float(lo), float(hi)


def judge(reference: Run, candidate: Run, max_drop: float, min_agreement: float, name: str = "int8") -> Verdict:
    """The measurements of `candidate` (called `name` in the reasons) against `reference`, and the decision rule
    of this module."""
    agree = agreement(reference, candidate)
    max_diff = mean_diff = None
    if reference.maps is not None and candidate.maps is not None:
        diffs = [np.abs(a.astype(np.float64) - b) for a, b in zip(candidate.maps, reference.maps)]
        max_diff = max((float(d.max()) for d in diffs), default=0.0)
        mean_diff = float(np.mean([d.mean() for d in diffs])) if diffs else 0.0
    hmean = drop = interval = None
    if reference.records is not None and candidate.records is not None:
        hmean = candidate.hmean
        drop = 100.0 * (reference.hmean - hmean)
        interval = bootstrap_drop(reference.records, candidate.records)
    decision, basis, reason = _decide(reference, agree["hmean"], drop, interval, max_drop, min_agreement, name)
    return Verdict(agree, max_diff, mean_diff, hmean, drop, interval, candidate.ms_per_image, decision, basis, reason)


def _decide(reference: Run, agree: float, drop: Optional[float], interval: Optional[tuple[float, float]],
            max_drop: float, min_agreement: float, name: str) -> tuple[str, str, str]:
    images = len(reference.polygons)
    if reference.boxes == 0:
        return FAIL, NOTHING_TO_COMPARE, (
            f"the float32 model finds no text on the {images} check image(s), so the {name} model cannot be "
            "checked against it; pass --check-data with images that contain text (or a label file)")
    unresolved = ""
    if interval is not None:
        lo, hi = interval
        span = f"{drop:.2f} points, {100 * CONFIDENCE:.0f}% interval {lo:.2f} to {hi:.2f}"
        if lo > max_drop:
            return FAIL, "labels", f"hmean drop {span}: above --max-drop {max_drop:g} even at its low end"
        if hi <= max_drop:
            return PASS, "labels", f"hmean drop {span}: within --max-drop {max_drop:g}"
        unresolved = (f"{images} labelled image(s) cannot resolve --max-drop {max_drop:g} (hmean drop {span}); "
                      "decided on agreement: ")
    verdict = PASS if agree >= min_agreement else FAIL
    relation = "at least" if verdict == PASS else "below"
    return verdict, "agreement", (f"{unresolved}agreement with float32 {agree:.4f}, {relation} --min-agreement "
                                  f"{min_agreement:g}")
