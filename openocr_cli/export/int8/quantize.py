"""INT8 models with onnxruntime's own quantization tools.

Static QDQ quantization: uint8 activations and per-channel int8 weights, the pairing onnxruntime
recommends for x86 CPUs with VNNI, calibrated (99.999th percentile ranges) on images preprocessed
exactly as predict feeds them. Calibration runs once; each later attempt of the accuracy search
(export/int8/search.py) re-quantizes from the cached ranges with some stages kept in float32.

GELU matters for speed: exported below opset 20 it is five nodes, which the quantizer splits
into a chain of quantize/dequantize pairs; from opset 20 it is one Gelu node that stays float
between int8 convolutions (the export command exports int8 models at opset 20 by default).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import onnx

from openocr_cli.errors import ImageReadError, UserError

if TYPE_CHECKING:
    from openocr_cli.inference.predictor import Predictor

# Activation ranges cover this percentile of the calibration values: on the `make demo` model, calibrated on
# one synthetic set and checked on another, hmean lost 0.34 points where MinMax ranges lost 0.85.
PERCENTILE = 99.999


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
    """onnxruntime's quantizer logs hints and warnings meant for its developers, on the root logger, and prints.

    It also configures that logger: importing onnxruntime.quantization runs logging.basicConfig(level=INFO),
    and its module-level logging.info() calls add a stderr handler when the root has none. Both would show
    every later record of this library a second time (and to Python callers that configured nothing), so
    the root logger's level and handlers are put back afterwards; import the quantizer inside this block.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its calibrator also prints progress lines
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

    def quantize(self, output: Path, float_stages: Sequence[str] = ()) -> Path:
        """Write an int8 model to `output`, keeping the named stages (int8_search.STAGES) in float32."""
        from openocr_cli.export.int8.search import patterns

        float_nodes = self.nodes_in(patterns(float_stages)) if float_stages else []
        reader = None if self.cache.is_file() else _Reader(self.tensors, self.input_name)
        with _quiet():
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

            quantize_static(str(self.prepared), str(output), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=list(float_nodes),
                            calibration_cache_path=str(self.cache),
                            extra_options={"CalibPercentile": PERCENTILE, "CalibMaxIntermediateOutputs": 8})
        return Path(output)

    def nodes_in(self, stage_patterns: Sequence[str]) -> list[str]:
        """Names of the prepared graph's nodes that match any of the patterns (export/int8/search.STAGES)."""
        graph = onnx.load(str(self.prepared), load_external_data=False).graph
        compiled = [re.compile(p) for p in stage_patterns]
        return [node.name for node in graph.node if any(c.search(node.name) for c in compiled)]


def quantized_node_count(path: Path) -> int:
    """Number of QuantizeLinear/DequantizeLinear nodes: > 0 means the model really is int8."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)
