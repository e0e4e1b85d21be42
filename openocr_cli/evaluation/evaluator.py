"""Detection metric over a labelled set, either by running a model or from a predictions file."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from openocr_cli.data.labels import LabelSample
from openocr_cli.evaluation.iou_metric import ImageMatch, ImageRecord, match_image, summarize
from openocr_cli.formats.det_results import Predictions
from openocr_cli.inference.predictor import Predictor
from openocr_cli.inference.results import Result, StageTimes


@dataclass
class ScoredImage:
    """One scored image: its labels, the detections scored (source pixels) and how they matched."""

    sample: LabelSample
    detections: list[np.ndarray]
    match: ImageMatch
    scores: list[float] = field(default_factory=list)
    tiling: Optional[str] = None  # how and why it ran as tiles (Result.tiling)
    tiles: list = field(default_factory=list)  # the tiles' (x0, y0, x1, y1), for the report


@dataclass
class EvalResult:
    precision: float
    recall: float
    hmean: float
    images: int
    fps: Optional[float] = None
    failures: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)  # predictions-file images the labels do not list
    records: list[ImageRecord] = field(default_factory=list, repr=False)
    seconds: float = 0.0
    scored: list[ScoredImage] = field(default_factory=list, repr=False)
    by_height: Optional[dict[str, dict]] = None  # recall per text-height bucket, when measured

    @classmethod
    def combine(cls, parts: Sequence[EvalResult]) -> EvalResult:
        """Merge shards evaluated in parallel: the metric over all images, FPS of the slowest shard."""
        records = [r for p in parts for r in p.records]
        scores = summarize(records)
        images = sum(p.images for p in parts)
        slowest = max((p.seconds for p in parts), default=0.0)
        return cls(scores["precision"], scores["recall"], scores["hmean"], images,
                   images / slowest if slowest > 0 else 0.0, [f for p in parts for f in p.failures],
                   records=records, seconds=slowest)

    def as_dict(self) -> dict:
        out = {"precision": self.precision, "recall": self.recall, "hmean": self.hmean, "images": self.images}
        if self.fps is not None:
            out["fps"] = self.fps
        if self.failures:
            out["unreadable_images"] = self.failures
        if self.unmatched:
            out["images_without_prediction"] = self.unmatched
        if self.unlabelled:
            out["predictions_without_label"] = self.unlabelled
        if self.by_height is not None:
            out["by_height"] = self.by_height
        tiled = {str(s.sample.key): s.tiling for s in self.scored if s.tiling is not None}
        if tiled:
            out["tiled"] = tiled
        return out


def _score(sample: LabelSample, detections: list[np.ndarray], scores: Sequence[float] = ()) -> ScoredImage:
    return ScoredImage(sample, detections, match_image(sample.polys, sample.ignore, detections), list(scores))


def evaluate_model(predictor: Predictor, samples: Sequence[LabelSample],
                   on_image: Callable[[], None] = lambda: None,
                   on_map: Optional[Callable[[Result], None]] = None) -> EvalResult:
    """Run the predictor on every labelled image and score it (OpenOCR's DetMetric numbers).

    `images` counts the images scored, `seconds` is their forward-pass time and `fps` their ratio,
    all from this call's results only (a predictor may be reused). `on_map`, when given, receives
    every readable image's result with its probability map (for `eval --tune`).
    """
    failures = []
    times = StageTimes()
    scored = []
    for result in predictor.run([str(s.image) for s in samples], keep_maps=on_map is not None):
        on_image()
        times += result.times
        if result.error is not None:
            failures.append(result.error)
            continue
        if on_map is not None:
            on_map(result)
            result.prob_map = None
        scored.append(_score(samples[result.index], [d.points for d in result.detections],
                             [d.score for d in result.detections]))
        scored[-1].tiling, scored[-1].tiles = result.tiling, result.tiles
    return _result(scored, times.images, times.fps(), failures, seconds=times.inference)


def _result(scored: list[ScoredImage], images: int, fps: Optional[float], failures: list[str],
            unmatched: Optional[list[str]] = None, seconds: float = 0.0) -> EvalResult:
    records = [s.match.record() for s in scored]
    scores = summarize(records)
    return EvalResult(scores["precision"], scores["recall"], scores["hmean"], images, fps, failures,
                      unmatched or [], records=records, seconds=seconds, scored=scored)


def evaluate_predictions(predictions: Predictions, samples: Sequence[LabelSample]) -> EvalResult:
    """Score a predictions file; each label is matched to a prediction line by image path.

    Tried in order: the path as written in the label, the path joined to the data folder, then the
    label path as a trailing part of a prediction path, then a unique base name. Labelled images
    with no prediction line count as images without detections and are reported; images the run
    recorded as unreadable are not scored (as `eval` with a model); prediction lines no label
    matched are reported too (`unlabelled`: predictions of another set?).
    """
    lookup, unreadable = _PathIndex(predictions.boxes), _PathIndex(dict.fromkeys(predictions.unreadable, []))
    scored, unmatched, failures = [], [], []
    for sample in samples:
        dets = lookup.find(sample.key, str(sample.image))
        if dets is None and unreadable.find(sample.key, str(sample.image)) is not None:
            failures.append(f"{sample.key}: the run that wrote the predictions could not read it")
            continue
        if dets is None:
            unmatched.append(sample.key)
            dets = []
        scored.append(_score(sample, dets))
    result = _result(scored, len(scored), None, failures, unmatched)
    result.unlabelled = [key for key in predictions.boxes if _norm(key) not in lookup.used]
    return result


def _norm(path: str) -> str:
    return os.path.normpath(path).replace("\\", "/")


class _PathIndex:
    """Prediction lines by normalised path, found from a label's path (see evaluate_predictions)."""

    def __init__(self, predictions: dict[str, list[np.ndarray]]):
        self.exact = {_norm(k): v for k, v in predictions.items()}
        self.absolute = {_norm(os.path.abspath(k)): _norm(k) for k in predictions}
        self.by_name: dict[str, list[str]] = {}
        for key in self.exact:
            self.by_name.setdefault(os.path.basename(key), []).append(key)
        self.used: set[str] = set()

    def find(self, key: str, joined: str) -> Optional[list[np.ndarray]]:
        """The predictions for one label's image (None: no line matches it); what matched is kept in `used`."""
        found = self._find(key, joined)
        if found is None:
            return None
        self.used.add(found)
        return self.exact[found]

    def _find(self, key: str, joined: str) -> Optional[str]:
        for candidate in (_norm(key), _norm(joined)):
            if candidate in self.exact:
                return candidate
        absolute = _norm(os.path.abspath(joined))
        if absolute in self.absolute:
            return self.absolute[absolute]
        same_name = self.by_name.get(os.path.basename(key), [])
        tail = "/" + _norm(key).lstrip("./")
        suffixed = [k for k in same_name if k.endswith(tail)]
        if len(suffixed) == 1:
            return suffixed[0]
        return same_name[0] if len(same_name) == 1 else None
