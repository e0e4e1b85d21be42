"""An export run: a checkpoint -> a verified float32 ONNX file or OpenVINO IR, optionally quantized to int8 after that.

What `openocr-det export` does, for any caller: plain values in (ExportRequest), result objects out
(ExportResult, with the verification report and the int8 attempts), nothing printed. Notes go to the
logger; the command shows the tables. A failure after files were written raises ExportFailed, a UserError
that carries what was written and measured (`result`), so a caller can still show or inspect it.

The float32 model of an int8 run is written to a temporary folder, verified, quantized with
calibration images that the float model's own Predictor preprocesses (so they are exactly what predict
feeds the network), and checked against the float32 model on the check images (evaluation/guard.py),
keeping stages in float32 while the check fails (export/int8/search.py).

torch and onnx are imported when an export runs, not with this module (the CLI imports it for --help).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from openocr_cli import config as cfgmod
from openocr_cli._version import __version__
from openocr_cli.constants import DEFAULT_OPSET, INT8_OPSET
from openocr_cli.data.resize import ResizeSpec
from openocr_cli.errors import UserError
from openocr_cli.export.int8.export import (
    Checker,
    Int8Export,
    int8_failure,
    load_calibration,
    load_check_set,
    quantize_export,
)
from openocr_cli.fileio import atomic_path
from openocr_cli.inference.options import DEFAULT_WEIGHTS, InferenceOptions
from openocr_cli.inference.resolve import CHECKPOINT_SOURCE, ConfigLayers, PostprocessLayers, resolve_normalizer

if TYPE_CHECKING:
    from openocr_cli.evaluation.guard import Verdict
    from openocr_cli.export.onnx_export import ExportOptions, ExportReport

log = logging.getLogger(__name__)

EXPORT_DIR, EXPORT_NAME = "export_det", "det_model.onnx"
INT8_NAME = "det_model_int8.onnx"
FORMATS = {"onnx": ".onnx", "openvino": ".xml"}
DEFAULT_SIZE = (960, 960)


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """What to export and how; None means "the default" (as for the command's flags of the same names).

    `size` is the static input size (default 960x960), or only the tracing example when `dynamic`.
    `format` is onnx (a .onnx file) or openvino (an IR .xml + .bin). `opset` defaults to DEFAULT_OPSET,
    INT8_OPSET with `int8`. `calib_data` is a folder of images or a label file; `check_data` (default: the
    calibration label file, else its images) is where the int8 model is checked against float32 (with labels
    the hmean drop too, and `max_drop`, in points, applies; see evaluation/guard.py for the rule);
    `data_dir` is the folder label paths are relative to (default: the config's Eval.dataset.data_dir).
    """

    weights: str = DEFAULT_WEIGHTS
    output: Optional[Path] = None
    format: str = "onnx"
    opset: Optional[int] = None
    fuse: bool = True
    dynamic: bool = True
    size: Optional[tuple[int, int]] = None
    fp16: bool = False
    exporter: str = "auto"
    tolerance: Optional[float] = None
    int8: bool = False
    calib_data: Optional[Path] = None
    data_dir: Optional[Path] = None
    calib_images: int = 64
    check_data: Optional[Path] = None
    max_drop: float = 0.5
    min_agreement: Optional[float] = None  # default int8_guard.DEFAULT_MIN_AGREEMENT
    config: Optional[Path] = None
    overrides: tuple[str, ...] = ()
    postprocess: Union[Path, Mapping[str, float], None] = None
    non_strict: bool = False
    overwrite: bool = False  # replace a file already at the output path (else refused before any work)
    origin: str = "flag"  # how explicit values are named in recorded sources (InferenceOptions.origin)


@dataclass
class ExportResult:
    """What an export wrote and measured.

    `path` is the model the request asked for (the int8 file with int8, else the float32 one). `report`
    is the float32 verification; in an int8 run its `path` was a temporary file, gone once the run ends.
    `float_path` is the float32 file left on disk: `path` without int8; with int8 only the copy kept for
    inspection when verification failed (else None).
    """

    path: Path
    source: Path
    options: ExportOptions
    fused: bool
    metadata: dict[str, str]
    report: ExportReport
    float_path: Optional[Path] = None
    int8: Optional[Int8Export] = None
    fp16_check: Optional[Verdict] = None  # --fp16 with --check-data: the fp16 file against the float32 model

    @property
    def files(self) -> list[Path]:
        """The files this export left on disk."""
        written = [self.float_path] if self.float_path is not None else []
        return written + ([self.int8.path] if self.int8 is not None else [])


class ExportFailed(UserError):
    """An export that wrote files but failed a check (verification, int8 accuracy); `result` says what it wrote."""

    def __init__(self, message: str, result: ExportResult, exit_code: int = 1):
        super().__init__(message, exit_code)
        self.result = result


def default_output(weights: str) -> Path:
    """OpenOCR's place: <folder of the weights file>/export_det/det_model.onnx; ./output/... for a model name."""
    local = Path(weights).expanduser()
    folder = local.parent if local.is_file() else Path("output")
    return folder / EXPORT_DIR / EXPORT_NAME


def output_path(request: ExportRequest) -> Path:
    """Where the model goes: `output` (a folder gets the default file name), else default_output; the name ends
    in the format's suffix (.onnx, or .xml for an OpenVINO IR, whose .bin goes beside it)."""
    ext = FORMATS[request.format]
    name = str(Path(INT8_NAME if request.int8 else EXPORT_NAME).with_suffix(ext))
    path = Path(request.output) if request.output is not None else default_output(str(request.weights)).with_name(name)
    if path.suffix.lower() in FORMATS.values() and path.suffix.lower() != ext:
        other = "onnx" if ext == ".xml" else "openvino"
        raise UserError(f"--output {path} is a {path.suffix} file, but --format {request.format} writes {ext}; "
                        f"name it {path.with_suffix(ext).name} or pass --format {other}.", exit_code=2)
    if path.suffix.lower() != ext:
        path = path / name if path.is_dir() else path
    return path


def _refuse_existing(path: Path, overwrite: bool) -> None:
    """An export never replaces a file silently: the one at --output may be another model, or not a model."""
    taken = [p for p in (path, path.with_suffix(".bin") if path.suffix == ".xml" else None) if p and p.exists()]
    if taken and not overwrite:
        raise UserError(f"--output {taken[0]} already exists; pass --overwrite to replace it, or choose another "
                        "--output.", exit_code=2)


def float_kept_path(path: Path) -> Path:
    """Where an int8 run keeps its float32 model when verification failed: <stem>.float32<suffix> beside `path`."""
    return path.with_name(f"{path.stem}.float32{path.suffix}")


def _check_request(request: ExportRequest) -> None:
    if request.format not in FORMATS:
        raise UserError(f"--format {request.format!r}: use onnx or openvino.", exit_code=2)
    if request.size is not None:
        h, w = request.size
        if h < 32 or w < 32 or h % 32 or w % 32:
            raise UserError(f"{h}x{w}: both sides must be multiples of 32 (the network's stride).", exit_code=2)
        if request.dynamic:
            log.info(f"note: --size {h}x{w} is only the tracing example with --dynamic.")


def _check_int8_request(request: ExportRequest) -> None:
    if request.int8 and request.fp16:
        raise UserError("--int8 and --fp16 are two different precisions; choose one.", exit_code=2)
    if request.int8 and request.calib_data is None:
        raise UserError("--int8 needs calibration images: --calib-data DIR (a folder of images like the ones you "
                        "run) or --calib-data LABEL_FILE (also checks the accuracy).", exit_code=2)
    if not request.int8 and request.calib_data is not None:
        raise UserError("--calib-data is for --int8 only.", exit_code=2)
    if not (request.int8 or request.fp16) and (request.data_dir is not None or request.check_data is not None or
                                               request.min_agreement is not None):
        raise UserError("--check-data, --data-dir and --min-agreement are for --int8 and --fp16 only.", exit_code=2)


def export_checkpoint(request: ExportRequest,
                      on_float: Optional[Callable[[ExportResult], None]] = None) -> ExportResult:
    """Export `request.weights` to ONNX, verify it against PyTorch, and with `int8` quantize it.

    `on_float(result)` is called once the float32 model is verified (also when verification failed,
    before ExportFailed is raised), while its file still exists: the command prints its tables there.
    Raises UserError for bad requests (exit code 2 for usage errors), ExportFailed when a written model
    fails a check (the file is kept for inspection).
    """
    _check_request(request)
    import torch

    from openocr_cli.export.onnx_export import ExportOptions, choose_exporter, export_and_verify
    from openocr_cli.hub import get_entry, resolve_weights, sha256_file
    from openocr_cli.inference.backends.onnx_metadata import build_metadata
    from openocr_cli.inference.backends.torch_backend import TorchBackend, load_detector
    from openocr_cli.inference.postprocess_sources import from_saved_config
    from openocr_cli.inference.predictor import Predictor

    _check_int8_request(request)
    opset = request.opset if request.opset is not None else (INT8_OPSET if request.int8 else DEFAULT_OPSET)
    choose_exporter(request.exporter, opset)  # refuse an impossible exporter/opset pair before any work
    weights = str(request.weights)  # a Path works too
    inference = InferenceOptions(weights=weights, config=request.config, overrides=tuple(request.overrides),
                                 postprocess=request.postprocess, non_strict=request.non_strict, fuse=request.fuse,
                                 origin=request.origin)
    cfg = ConfigLayers.load(inference).cfg
    post_layers = PostprocessLayers(inference, cfg)  # a bad --postprocess fails before the export
    options = ExportOptions(opset=opset, dynamic=request.dynamic, size=request.size or DEFAULT_SIZE,
                            fp16=request.fp16, exporter=request.exporter)
    path = output_path(request)
    _refuse_existing(path, request.overwrite)
    calibration = check = None
    if request.int8:
        calibration = load_calibration(Path(request.calib_data), _path(request.data_dir), request.calib_images, cfg)
        check = load_check_set(_path(request.check_data), calibration, _path(request.data_dir), cfg)
    elif request.fp16 and request.check_data is not None:
        check = load_check_set(_path(request.check_data), None, _path(request.data_dir), cfg)

    entry = get_entry(weights) if not Path(weights).expanduser().is_file() else None
    if (entry is not None and entry.format == "onnx") or weights.lower().endswith(".onnx"):
        raise UserError(f"--weights {weights} is already an ONNX model; export needs a PyTorch checkpoint (.pth).")
    source = resolve_weights(weights)
    model, loaded = load_detector(source, cfg.get("Architecture"), strict=not request.non_strict, fuse=request.fuse)

    # the metadata carries the values predict/eval would use: config < checkpoint (unless --config is
    # explicit) < --postprocess < -o
    post, _ = post_layers.resolve((CHECKPOINT_SOURCE, from_saved_config(loaded.saved_config)),
                                  note_model_values=False)
    normalizer, norm = resolve_normalizer(inference, cfg)
    metadata = build_metadata(mean=norm["mean"].value, std=norm["std"].value, postprocess=dataclasses.asdict(post),
                              resize=cfgmod.resize_params(cfg), source_name=source.name,
                              source_sha256=sha256_file(source), version=__version__, fused=request.fuse,
                              fp16=request.fp16)
    with tempfile.TemporaryDirectory(prefix="openocr-det-export-") as tmp:
        float_path = Path(tmp) / path.with_stem("float32").name if calibration is not None else path
        log.info(f"exporting {source} to {'float32, then int8, ' if calibration is not None else ''}{path} ...")
        report = export_and_verify(model, float_path, options, metadata, normalizer, request.tolerance)
        result = ExportResult(path, source, options, request.fuse, metadata, report,
                              float_path=path if calibration is None else None)
        if on_float is not None:
            on_float(result)
        if not report.ok:
            kept = path if calibration is None else float_kept_path(path)
            if kept != float_path:  # the temporary float32 file is kept for inspection
                _keep_copy(float_path, kept)
            result.float_path = kept
            raise ExportFailed(_verification_message(report, kept), result)
        if calibration is not None:
            # a static model takes exactly its size, as predict then resizes every image
            resize = ResizeSpec(image_shape=options.size) if not request.dynamic else \
                ResizeSpec.from_params(cfgmod.resize_params(cfg))
            from openocr_cli.evaluation.guard import DEFAULT_MIN_AGREEMENT

            min_agreement = DEFAULT_MIN_AGREEMENT if request.min_agreement is None else request.min_agreement
            stages = Predictor(TorchBackend(model, torch.device("cpu")), resize, normalizer, post)
            checker = Checker(check, stages, request.max_drop, min_agreement)
            result.int8 = quantize_export(float_path, path, calibration, checker)
            message = int8_failure(result.int8)
            if message is not None:
                raise ExportFailed(message, result)
        elif check is not None:
            result.fp16_check = _check_fp16(request, cfg, model, path, check, normalizer, post)
            if not result.fp16_check.ok:
                raise ExportFailed(f"the fp16 model failed the accuracy check against float32: "
                                   f"{result.fp16_check.reason}. {path} was kept for inspection; do not use it "
                                   "(export without --fp16 for a float32 model).", result)
    return result


def _check_fp16(request: ExportRequest, cfg: dict, model, path: Path, check, normalizer, post):
    """The fp16 file (onnxruntime or OpenVINO, by suffix) against the float32 PyTorch model on the check images,
    judged by the int8 guard's rule (evaluation/guard.py)."""
    import torch

    from openocr_cli.evaluation.guard import DEFAULT_MIN_AGREEMENT, judge, run_model
    from openocr_cli.inference.backends.torch_backend import TorchBackend
    from openocr_cli.inference.predictor import Predictor

    resize = ResizeSpec(image_shape=request.size or DEFAULT_SIZE) if not request.dynamic else \
        ResizeSpec.from_params(cfgmod.resize_params(cfg))
    min_agreement = DEFAULT_MIN_AGREEMENT if request.min_agreement is None else request.min_agreement
    stages = Predictor(TorchBackend(model, torch.device("cpu")), resize, normalizer, post)
    checker = Checker(check, stages, request.max_drop, min_agreement)
    try:
        reference = run_model(stages, check.images, check.samples)
    except ValueError as exc:  # an unreadable check image
        raise UserError(f"a check image could not be read: {exc}") from None
    return judge(reference, checker.run(path), request.max_drop, min_agreement, "fp16")


def _path(value) -> Optional[Path]:
    return None if value is None else Path(value)


def _keep_copy(source: Path, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {target.parent}: {exc.strerror}. Choose another --output.") \
            from exc
    if target.suffix.lower() == ".xml":
        from openocr_cli.export.openvino_export import copy_ir

        copy_ir(source, target)
        return
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _verification_message(report: ExportReport, kept: Path) -> str:
    worst = max(report.rows, key=lambda r: r.max_abs)
    return (f"verification failed: {report.runtime} and PyTorch differ by up to {worst.max_abs:.3g} "
            f"(at {worst.batch}x3x{worst.height}x{worst.width}), more than the tolerance "
            f"{report.tolerance:g}. The exported file {kept} was kept for inspection; do not use it "
            "as is (try another --opset, --no-fuse, or without --fp16).")
