"""`benchmark`'s measuring: one row per backend x model x precision x limit_side_len, CLI-free.

Each row times the real `Predictor` (the code predict and eval run) and, on a labelled set, scores
its untimed warm-up pass with `evaluate_model`, so the row's hmean is the one `eval` prints for the
same model and settings. `recommend` picks the row to deploy: the fastest one whose hmean stays within
--max-drop of the best float32 row's. Nothing here imports torch: ONNX- and OpenVINO-only benchmarks stay
torch-free.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from openocr_cli.data.labels import LabelSample
from openocr_cli.errors import UserError
from openocr_cli.evaluation.evaluator import evaluate_model
from openocr_cli.inference.predictor import Predictor

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
STAGES = ("preprocess", "inference", "postprocess", "total")
# onnxruntime's idle worker keeps spinning for about 30 ms of CPU after a run (measured on 2 cores); wait that out
# before timing another model.
SETTLE_SECONDS = 0.1
# Operators only a quantised graph has (static QDQ / QOperator, or dynamic quantisation).
INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear",
                      "ConvInteger", "MatMulInteger"})


def parse_precisions(text: str) -> list[str]:
    """'fp32,bf16' -> ['fp32', 'bf16'] (order kept, duplicates dropped); unknown names are a usage error."""
    out = []
    for part in text.replace(" ", "").lower().split(","):
        if not part:
            continue
        if part not in PRECISIONS:
            raise UserError(f"--precisions {text}: '{part}' is not a precision; use a comma-separated list of "
                            f"{', '.join(PRECISIONS)} (e.g. --precisions fp32,bf16).", exit_code=2)
        if part not in out:
            out.append(part)
    if not out:
        raise UserError("--precisions needs at least one of fp32, bf16, fp16, int8.", exit_code=2)
    return out


def onnx_precision(metadata: Mapping[str, str], op_types: Callable[[], Iterable[str]]) -> str:
    """fp32 / fp16 / int8 for an ONNX model: its metadata `precision` (what `export` writes), else int8 when
    the graph holds quantisation operators, else fp32. `op_types` is called only when the metadata is silent."""
    value = str(metadata.get("precision", "")).strip().lower()
    for prefix, name in (("float32", "fp32"), ("fp32", "fp32"), ("float16", "fp16"), ("fp16", "fp16"),
                         ("int8", "int8")):
        if value.startswith(prefix):
            return name
    return "int8" if INT8_OPS.intersection(op_types()) else "fp32"


def graph_op_types(path) -> set[str]:
    """The operator types of an ONNX file's main graph (weights stored outside the file are not read)."""
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    """p50 and p95 (numpy's linear interpolation between the closest measurements)."""
    if not values_ms:
        return {"p50": 0.0, "p95": 0.0}
    p50, p95 = np.percentile(np.asarray(values_ms, dtype=np.float64), [50, 95])
    return {"p50": float(p50), "p95": float(p95)}


@dataclass
class BenchRow:
    backend: str
    model: str
    precision: str
    limit_side_len: int
    images: int
    stages_ms: dict[str, dict[str, float]]
    images_per_s: float
    hmean: Optional[float]

    def as_dict(self) -> dict:
        out = {"backend": self.backend, "model": self.model, "precision": self.precision,
               "limit_side_len": self.limit_side_len, "images": self.images}
        out.update({f"{stage}_ms": dict(self.stages_ms[stage]) for stage in STAGES})
        out.update({"images_per_s": self.images_per_s, "hmean": self.hmean})
        return out


@dataclass
class Case:
    """One row to measure: a predictor (backend at a precision, resize at a limit) and how to label it."""

    backend: str
    model: str
    precision: str
    limit_side_len: int
    predictor: Predictor


@dataclass
class _Timings:
    stages_ms: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    walls: list[float] = field(default_factory=list)
    images: int = 0
    hmean: Optional[float] = None
    failures: list[str] = field(default_factory=list)

    def row(self, case: Case) -> BenchRow:
        wall = float(np.median(self.walls)) if self.walls else 0.0
        return BenchRow(case.backend, case.model, case.precision, case.limit_side_len, self.images,
                        {stage: percentiles(self.stages_ms[stage]) for stage in STAGES},
                        self.images / wall if wall > 0 else 0.0, self.hmean)


