"""INT8 models with onnxruntime's own quantization tools, and a guard that keeps their accuracy.

Static QDQ quantization: uint8 activations and per-channel int8 weights, the pairing onnxruntime
recommends for x86 CPUs with VNNI, calibrated (99.999th percentile ranges) on images preprocessed
exactly as predict feeds them. When a labelled set says the int8 model lost more than allowed, the tensors that
quantization disturbs most (measured on the calibration images: signal-to-quantization-noise
ratio of each activation, onnxruntime's qdq_loss_debug) are kept in float32, a few more each
round, and the model is quantized again from the same calibration ranges.

GELU matters for speed: exported below opset 20 it is five nodes, which the quantizer splits
into a chain of quantize/dequantize pairs; from opset 20 it is one Gelu node that stays float
between int8 convolutions (the export command exports int8 models at opset 20 by default).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import onnx

from openocr_cli.errors import ImageReadError, UserError
from openocr_cli.fileio import atomic_path

if TYPE_CHECKING:
    from openocr_cli.engine.predictor import Predictor

# Tensors kept in float32 after each failed accuracy check, cumulative: 2, then 4, 8, 16.
FLOAT_TENSORS_PER_ROUND = (2, 4, 8, 16)
# Activation ranges cover this percentile of the calibration values: on the `make demo` model, calibrated on
# one synthetic set and checked on another, hmean lost 0.34 points where MinMax ranges lost 0.85.
PERCENTILE = 99.999
SENSITIVITY_IMAGES = 4  # calibration images used to rank tensors (each keeps every activation in memory)


@dataclass(frozen=True)
class Attempt:
    """One quantized model and what it scored: `hmean` None without labels."""

    float_nodes: tuple[str, ...]
    path: Path
    hmean: Optional[float]
    ms_per_image: float


@dataclass
class QuantizeResult:
    float_hmean: Optional[float]
    float_ms: float
    attempts: list[Attempt] = field(default_factory=list)
    ok: bool = True

    @property
    def final(self) -> Attempt:
        return self.attempts[-1]


def pick_evenly(paths: Sequence[str], count: int) -> list[str]:
    """`count` paths spread evenly over the sorted list (all when there are fewer): deterministic, no seed."""
    ordered = sorted(paths)
    if count >= len(ordered):
        return ordered
    step = len(ordered) / count
    return [ordered[int(i * step)] for i in range(count)]


def calibration_tensors(paths: Sequence[str], predictor: Predictor) -> list[np.ndarray]:
    """Each image as `predictor` feeds it to the network (Predictor.network_input: decoded, resized and
    normalised exactly as predict does it), as a batch of one.

    Unreadable images are skipped; none readable is an error naming the first.
    """
    tensors, errors = [], []
    for path in paths:
        try:
            tensor, _, _ = predictor.network_input(path)
        except ImageReadError as exc:
            errors.append(str(exc))
            continue
        tensors.append(tensor[None])
    if not tensors:
        raise UserError(f"no calibration image could be read ({errors[0] if errors else 'none given'}).")
    return tensors


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over preprocessed tensors."""

    def __init__(self, tensors: Sequence[np.ndarray], input_name: str):
        self.tensors, self.input_name = tensors, input_name
        self._it: Iterator[np.ndarray] = iter(tensors)

    def get_next(self) -> Optional[dict]:
        tensor = next(self._it, None)
        return None if tensor is None else {self.input_name: tensor}

    def rewind(self) -> None:
        self._it = iter(self.tensors)

    def __iter__(self):
        self.rewind()
        return iter(lambda: self.get_next(), None)


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizer logs hints and warnings meant for its developers, on the root logger.

    It also configures that logger: importing onnxruntime.quantization runs logging.basicConfig(level=INFO),
    and its module-level logging.info() calls add a stderr handler when the root has none. Both would show
    every later record of this library a second time (and to Python callers that configured nothing), so
    the root logger's level and handlers are put back afterwards; import the quantizer inside this block.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


