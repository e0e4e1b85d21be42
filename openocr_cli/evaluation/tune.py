"""`eval --tune`: search thresh, box_thresh and unclip_ratio on the probability maps of one model pass.

Every trial runs the real post-processing (`DBPostProcess.candidates` + `expand`, the two steps its
`__call__` is made of) and the real metric (`metrics.evaluate_image`) on every image, so a trial's
numbers are exactly what `eval` prints with those settings. What makes it cheap is reuse, never
approximation: one thresh's candidates serve every box_thresh and unclip_ratio, one unclip serves every
box_thresh, and an image whose kept boxes did not change is not re-scored.

Search: coordinate descent from the current settings (each axis swept over its grid with the others
fixed, moving only on a strict hmean gain), then the grid neighbours of the best point (3 x 3 x 3), repeated
while either step improves. Images are split across processes (one shard each, maps inherited
without copying where the platform forks); each trial's per-shard counts are summed.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Optional

from openocr_cli.errors import UserError
from openocr_cli.evaluation.iou_metric import ImageRecord, evaluate_image, summarize
from openocr_cli.evaluation.mapcache import CachedMap
from openocr_cli.postprocess import MAX_UNCLIP_RATIO, DBPostProcess

AXES = ("thresh", "box_thresh", "unclip_ratio")
DEFAULT_RANGES = {"thresh": (0.1, 0.6, 0.05), "box_thresh": (0.3, 0.85, 0.05), "unclip_ratio": (1.0, 2.5, 0.1)}
MAX_VALUES = 200
MAX_ROUNDS = 4
TOP = 5
Params = tuple[float, float, float]  # (thresh, box_thresh, unclip_ratio)
EXAMPLE = "--tune thresh=0.2:0.4:0.05,box_thresh=0.4:0.75:0.05,unclip_ratio=1.2:2.2:0.1"


def _count(start: float, stop: float, step: float) -> int:
    """How many values _grid gives, known before any is made (a tiny STEP must not fill the memory first)."""
    return int(math.floor((stop - start) / step + 1e-9)) + 1


def _grid(start: float, stop: float, step: float) -> tuple[float, ...]:
    """start, start + step, ... up to stop inclusive, rounded to 6 decimals (so they print and re-parse exactly)."""
    return tuple(round(start + i * step, 6) for i in range(_count(start, stop, step)))


def parse_ranges(text: Optional[str]) -> dict[str, tuple[float, ...]]:
    """Grids per axis: the defaults, with NAME=START:STOP:STEP (or a single fixed value) overriding each."""
    grids = {name: _grid(*spec) for name, spec in DEFAULT_RANGES.items()}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, spec = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in AXES:
            raise UserError(f"--tune '{part.strip()}': expected NAME=START:STOP:STEP with NAME one of "
                            f"{', '.join(AXES)} (for example {EXAMPLE}).", exit_code=2)
        try:
            numbers = [float(v) for v in spec.split(":")]
        except ValueError:
            numbers = []
        if len(numbers) not in (1, 3) or not all(math.isfinite(v) for v in numbers):
            raise UserError(f"--tune {key}={spec}: give START:STOP:STEP (e.g. {key}="
                            f"{':'.join(str(v) for v in DEFAULT_RANGES[key])}) or one value.", exit_code=2)
        if len(numbers) == 3 and (numbers[2] <= 0 or numbers[1] < numbers[0]):
            raise UserError(f"--tune {key}={spec}: STOP must not be below START and STEP must be positive.",
                            exit_code=2)
        count = _count(*numbers) if len(numbers) == 3 else 1
        if count > MAX_VALUES:
            raise UserError(f"--tune {key}={spec} gives {count:,} values; use a larger STEP (at most "
                            f"{MAX_VALUES} values per setting).", exit_code=2)
        values = _grid(*numbers) if len(numbers) == 3 else (round(numbers[0], 6),)
        low_ok = values[0] > 0 if key == "unclip_ratio" else values[0] >= 0
        high_ok = values[-1] <= (MAX_UNCLIP_RATIO if key == "unclip_ratio" else 1)
        if not (low_ok and high_ok):
            allowed = f"above 0 and at most {MAX_UNCLIP_RATIO:g}" if key == "unclip_ratio" else "between 0 and 1"
            raise UserError(f"--tune {key}={spec}: {key} values must be {allowed}.", exit_code=2)
        grids[key] = values
    return grids


@dataclass
class TuneImage:
    """What a trial needs per image: the cached map and the labels it is scored against."""

    cached: CachedMap
    gt_polys: list
    gt_ignore: list


class ShardEvaluator:
    """Scores trials on a set of images, remembering what later trials can reuse."""

    def __init__(self, images: Sequence[TuneImage], base: DBPostProcess):
        self.images = list(images)
        self.base = base
        self._candidates: dict = {}
        self._records: dict = {}

    def evaluate(self, trials: Sequence[Params]) -> list[tuple[int, int, int]]:
        """(care GT, care detections, matches) summed over the images, per trial."""
        totals = {p: [0, 0, 0] for p in trials}
        groups: dict[tuple[float, float], list[Params]] = defaultdict(list)
        for p in totals:
            groups[(p[0], p[2])].append(p)
        for i, image in enumerate(self.images):
            pred = None
            for (thresh, ratio), members in groups.items():
                candidates = self._candidates.get((i, thresh))
                if candidates is None:
                    pred = image.cached.load() if pred is None else pred
                    candidates = replace(self.base, thresh=thresh).candidates(pred)
                    self._candidates[(i, thresh)] = candidates
                post = replace(self.base, thresh=thresh, unclip_ratio=ratio)
                expanded: dict[int, object] = {}
                for params in members:
                    box_thresh = float(params[1])
                    kept = tuple(k for k, c in enumerate(candidates) if not c.score < box_thresh)  # as __call__
                    key = (i, thresh, ratio, kept)
                    record = self._records.get(key)
                    if record is None:
                        dets = []
                        for k in kept:
                            if k not in expanded:
                                expanded[k] = post.expand(candidates[k], image.cached.shape, *image.cached.src_hw)
                            if expanded[k] is not None:
                                dets.append(expanded[k].points)
                        record = self._records[key] = evaluate_image(image.gt_polys, image.gt_ignore, dets)
                    total = totals[params]
                    total[0] += record.gt_care
                    total[1] += record.det_care
                    total[2] += record.det_matched
        return [tuple(totals[p]) for p in trials]


_SHARD: Optional[ShardEvaluator] = None


def _init_worker(images: Sequence[TuneImage], base: DBPostProcess) -> None:
    global _SHARD
    _SHARD = ShardEvaluator(images, base)


def _run_worker(trials: Sequence[Params]) -> list[tuple[int, int, int]]:
    assert _SHARD is not None
    return _SHARD.evaluate(trials)


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class TrialRunner:
    """Trials in, summed counts out; one process per shard of images (or in-process for one job)."""

    def __init__(self, images: Sequence[TuneImage], base: DBPostProcess, jobs: int):
        shards = _split(images, max(1, min(jobs, len(images))))
        self.jobs = len(shards)
        self.local = ShardEvaluator(images, base) if self.jobs <= 1 else None
        context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        self.pools = [] if self.local else [
            ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker, initargs=(shard, base))
            for shard in shards]
        for pool in self.pools:  # start (fork) the workers now, before progress bars start their threads
            pool.submit(int).result()

    def __call__(self, trials: Sequence[Params]) -> list[tuple[int, int, int]]:
        if self.local is not None:
            return self.local.evaluate(trials)
        try:
            parts = [f.result() for f in [pool.submit(_run_worker, list(trials)) for pool in self.pools]]
        except BrokenProcessPool:
            raise UserError("a tuning process died (out of memory?). Lower OPENOCR_DET_TUNE_MEMORY_MB so maps go "
                            "to disk, or use --tune-jobs 1.") from None
        return [tuple(sum(values) for values in zip(*per_trial)) for per_trial in zip(*parts)]

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(cancel_futures=True)

    def __enter__(self) -> TrialRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _split(images: Sequence[TuneImage], jobs: int) -> list[list[TuneImage]]:
    """Shards of about equal map area (the cost of a trial grows with it)."""
    shards: list[list[TuneImage]] = [[] for _ in range(jobs)]
    load = [0] * jobs
    for image in sorted(images, key=lambda im: -im.cached.shape[0] * im.cached.shape[1]):
        k = load.index(min(load))
        shards[k].append(image)
        load[k] += image.cached.shape[0] * image.cached.shape[1]
    return [s for s in shards if s]


@dataclass(frozen=True)
class Trial:
    params: Params
    precision: float
    recall: float
    hmean: float

    @classmethod
    def from_counts(cls, params: Params, counts: tuple[int, int, int]) -> Trial:
        scores = summarize([ImageRecord(*counts)])  # integer sums: the same numbers as per-image records
        return cls(params, scores["precision"], scores["recall"], scores["hmean"])

    def as_dict(self) -> dict:
        return {**dict(zip(AXES, self.params)), "precision": self.precision, "recall": self.recall,
                "hmean": self.hmean}


@dataclass
class TuneOutcome:
    default: Trial
    best: Trial
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0
    jobs: int = 1

    def top(self, n: int = TOP) -> list[Trial]:
        """The tuned trial first, then the other best ones (ties share an hmean)."""
        rest = sorted((t for t in self.trials if t is not self.best), key=lambda t: (-t.hmean, -t.precision))
        return [self.best, *rest][:n]

    def at_edges(self, grids: dict[str, tuple[float, ...]]) -> list[str]:
        """For each tuned value at the end of its searched range, a wider range to try next (NAME=A:B:STEP)."""
        out = []
        for name, value in zip(AXES, self.best.params):
            values = grids[name]
            if len(values) < 2 or value not in (values[0], values[-1]):
                continue
            step = round(values[1] - values[0], 6)
            top = 1.0 if name != "unclip_ratio" else float("inf")
            low = 0.0 if name != "unclip_ratio" else step
            lo, hi = (value, min(top, value + 6 * step)) if value == values[-1] else (max(low, value - 6 * step), value)
            if hi > lo:
                out.append(f"{name}={round(lo, 6):g}:{round(hi, 6):g}:{step:g}")
        return out

    def as_dict(self, grids: dict[str, tuple[float, ...]]) -> dict:
        return {"default": self.default.as_dict(), "tuned": self.best.as_dict(), "trials": len(self.trials),
                "seconds": round(self.seconds, 3),
                "search": {"method": "coordinate descent + grid-neighbour refinement", "processes": self.jobs,
                           "ranges": {k: [v[0], v[-1], len(v)] for k, v in grids.items()},
                           "top": [t.as_dict() for t in self.top()]}}


def search(runner: Callable[[Sequence[Params]], list[tuple[int, int, int]]], grids: dict[str, tuple[float, ...]],
           start: Params, on_batch: Callable[[int], None] = lambda n: None) -> TuneOutcome:
    """Coordinate descent + neighbour refinement from `start`; never returns worse than `start`."""
    began = time.perf_counter()
    seen: dict[Params, Trial] = {}

    def run(candidates: Sequence[Params]) -> list[Trial]:
        new = [p for p in dict.fromkeys(candidates) if p not in seen]
        if new:
            for params, counts in zip(new, runner(new)):
                seen[params] = Trial.from_counts(params, counts)
            on_batch(len(new))
        return [seen[p] for p in candidates]

    best = run([start])[0]
    default = best
    for _ in range(MAX_ROUNDS):
        before = best
        for axis in range(3):
            line = [best.params[:axis] + (v,) + best.params[axis + 1:] for v in grids[AXES[axis]]]
            pick = max(run(line), key=lambda t: (t.hmean, -abs(t.params[axis] - best.params[axis])))
            if pick.hmean > best.hmean:
                best = pick
        around = [tuple(p) for p in product(*(_neighbours(grids[AXES[a]], best.params[a]) for a in range(3)))]
        pick = max(run(around), key=lambda t: (t.hmean, -sum(abs(x - y) for x, y in zip(t.params, best.params))))
        if pick.hmean > best.hmean:
            best = pick
        if best is before:
            break
    jobs = getattr(runner, "jobs", 1)
    return TuneOutcome(default, best, list(seen.values()), time.perf_counter() - began, jobs)


def _neighbours(values: tuple[float, ...], current: float) -> list[float]:
    below = [v for v in values if v < current]
    above = [v for v in values if v > current]
    return ([below[-1]] if below else []) + [current] + ([above[0]] if above else [])


SMALL_SAMPLE = 50  # text regions under which tuned values are mostly noise


def small_sample_warning(regions: int) -> Optional[str]:
    """Advice when --tune ran on too few text regions for its values to hold on other images."""
    if regions >= SMALL_SAMPLE:
        return None
    return (f"--tune ran on {regions} text region(s): with fewer than {SMALL_SAMPLE}, one region more or less "
            "matched moves hmean by a few points, so the tuned values may not hold on other images. Tune on more "
            "labelled images (a few hundred regions).")
