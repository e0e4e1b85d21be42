"""Export a DBDetector to ONNX, then prove the file computes what the PyTorch model computes.

Two exporters exist in current PyTorch. The TorchScript one (`dynamo=False`) still ships in
2.14, honours `dynamic_axes` and writes any opset up to 20, so it can pin opset 17 (what
OpenOCR's released file uses) and is the default. The torch.export-based one (`dynamo=True`)
cannot write below opset 18 and is slower; it is used when asked for, for opsets above the
TorchScript limit, or once PyTorch drops the TorchScript path.

The file is written to a temporary name and renamed into place (fileio.atomic_path) only when
export, metadata and `onnx.checker` succeeded; a file that fails numerical verification is kept for
inspection.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import io
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import torch
from torch import nn

from openocr_cli.constants import DEFAULT_OPSET
from openocr_cli.data.resize import Normalizer
from openocr_cli.errors import UserError, first_line
from openocr_cli.fileio import atomic_path
from openocr_cli.inference.backends.onnx_metadata import write_metadata

DYNAMO_MIN_OPSET = 18
TOLERANCE_FP32 = 1e-4
TOLERANCE_FP16 = 2e-2
INPUT_NAME, OUTPUT_NAME = "input", "output"
EXPORTERS = ("auto", "torchscript", "dynamo")
# (batch, height, width) checked after a dynamic export; a static one checks its own size.
DYNAMIC_CASES = ((1, 320, 320), (1, 640, 960), (1, 1280, 736), (2, 640, 640))


@dataclass(frozen=True)
class ExportOptions:
    opset: int = DEFAULT_OPSET
    dynamic: bool = True
    size: tuple[int, int] = (960, 960)  # the static input size, or the tracing example when dynamic
    fp16: bool = False
    exporter: str = "auto"


@dataclass
class CheckRow:
    batch: int
    height: int
    width: int
    max_abs: float
    mean_abs: float


@dataclass
class ExportReport:
    path: Path
    exporter: str
    opset: int
    seconds: float
    tolerance: float
    rows: list[CheckRow] = field(default_factory=list)
    size: int = 0  # bytes of the file as written (it may be a temporary one, gone later); an IR's .xml + .bin
    runtime: str = "onnxruntime"  # what ran the file for the comparison with PyTorch

    @property
    def max_abs(self) -> float:
        return max((r.max_abs for r in self.rows), default=0.0)

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tolerance


def torchscript_max_opset() -> Optional[int]:
    """Highest opset the TorchScript exporter writes, or None when this PyTorch no longer has it."""
    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" not in params or "dynamic_axes" not in params:
        return None
    try:
        from torch.onnx import _constants  # private, hence the fallback to 2.x's value
    except ImportError:
        return 20
    return getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)


def choose_exporter(requested: str, opset: int) -> str:
    """'torchscript' or 'dynamo' for the request; UserError when it cannot write that opset."""
    if requested not in EXPORTERS:
        raise UserError(f"--exporter {requested!r}: use one of {', '.join(EXPORTERS)}.", exit_code=2)
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise UserError(f"--opset {opset}: the installed onnx {onnx.__version__} knows opsets up to {newest}; use "
                        f"--opset {newest} or lower (default {DEFAULT_OPSET}).", exit_code=2)
    ts_max = torchscript_max_opset()
    if requested == "auto":
        requested = "torchscript" if ts_max is not None and opset <= ts_max else "dynamo"
    if requested == "torchscript":
        if ts_max is None:
            raise UserError(f"PyTorch {torch.__version__} no longer has the TorchScript ONNX exporter; "
                            f"use --exporter dynamo with --opset {DYNAMO_MIN_OPSET} or higher.", exit_code=2)
        if opset > ts_max:
            raise UserError(f"the TorchScript exporter writes opset {ts_max} at most; use --exporter dynamo "
                            f"for opset {opset}.", exit_code=2)
    elif opset < DYNAMO_MIN_OPSET:
        raise UserError(f"the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or newer, not {opset}; use "
                        f"--opset {DYNAMO_MIN_OPSET} or --exporter torchscript.", exit_code=2)
    return requested


class _HalfPrecision(nn.Module):
    """float16 weights behind a float32 interface, so fp16 files take the same input as fp32 ones."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def _half_copy(model: nn.Module) -> nn.Module:
    return _HalfPrecision(copy.deepcopy(model)).eval()


def _torchscript(model: nn.Module, example: torch.Tensor, path: Path, opset: int, dynamic: bool) -> None:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, do_constant_folding=True)


def _dynamo(model: nn.Module, example: torch.Tensor, path: Path, opset: int, dynamic: bool) -> None:
    dim = torch.export.Dim
    shapes = {0: dim("batch", min=1, max=4096)}
    if dynamic:  # the network needs multiples of 32; saying so lets torch.export prove the graph
        shapes.update({2: 32 * dim("h32", min=1, max=512), 3: 32 * dim("w32", min=1, max=512)})
    program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset, verbose=False,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=(shapes,), optimize=True)
    program.save(str(path), external_data=False)
    _rename_dims(path, {"32*h32": "height", "32*w32": "width"})


