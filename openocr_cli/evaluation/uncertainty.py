"""How unsure the detector is about one image, from what post-processing sees: `predict --select-uncertain N`.

Three signals of one probability map and the post-processing settings, each in [0, 1]:

* `low_box_score`: 1 - the mean score of the boxes kept (their map mean). Boxes the model barely believes in
  are the ones a person most often has to fix. An image without any box scores 1 when the map holds a
  region above `thresh` at all (text rejected by `box_thresh`), else 0 (a confident blank).
* `borderline`: the share of the regions found at `thresh` whose score lies within `BAND` of `box_thresh`:
  a small change of the setting (or of the image) adds or removes them.
* `map_ambiguity`: the probability mass the map spends near `thresh` (a tent of half-width `BAND` around
  it), over the area above `thresh`: blurred, fragmented or faint text, and text the model half sees.

The image's score is their mean. Images are ranked by score, highest first, ties broken by path, and the score
is rounded to 6 decimals first, so the same predictions always give the same file. `benchmarks/bench_uncertain.py`
measures whether the selected images really are the ones the model does worse on (docs/benchmarks.md,
"Active learning").
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from functools import total_ordering
from pathlib import Path

import numpy as np

from openocr_cli.fileio import atomic_write_text
from openocr_cli.postprocess import DBPostProcess

BAND = 0.2
DECIMALS = 6
UNCERTAIN_NAME = "uncertain.txt"
MIN_TEXT_PIXELS = 16  # the denominator of map_ambiguity never drops below this many pixels


@dataclass(frozen=True)
class Uncertainty:
    score: float
    low_box_score: float
    borderline: float
    map_ambiguity: float


def image_uncertainty(prob: np.ndarray, postprocess: DBPostProcess) -> Uncertainty:
    """The uncertainty of one (h, w) probability map under these post-processing settings."""
    pred = np.asarray(prob, dtype=np.float32)
    candidates = postprocess.candidates(pred)
    scores = np.array([c.score for c in candidates], dtype=np.float64)
    kept = scores[scores >= postprocess.box_thresh]
    if kept.size:
        low = 1.0 - float(kept.mean())
    else:
        low = 1.0 if scores.size else 0.0
    borderline = float(np.mean(np.abs(scores - postprocess.box_thresh) < BAND)) if scores.size else 0.0
    tent = np.clip(1.0 - np.abs(pred - postprocess.thresh) / BAND, 0.0, None)
    text = max(int(np.count_nonzero(pred > postprocess.thresh)), MIN_TEXT_PIXELS)
    ambiguity = min(1.0, float(tent.sum(dtype=np.float64)) / text)
    score = (low + borderline + ambiguity) / 3.0
    return Uncertainty(round(score, DECIMALS), low, borderline, ambiguity)


@total_ordering
class _Reversed:
    """A path that sorts backwards, so that a min-heap drops the later path of two equal scores first."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __eq__(self, other) -> bool:
        return self.value == other.value

    def __lt__(self, other) -> bool:
        return self.value > other.value


class UncertainSelection:
    """The N most uncertain images seen so far (memory: N entries, however many images run)."""

    def __init__(self, count: int):
        if count < 1:
            raise ValueError("the number of images to select must be at least 1")
        self.count = count
        self._heap: list[tuple[float, _Reversed]] = []
        self.seen = 0

    def add(self, path: str, score: float) -> None:
        self.seen += 1
        item = (round(float(score), DECIMALS), _Reversed(path))
        if len(self._heap) < self.count:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def ranked(self) -> list[tuple[str, float]]:
        """(path, score), most uncertain first, ties by path."""
        return [(rev.value, score) for score, rev in sorted(self._heap, key=lambda i: (-i[0], i[1].value))]

    def write(self, file: Path) -> None:
        """`path<TAB>score` lines, most uncertain first (written atomically)."""
        atomic_write_text(file, "".join(f"{path}\t{score:.{DECIMALS}f}\n" for path, score in self.ranked()))


def rank(scores: Iterable[tuple[str, float]], count: int) -> list[tuple[str, float]]:
    """The `count` most uncertain of (path, score) pairs, as UncertainSelection ranks them."""
    selection = UncertainSelection(count)
    for path, score in scores:
        selection.add(path, score)
    return selection.ranked()