class Quantizer:
    """Quantizes one float model repeatedly (different float-kept nodes), calibrating only once."""

    def __init__(self, float_path: Path, tensors: Sequence[np.ndarray], workdir: Path):
        self.float_path = Path(float_path)
        self.tensors = list(tensors)
        self.workdir = Path(workdir)
        self.prepared = self.workdir / "prepared.onnx"
        self.cache = self.workdir / "calibration.json"
        self.input_name = onnx.load(str(float_path), load_external_data=False).graph.input[0].name
        with _quiet():
            from onnxruntime.quantization.shape_inference import quant_pre_process

            # dynamic height/width defeat onnxruntime's symbolic shape inference; ONNX's own is enough here
            quant_pre_process(str(float_path), str(self.prepared), skip_symbolic_shape=True)

    def quantize(self, output: Path, float_nodes: Sequence[str] = ()) -> Path:
        reader = None if self.cache.is_file() else _Reader(self.tensors, self.input_name)
        with _quiet():
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

            quantize_static(str(self.prepared), str(output), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=list(float_nodes),
                            calibration_cache_path=str(self.cache),
                            extra_options={"CalibPercentile": PERCENTILE, "CalibMaxIntermediateOutputs": 8})
        return Path(output)

    def sensitive_nodes(self, int8_path: Path) -> list[list[str]]:
        """Groups of node names, most disturbed tensor first: the tensor's producer and every consumer.

        Keeping those nodes float removes that tensor's quantize/dequantize pair.
        """
        sample = self.tensors[:SENSITIVITY_IMAGES]
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp, _quiet():
            from onnxruntime.quantization import qdq_loss_debug as dbg

            float_aug, int8_aug = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
            dbg.modify_model_output_intermediate_tensors(str(self.prepared), str(float_aug))
            dbg.modify_model_output_intermediate_tensors(str(int8_path), str(int8_aug))
            float_acts = dbg.collect_activations(str(float_aug), _Reader(sample, self.input_name))
            int8_acts = dbg.collect_activations(str(int8_aug), _Reader(sample, self.input_name))
            matches = dbg.create_activation_matching(int8_acts, float_acts)
            errors = {name: dbg.compute_signal_to_quantization_noice_ratio(m["pre_qdq"], m["post_qdq"])
                      for name, m in matches.items()}
        graph = onnx.load(str(self.prepared), load_external_data=False).graph
        producer = {out: node.name for node in graph.node for out in node.output}
        consumers: dict[str, list[str]] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node.name)
        groups = []
        for tensor in sorted(errors, key=errors.get):
            nodes = [producer[tensor]] if tensor in producer else []
            nodes += consumers.get(tensor, [])
            if nodes:
                groups.append(nodes)
        return groups


def quantize_with_guard(float_path: Path, output: Path, tensors: Sequence[np.ndarray],
                        score: Callable[[Path], tuple[Optional[float], float]], max_drop: float,
                        on_attempt: Callable[[Attempt], None] = lambda a: None) -> QuantizeResult:
    """Quantize `float_path` into `output`; with labels, keep sensitive tensors float until the hmean
    drop (in points, 100 x hmean) is at most `max_drop` or the rounds run out (`ok` False).

    `score(path)` returns (hmean or None without labels, ms per image). The last attempt is always
    the file left at `output`.
    """
    float_hmean, float_ms = score(float_path)
    result = QuantizeResult(float_hmean, float_ms)
    with tempfile.TemporaryDirectory(prefix="openocr-det-int8-") as tmp:
        quantizer = Quantizer(float_path, tensors, Path(tmp))
        float_nodes: list[str] = []
        groups: Optional[list[list[str]]] = None
        for round_ in range(len(FLOAT_TENSORS_PER_ROUND) + 1):
            candidate = Path(tmp) / f"round{round_}.onnx"
            quantizer.quantize(candidate, float_nodes)
            attempt = Attempt(tuple(float_nodes), output, *score(candidate))
            _copy(candidate, output)
            result.attempts.append(attempt)
            on_attempt(attempt)
            if float_hmean is None or 100 * (float_hmean - attempt.hmean) <= max_drop:
                return result
            if round_ == len(FLOAT_TENSORS_PER_ROUND):
                break
            if groups is None:
                groups = quantizer.sensitive_nodes(candidate)
            float_nodes = _first_nodes(groups, FLOAT_TENSORS_PER_ROUND[round_])
    result.ok = False
    return result


def _first_nodes(groups: Sequence[Sequence[str]], tensors: int) -> list[str]:
    names: list[str] = []
    for group in groups[:tensors]:
        names.extend(n for n in group if n not in names)
    return names


def _copy(source: Path, target: Path) -> None:
    """Write through a temporary name in the target's folder, so `target` is never half-written."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def quantized_node_count(path: Path) -> int:
    """Number of QuantizeLinear/DequantizeLinear nodes: > 0 means the model really is int8."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)