def _rename_dims(path: Path, names: dict[str, str]) -> None:
    """Give the dynamo exporter's symbolic dims the TorchScript names (batch, height, width)."""
    model = onnx.load(str(path))
    for info in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        for d in info.type.tensor_type.shape.dim:
            if d.dim_param in names:
                d.dim_param = names[d.dim_param]
    onnx.save(model, str(path))


def export_onnx(model: nn.Module, path: Path, options: ExportOptions, metadata: dict[str, str]) -> tuple[str, float]:
    """Write `model` (eval mode, on CPU) to `path`; returns (exporter used, seconds).

    The model is checked with onnx.checker before it replaces `path`.
    """
    exporter = choose_exporter(options.exporter, options.opset)
    model = model.cpu().eval()
    net = _half_copy(model) if options.fp16 else model
    example = torch.randn(1, 3, *options.size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {path.parent}: {exc.strerror}. Choose another --output.") from exc
    start = time.perf_counter()
    try:
        with atomic_path(path) as tmp:  # `path` is replaced only once the checker accepted the file
            # Both exporters print deprecation notices and progress lines that mean nothing to a user.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                warnings.simplefilter("ignore")
                (_torchscript if exporter == "torchscript" else _dynamo)(net, example, tmp, options.opset,
                                                                          options.dynamic)
            write_metadata(tmp, {**metadata, "opset": str(options.opset), "exporter": exporter})
            check_model(tmp, shown=path)
    except UserError:
        raise
    except Exception as exc:
        reason = first_line(exc)
        raise UserError(f"the {exporter} ONNX exporter failed (opset {options.opset}): {reason}") from exc
    return exporter, time.perf_counter() - start


def check_model(path: Path, shown: Optional[Path] = None) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise UserError(f"onnx.checker rejected the exported model {shown or path}: "
                        f"{str(exc).strip().splitlines()[0]}") from exc


def sample_batches(cases: Sequence[tuple[int, int, int]], normalizer: Normalizer, seed: int = 0):
    """Preprocessed (normalised NCHW float32) batches of synthetic BGR images, one per case."""
    rng = np.random.default_rng(seed)
    for batch, h, w in cases:
        images = rng.integers(0, 256, size=(batch, h, w, 3), dtype=np.uint8)
        yield (batch, h, w), np.stack([normalizer(image) for image in images])


def verify_file(model: nn.Module, path: Path, cases: Sequence[tuple[int, int, int]], normalizer: Normalizer,
                threads: Optional[int] = None) -> list[CheckRow]:
    """Run the file (an .xml IR on OpenVINO at float32, else onnxruntime; CPU) and `model` on the same tensors;
    max/mean absolute differences per case."""
    if path.suffix.lower() == ".xml":
        from openocr_cli.inference.backends.openvino_backend import OpenVinoBackend

        runtime = OpenVinoBackend.load(path, device="cpu", threads=threads)
    else:
        from openocr_cli.inference.backends.onnx_backend import OnnxBackend

        runtime = OnnxBackend.load(path, device="cpu", threads=threads)
    model = model.cpu().eval()
    rows = []
    for (batch, h, w), tensor in sample_batches(cases, normalizer):
        with torch.inference_mode():
            expected = model(torch.from_numpy(tensor)).float().numpy()
        got = runtime(tensor)
        if got.shape != expected.shape:
            raise UserError(f"the exported model {path} returned shape {tuple(got.shape)} for input "
                            f"{tuple(tensor.shape)}, PyTorch {tuple(expected.shape)}.")
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        rows.append(CheckRow(batch, h, w, float(diff.max()), float(diff.mean())))
    return rows


def export_and_verify(model: nn.Module, path: Path, options: ExportOptions, metadata: dict[str, str],
                      normalizer: Normalizer, tolerance: Optional[float] = None) -> ExportReport:
    """Export, check, and compare against PyTorch at several sizes (the static size when static).

    A `path` ending in .xml is an OpenVINO IR: the ONNX model is exported to a temporary file first and
    converted (float16 weights with `fp16`, OpenVINO's own compression), and the IR is what is verified.
    """
    openvino = path.suffix.lower() == ".xml"
    if openvino:
        from openocr_cli.export.openvino_export import convert_onnx, ir_files
        from openocr_cli.inference.backends.onnx_metadata import read_metadata

        with tempfile.TemporaryDirectory(prefix="openocr-det-ir-") as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            exporter, seconds = export_onnx(model, onnx_path, dataclasses.replace(options, fp16=False), metadata)
            convert_onnx(onnx_path, path, read_metadata(onnx_path), fp16=options.fp16)
        size = sum(f.stat().st_size for f in ir_files(path))
    else:
        exporter, seconds = export_onnx(model, path, options, metadata)
        size = path.stat().st_size
    if tolerance is None:
        tolerance = TOLERANCE_FP16 if options.fp16 else TOLERANCE_FP32
    cases = DYNAMIC_CASES if options.dynamic else ((1, *options.size), (2, *options.size))
    report = ExportReport(path, exporter, options.opset, seconds, tolerance, size=size,
                          runtime="OpenVINO" if openvino else "onnxruntime")
    report.rows = verify_file(model, path, cases, normalizer)
    return report