def _warm_up(predictor: Predictor, paths: Sequence[str], samples: Optional[Sequence[LabelSample]],
             into: _Timings, on_image: Callable[[], None]) -> None:
    """The untimed first pass; on a labelled set it is eval's own scoring, which gives the row's hmean."""
    if samples is not None:
        result = evaluate_model(predictor, samples, on_image)
        into.hmean, into.failures = result.hmean, list(result.failures)
        return
    for result in predictor.run(paths):
        on_image()
        if result.error is not None:
            into.failures.append(result.error)


def _timed_run(predictor: Predictor, paths: Sequence[str], into: _Timings, on_image: Callable[[], None]) -> None:
    images = 0
    start = time.perf_counter()
    for result in predictor.run(paths):
        on_image()
        if result.error is not None:
            continue
        t = result.times
        for stage, seconds in zip(STAGES, (t.preprocess, t.inference, t.postprocess,
                                           t.preprocess + t.inference + t.postprocess)):
            into.stages_ms[stage].append(1000.0 * seconds)
        images += 1
    into.walls.append(time.perf_counter() - start)
    into.images = images


def run_cases(cases: Sequence[Case], paths: Sequence[str], samples: Optional[Sequence[LabelSample]], runs: int,
              on_image: Callable[[], None] = lambda: None) -> tuple[list[BenchRow], list[str]]:
    """Rows in `cases` order, and the images no case could read.

    Every case first makes one untimed warm-up pass over all images (first-call and per-shape set-up
    costs stay out of the timings); then come `runs` timed passes, interleaved (run 1 of every case,
    then run 2, ...) so a machine whose speed drifts slows every row alike. p50/p95 are over all
    per-image measurements of the timed passes; images/s is images / the median wall time of one pass.
    A pass on another model than the previous pass starts after a short pause (SETTLE_SECONDS), so the
    threads onnxruntime leaves spinning after a run do not slow the next model's first image.
    """
    timings = [_Timings() for _ in cases]
    for case, into in zip(cases, timings):
        _warm_up(case.predictor, paths, samples, into, on_image)
    previous = None
    for _ in range(runs):
        for case, into in zip(cases, timings):
            if previous is not None and case.predictor.backend is not previous:
                time.sleep(SETTLE_SECONDS)
            previous = case.predictor.backend
            _timed_run(case.predictor, paths, into, on_image)
    failures = list(dict.fromkeys(f for t in timings for f in t.failures))
    return [into.row(case) for case, into in zip(cases, timings)], failures


def fastest_first(rows: Sequence[BenchRow]) -> list[BenchRow]:
    """Highest images/s first; ties by the lower median total time."""
    return sorted(rows, key=lambda r: (-r.images_per_s, r.stages_ms["total"]["p50"]))


@dataclass(frozen=True)
class Recommendation:
    """The fastest row that keeps the accuracy; `reference` is the row whose hmean it was held to (None when
    no row has an hmean: then it is simply the fastest row)."""

    row: BenchRow
    reference: Optional[BenchRow]
    max_drop: float


def recommend(rows: Sequence[BenchRow], max_drop: float) -> Optional[Recommendation]:
    """The fastest row whose hmean is at most `max_drop` points (100 x hmean) below the best float32 row's
    (the best row of any precision when none is float32); without hmeans, the fastest row. None: no rows."""
    if not rows:
        return None
    scored = [r for r in rows if r.hmean is not None]
    if not scored:
        return Recommendation(fastest_first(rows)[0], None, max_drop)
    reference = max([r for r in scored if r.precision == "fp32"] or scored, key=lambda r: r.hmean)
    # a hair of slack: a row that drops exactly max_drop points still counts despite float rounding
    kept = [r for r in scored if 100.0 * (reference.hmean - r.hmean) <= max_drop + 1e-9]
    return Recommendation(fastest_first(kept)[0], reference, max_drop)


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine(threads: Optional[int]) -> dict:
    """What produced the numbers. Versions come from the installed package metadata (None: not installed), so
    an ONNX-only run never imports torch; `threads` is --threads, else PyTorch's thread count if it ran, else the
    usable cores."""
    if threads is None:
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else len(os.sched_getaffinity(0)) \
            if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"cpu": cpu_name(), "threads": int(threads), "torch": _version("torch"),
            "onnxruntime": _version("onnxruntime"), "openvino": _version("openvino")}
