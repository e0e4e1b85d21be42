"""An export run: a checkpoint -> a verified float32 ONNX file, optionally quantized to int8 after that.

What `openocr-det export` does, for any caller: plain values in (ExportRequest), result objects out
(ExportResult, with the verification report and the int8 attempts), nothing printed. Notes go to the
logger; the command shows the tables. A failure after files were written raises ExportFailed, a UserError
that carries what was written and measured (`result`), so a caller can still show or inspect it.

The float32 model of an int8 run is written to a temporary folder, verified, quantized with
calibration images that the float model's own Predictor preprocesses (so they are exactly what predict
feeds the network), and scored as `eval` would score it.

torch and onnx are imported when an export runs, not with this module (the CLI imports it for --help).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from openocr_cli import __version__
from openocr_cli import config as cfgmod
from openocr_cli.constants import DEFAULT_OPSET, INT8_OPSET
from openocr_cli.data.resize import Normalizer, ResizeSpec
from openocr_cli.engine.resolve import (
    CHECKPOINT_SOURCE,
    DEFAULT_WEIGHTS,
    InferenceOptions,
    resolve_normalizer,
    resolve_postprocess,
)
from openocr_cli.errors import UserError
from openocr_cli.fileio import atomic_path

if TYPE_CHECKING:
    from openocr_cli.data.labels import LabelSample
    from openocr_cli.engine.exporter import ExportOptions, ExportReport
    from openocr_cli.engine.predictor import Predictor
    from openocr_cli.engine.quantize import Attempt, QuantizeResult
    from openocr_cli.postprocess import DBPostProcess

log = logging.getLogger(__name__)

EXPORT_DIR, EXPORT_NAME = "export_det", "det_model.onnx"
INT8_NAME = "det_model_int8.onnx"
DEFAULT_SIZE = (960, 960)


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """What to export and how; None means "the default" (as for the command's flags of the same names).

    `size` is the static input size (default 960x960), or only the tracing example when `dynamic`.
    `opset` defaults to DEFAULT_OPSET, INT8_OPSET with `int8`. `calib_data` is a folder of images or a
    label file (then the int8 and float32 hmean are compared and `max_drop`, in points, applies);
    `data_dir` is the folder its label paths are relative to (default: the config's Eval.dataset.data_dir).
    """

    weights: str = DEFAULT_WEIGHTS
    output: Optional[Path] = None
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
    max_drop: float = 0.5
    config: Optional[Path] = None
    overrides: tuple[str, ...] = ()
    postprocess: Union[Path, Mapping[str, float], None] = None
    non_strict: bool = False
    origin: str = "flag"  # how explicit values are named in recorded sources (InferenceOptions.origin)


@dataclass
class Calibration:
    """Where the calibration images come from; `samples` are the labels for the accuracy check (or None)."""

    source: Path
    images: list[str]
    samples: Optional[list[LabelSample]]


@dataclass
class Int8Export:
    """The int8 step: every attempt and its scores (`quantize`), the file left at `path` and its sizes."""

    path: Path
    calibration: Calibration
    quantize: QuantizeResult
    images: int  # calibration images read
    float_size: int  # bytes of the float32 model it was quantized from
    size: int  # bytes of the int8 file
    quantized_nodes: int  # QuantizeLinear/DequantizeLinear nodes: 0 means onnxruntime quantized nothing
    max_drop: float

    @property
    def ok(self) -> bool:
        return self.quantized_nodes > 0 and self.quantize.ok


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
    """Where the model goes: `output` (a folder gets the default file name), else default_output."""
    name = INT8_NAME if request.int8 else EXPORT_NAME
    path = Path(request.output) if request.output is not None else default_output(str(request.weights)).with_name(name)
    if path.suffix.lower() != ".onnx":
        path = path / name if path.is_dir() else path
    return path


def float_kept_path(path: Path) -> Path:
    """Where an int8 run keeps its float32 model when verification failed: <stem>.float32.onnx beside `path`."""
    return path.with_name(f"{path.stem}.float32.onnx")


def _check_request(request: ExportRequest) -> None:
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
    if not request.int8 and (request.calib_data is not None or request.data_dir is not None):
        raise UserError("--calib-data and --data-dir are for --int8 only.", exit_code=2)


def export_checkpoint(request: ExportRequest,
                      on_float: Optional[Callable[[ExportResult], None]] = None) -> ExportResult:
    """Export `request.weights` to ONNX, verify it against PyTorch, and with `int8` quantize it.

    `on_float(result)` is called once the float32 model is verified (also when verification failed,
    before ExportFailed is raised), while its file still exists: the command prints its tables there.
    Raises UserError for bad requests (exit code 2 for usage errors), ExportFailed when a written model
    fails a check (the file is kept for inspection).
    """
    _check_request(request)
    from openocr_cli.engine.backends import load_detector
    from openocr_cli.engine.exporter import ExportOptions, choose_exporter, export_and_verify
    from openocr_cli.engine.onnx_metadata import build_metadata
    from openocr_cli.hub import get_entry, resolve_weights, sha256_file
    from openocr_cli.postprocess_sources import from_saved_config

    _check_int8_request(request)
    opset = request.opset if request.opset is not None else (INT8_OPSET if request.int8 else DEFAULT_OPSET)
    choose_exporter(request.exporter, opset)  # refuse an impossible exporter/opset pair before any work
    weights = str(request.weights)  # a Path works too
    inference = InferenceOptions(weights=weights, config=request.config, overrides=tuple(request.overrides),
                                 postprocess=request.postprocess, non_strict=request.non_strict, fuse=request.fuse,
                                 origin=request.origin)
    cfg = inference.load_config()
    resolve_postprocess(inference, cfg, note_model_values=False)  # a bad --postprocess fails before the export
    options = ExportOptions(opset=opset, dynamic=request.dynamic, size=request.size or DEFAULT_SIZE,
                            fp16=request.fp16, exporter=request.exporter)
    path = output_path(request)
    calibration = load_calibration(Path(request.calib_data), _path(request.data_dir), request.calib_images, cfg) \
        if request.int8 else None

    entry = get_entry(weights) if not Path(weights).expanduser().is_file() else None
    if (entry is not None and entry.format == "onnx") or weights.lower().endswith(".onnx"):
        raise UserError(f"--weights {weights} is already an ONNX model; export needs a PyTorch checkpoint (.pth).")
    source = resolve_weights(weights)
    model, loaded = load_detector(source, cfg.get("Architecture"), strict=not request.non_strict, fuse=request.fuse)

    # the metadata carries the values predict/eval would use: config < checkpoint (unless --config is
    # explicit) < --postprocess < -o
    post, _ = resolve_postprocess(inference, cfg, (CHECKPOINT_SOURCE, from_saved_config(loaded.saved_config)),
                                  note_model_values=False)
    normalizer, norm = resolve_normalizer(inference, cfg)
    metadata = build_metadata(mean=norm["mean"].value, std=norm["std"].value, postprocess=dataclasses.asdict(post),
                              resize=cfgmod.resize_params(cfg), source_name=source.name,
                              source_sha256=sha256_file(source), version=__version__, fused=request.fuse,
                              fp16=request.fp16)
    with tempfile.TemporaryDirectory(prefix="openocr-det-export-") as tmp:
        float_path = Path(tmp) / EXPORT_NAME if calibration is not None else path
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
            scorer = Scorer(calibration, resize, normalizer, post)
            result.int8 = quantize_export(float_path, path, calibration, scorer, request.max_drop)
            message = int8_failure(result.int8)
            if message is not None:
                raise ExportFailed(message, result)
    return result


def _path(value) -> Optional[Path]:
    return None if value is None else Path(value)


def _keep_copy(source: Path, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {target.parent}: {exc.strerror}. Choose another --output.") \
            from exc
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _verification_message(report: ExportReport, kept: Path) -> str:
    worst = max(report.rows, key=lambda r: r.max_abs)
    return (f"verification failed: onnxruntime and PyTorch differ by up to {worst.max_abs:.3g} "
            f"(at {worst.batch}x3x{worst.height}x{worst.width}), more than the tolerance "
            f"{report.tolerance:g}. The exported file {kept} was kept for inspection; do not use it "
            "as is (try another --opset, --no-fuse, or without --fp16).")


# ----------------------------------------------------------------------------- int8


def load_calibration(calib_data: Path, data_dir: Optional[Path], count: int, cfg: dict) -> Calibration:
    """A folder of images, or a label file whose images (under `data_dir`, as eval resolves them) are both
    the calibration pool and the accuracy-check set."""
    from openocr_cli.data.images import collect_images, is_image_name
    from openocr_cli.data.labels import labelled_data, load_labels
    from openocr_cli.engine.quantize import pick_evenly

    if calib_data.is_dir():
        if data_dir is not None:
            log.info("note: --data-dir is only used with a label file as --calib-data.")
        return Calibration(calib_data, pick_evenly(collect_images([str(calib_data)]), count), None)
    if not calib_data.is_file():
        raise UserError(f"--calib-data {calib_data} does not exist: pass a folder of images or a label file.",
                        exit_code=2)
    if is_image_name(calib_data.name):
        raise UserError(f"--calib-data {calib_data} is one image; pass the folder that holds the calibration "
                        "images (64 or more work best), or a label file.", exit_code=2)
    data_dir, files = labelled_data(cfg, "Eval", data_dir, [calib_data])  # as eval resolves label paths
    samples = load_labels(files, data_dir)
    if not samples:
        raise UserError(f"--calib-data {calib_data} lists no images.")
    return Calibration(calib_data, pick_evenly([str(s.image) for s in samples], count), samples)


class Scorer:
    """hmean (with labels) and inference ms per image of an ONNX file, through the same Predictor as eval."""

    def __init__(self, calibration: Calibration, resize: ResizeSpec, normalizer: Normalizer,
                 postprocess: DBPostProcess):
        self.calibration = calibration
        self.resize, self.normalizer, self.postprocess = resize, normalizer, postprocess

    def predictor(self, path: Path) -> Predictor:
        """The Predictor that runs the ONNX file `path` (CPU) with this export's preprocessing and post-processing."""
        from openocr_cli.engine.onnx_backend import OnnxBackend
        from openocr_cli.engine.predictor import Predictor

        return Predictor(OnnxBackend.load(path, device="cpu"), self.resize, self.normalizer, self.postprocess)

    def __call__(self, path: Path) -> tuple[Optional[float], float]:
        from openocr_cli.engine.evaluator import evaluate_model
        from openocr_cli.results import StageTimes

        predictor = self.predictor(path)
        list(predictor.run(self.calibration.images[:1]))  # warm-up: the first run of a session is slower
        samples = self.calibration.samples
        if samples is not None:
            result = evaluate_model(predictor, samples)
            return result.hmean, 1000.0 * result.seconds / max(result.images, 1)
        times = StageTimes()
        for item in predictor.run(self.calibration.images):
            times += item.times
        return None, times.ms_per_image()["inference"]


def _log_attempt(attempt: Attempt) -> None:
    kept = f", {len(attempt.float_nodes)} node(s) kept float" if attempt.float_nodes else ""
    hmean = "" if attempt.hmean is None else f": hmean {attempt.hmean:.4f}"
    log.info(f"int8 model{kept}{hmean}")


def quantize_export(float_path: Path, output: Path, calibration: Calibration, scorer: Scorer,
                    max_drop: float) -> Int8Export:
    """Quantize the verified float32 model into `output` (the accuracy guard of engine.quantize) and write its
    metadata: the float model's plus precision and a calibration summary. The checks are int8_failure's."""
    from openocr_cli.engine.onnx_metadata import read_metadata, write_metadata
    from openocr_cli.engine.quantize import PERCENTILE, calibration_tensors, quantize_with_guard, quantized_node_count

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {output.parent}: {exc.strerror}. Choose another --output.") from exc
    log.info(f"calibrating on {len(calibration.images)} image(s) from {calibration.source} ...")
    # preprocessed by the Predictor that runs the float model: exactly what predict feeds the network
    tensors = calibration_tensors(calibration.images, scorer.predictor(float_path))
    float_size = float_path.stat().st_size
    result = quantize_with_guard(float_path, output, tensors, scorer, max_drop, on_attempt=_log_attempt)
    final = result.final
    summary = {"images": len(tensors), "source": str(calibration.source), "method": f"Percentile {PERCENTILE}",
               "format": "QDQ", "activations": "uint8", "weights": "int8, per channel",
               "float_nodes": list(final.float_nodes), "hmean_float32": result.float_hmean,
               "hmean_int8": final.hmean, "max_drop_points": max_drop}
    metadata = {**read_metadata(float_path), "precision": "int8", "calibration": json.dumps(summary, sort_keys=True)}
    with atomic_path(output) as tmp:  # never a half-rewritten model at `output`
        shutil.copyfile(output, tmp)
        write_metadata(tmp, metadata)
    return Int8Export(output, calibration, result, len(tensors), float_size, output.stat().st_size,
                      quantized_node_count(output), max_drop)


def int8_failure(int8: Int8Export) -> Optional[str]:
    """Why the int8 model must not be used as is (None when it passed): nothing quantized, or accuracy lost."""
    if int8.quantized_nodes == 0:
        return (f"onnxruntime quantized no node of {int8.path}; the file is float32. Report this with the "
                "model's opset (--opset) and onnxruntime version.")
    result = int8.quantize
    if not result.ok:
        final = result.final
        drop = 100 * (result.float_hmean - final.hmean)
        return (f"the int8 model loses {drop:.2f} hmean points on {int8.calibration.source}, more than "
                f"--max-drop {int8.max_drop:g}, even with {len(final.float_nodes)} nodes kept in float32. "
                f"The last attempt was kept as {int8.path}; calibrate on images like the ones you run "
                "(--calib-data, more --calib-images), raise --max-drop, or use the float32 export.")
    return None

