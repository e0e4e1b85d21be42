"""`openocr-det export`: a checkpoint -> a verified ONNX file with self-describing metadata."""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from openocr_cli import __version__
from openocr_cli import config as cfgmod
from openocr_cli.commands.common import DEFAULT_WEIGHTS, ConfigPath, NonStrict, Overrides, PostprocessFile, Weights
from openocr_cli.commands.export_int8 import INT8_NAME, Scorer, load_calibration, run_int8
from openocr_cli.constants import DEFAULT_OPSET, INT8_OPSET
from openocr_cli.data.resize import ResizeSpec
from openocr_cli.engine.resolve import CHECKPOINT_SOURCE, InferenceOptions, resolve_normalizer, resolve_postprocess
from openocr_cli.errors import UserError
from openocr_cli.hub import sha256_file
from openocr_cli.postprocess_sources import from_saved_config
from openocr_cli.ui import console, err_console, table

if TYPE_CHECKING:  # torch and onnx are imported when an export runs, not by `--help`
    from openocr_cli.engine.exporter import ExportOptions, ExportReport

EXPORT_DIR, EXPORT_NAME = "export_det", "det_model.onnx"


class Exporter(str, Enum):
    auto = "auto"
    torchscript = "torchscript"
    dynamo = "dynamo"


def _size(value: Optional[str]) -> Optional[tuple[int, int]]:
    """Typer callback: '640x960' -> (640, 960); both sides positive multiples of 32."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", value)
    if match is None:
        raise typer.BadParameter(f"'{value}' is not HEIGHTxWIDTH (for example 960x960).")
    h, w = int(match.group(1)), int(match.group(2))
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise typer.BadParameter(f"{h}x{w}: both sides must be multiples of 32 (the network's stride).")
    return h, w


def default_output(weights: str) -> Path:
    """OpenOCR's place: <folder of the weights file>/export_det/det_model.onnx; ./output/... for a model name."""
    local = Path(weights).expanduser()
    folder = local.parent if local.is_file() else Path("output")
    return folder / EXPORT_DIR / EXPORT_NAME


def export(
    weights: Weights = DEFAULT_WEIGHTS,
    output: Annotated[Optional[Path], typer.Option(
        "--output",
        help="ONNX file to write (default: export_det/det_model.onnx in the folder of the weights file, "
             "or ./output/export_det/det_model.onnx for a model name).", show_default=False)] = None,
    opset: Annotated[Optional[int], typer.Option(
        "--opset", min=7, help=f"ONNX opset to write (default {DEFAULT_OPSET}; {INT8_OPSET} with --int8, where GELU "
                               "is one node that stays float between int8 convolutions).", show_default=False)] = None,
    fuse: Annotated[bool, typer.Option(
        "--fuse/--no-fuse", help="Re-parameterise the backbone first (faster, same output within 1e-6).")] = True,
    dynamic: Annotated[bool, typer.Option(
        "--dynamic/--static",
        help="Dynamic batch, height and width, or a fixed --size (the batch stays dynamic).")] = True,
    size: Annotated[Optional[str], typer.Option(
        "--size", callback=_size, metavar="HxW",
        help="Input size for --static, multiples of 32 (default 960x960); with --dynamic only the tracing example.",
        show_default=False)] = None,
    fp16: Annotated[bool, typer.Option(
        "--fp16", help="Store float16 weights (half the size); input and output stay float32.")] = False,
    exporter: Annotated[Exporter, typer.Option(
        "--exporter", case_sensitive=False,
        help="auto: the TorchScript exporter for opset 20 or lower, else the dynamo (torch.export) one, "
             "which needs opset 18 or newer.")] = Exporter.auto,
    tolerance: Annotated[Optional[float], typer.Option(
        "--tolerance", min=0.0,
        help="Largest accepted difference between onnxruntime and PyTorch probabilities "
             "(default 1e-4, 2e-2 with --fp16).", show_default=False)] = None,
    int8: Annotated[bool, typer.Option(
        "--int8", help="Also quantize to int8 (static QDQ, per-channel weights, onnxruntime's tools) and write that "
                       f"model instead (default name {INT8_NAME}); needs --calib-data.")] = False,
    calib_data: Annotated[Optional[Path], typer.Option(
        "--calib-data", metavar="DIR|LABEL_FILE",
        help="Calibration images for --int8: a folder, or a label file (then the int8 and float32 hmean on it are "
             "compared, and --max-drop applies).", show_default=False)] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Folder the --calib-data label paths are relative to (config default: "
                           "Eval.dataset.data_dir).", show_default=False)] = None,
    calib_images: Annotated[int, typer.Option(
        "--calib-images", min=1, help="Calibration images used, spread evenly over --calib-data.")] = 64,
    max_drop: Annotated[float, typer.Option(
        "--max-drop", min=0.0,
        help="Largest accepted hmean loss of the int8 model, in points (0.5 = 0.005 hmean). Above it the nodes "
             "quantization disturbs most are kept in float32, a few more each round (4 rounds at most), "
             "then exit 1 keeping the last file.")] = 0.5,
    config: ConfigPath = None,
    override: Overrides = None,
    non_strict: NonStrict = False,
    postprocess_file: PostprocessFile = None,
) -> None:
    """Export a checkpoint to ONNX and verify it against PyTorch.

    The file has one input named input (float32 N x 3 x H x W, BGR normalised with the ImageNet mean/std, H and W \
multiples of 32) and one output named output (the N x 1 x H x W probability map), the names OpenOCR's released \
openocr_det_model.onnx uses, so either file runs with predict --backend onnx. Normalisation, post-processing \
settings (the config's, the checkpoint's, then --postprocess, e.g. the JSON of eval --tune), the checkpoint's \
sha256 and the openocr-det version are stored in the model's metadata; the onnx backend uses those settings.

    After writing, onnxruntime and PyTorch run on the same preprocessed images at several sizes and batch 2, and a \
table of differences is printed; above --tolerance the command exits 1 and keeps the file for inspection.

    Examples:

      openocr-det export --weights output/det_repvit_db/best.pth

      openocr-det export -w best.pth --output det.onnx --static --size 640x640 --fp16

      openocr-det export -w best.pth --postprocess tuned.json

      openocr-det export -w best.pth --int8 --calib-data val_label.txt --data-dir data/ --output det_int8.onnx

    With --int8, the float32 model is exported and verified first, then quantized with calibration images \
preprocessed exactly as predict feeds them; a table gives file size, hmean and ms per image of both models.
    """
    if size is not None and dynamic:
        err_console.print(f"note: --size {size[0]}x{size[1]} is only the tracing example with --dynamic.")
    from openocr_cli.engine.backends import load_detector
    from openocr_cli.engine.exporter import ExportOptions, choose_exporter, export_and_verify
    from openocr_cli.engine.onnx_metadata import build_metadata

    if int8 and fp16:
        raise UserError("--int8 and --fp16 are two different precisions; choose one.", exit_code=2)
    if int8 and calib_data is None:
        raise UserError("--int8 needs calibration images: --calib-data DIR (a folder of images like the ones you "
                        "run) or --calib-data LABEL_FILE (also checks the accuracy).", exit_code=2)
    if not int8 and (calib_data is not None or data_dir is not None):
        raise UserError("--calib-data and --data-dir are for --int8 only.", exit_code=2)
    opset = opset if opset is not None else (INT8_OPSET if int8 else DEFAULT_OPSET)
    choose_exporter(exporter.value, opset)  # refuse an impossible exporter/opset pair before any work
    inference = InferenceOptions(weights=weights, config=config, overrides=tuple(override or ()),
                                 postprocess=postprocess_file, non_strict=non_strict, fuse=fuse)
    cfg = inference.load_config()
    resolve_postprocess(inference, cfg, note_model_values=False)  # a bad --postprocess fails before the export
    options = ExportOptions(opset=opset, dynamic=dynamic, size=size or (960, 960), fp16=fp16, exporter=exporter.value)
    name = INT8_NAME if int8 else EXPORT_NAME
    path = output if output is not None else default_output(weights).with_name(name)
    if path.suffix.lower() != ".onnx":
        path = path / name if path.is_dir() else path
    calibration = load_calibration(calib_data, data_dir, calib_images, cfg) if int8 else None

    from openocr_cli.hub import get_entry, resolve_weights

    entry = get_entry(weights) if not Path(weights).expanduser().is_file() else None
    if (entry is not None and entry.format == "onnx") or weights.lower().endswith(".onnx"):
        raise UserError(f"--weights {weights} is already an ONNX model; export needs a PyTorch checkpoint (.pth).")
    source = resolve_weights(weights)
    model, loaded = load_detector(source, cfg.get("Architecture"), strict=not non_strict, fuse=fuse)

    # the metadata carries the values predict/eval would use: config < checkpoint (unless --config is
    # explicit) < --postprocess < -o
    post, _ = resolve_postprocess(inference, cfg, (CHECKPOINT_SOURCE, from_saved_config(loaded.saved_config)),
                                  note_model_values=False)
    normalizer, norm = resolve_normalizer(inference, cfg)
    postprocess = dataclasses.asdict(post)
    metadata = build_metadata(mean=norm["mean"].value, std=norm["std"].value, postprocess=postprocess,
                              resize=cfgmod.resize_params(cfg), source_name=source.name,
                              source_sha256=sha256_file(source), version=__version__, fused=fuse, fp16=fp16)
    with tempfile.TemporaryDirectory(prefix="openocr-det-export-") as tmp:
        float_path = Path(tmp) / EXPORT_NAME if int8 else path
        err_console.print(f"exporting {source} to {'float32, then int8, ' if int8 else ''}{path} ...")
        report = export_and_verify(model, float_path, options, metadata, normalizer, tolerance)
        _print(report, options, fuse, metadata["source_sha256"], kept=calibration is None)
        kept = path if calibration is None else path.with_name(f"{path.stem}.float32.onnx")
        if not report.ok and kept != float_path:  # the temporary float32 file is kept for inspection
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(float_path, kept)
        _check(report, kept)
        if calibration is not None:
            # a static model takes exactly its size, as predict then resizes every image
            resize = ResizeSpec(image_shape=options.size) if not dynamic else \
                ResizeSpec.from_params(cfgmod.resize_params(cfg))
            scorer = Scorer(calibration, resize, normalizer, post)
            run_int8(float_path, path, calibration, scorer, max_drop)
            return
    console.print(f"Exported and verified: {path}")


def _check(report: ExportReport, path: Path) -> None:
    if not report.ok:
        worst = max(report.rows, key=lambda r: r.max_abs)
        raise UserError(f"verification failed: onnxruntime and PyTorch differ by up to {worst.max_abs:.3g} "
                        f"(at {worst.batch}x3x{worst.height}x{worst.width}), more than the tolerance "
                        f"{report.tolerance:g}. The exported file {path} was kept for inspection; do not use it "
                        "as is (try another --opset, --no-fuse, or without --fp16).")


def _print(report: ExportReport, options: ExportOptions, fused: bool, sha: str, kept: bool = True) -> None:
    shape = "batch x 3 x height x width" if options.dynamic else f"batch x 3 x {options.size[0]} x {options.size[1]}"
    console.print(table("export" if kept else "float32 export (quantized next)", ["item", "value"], [
        ("file", report.path if kept else "temporary"),
        ("size", f"{report.path.stat().st_size / 1e6:.1f} MB"),
        ("exporter", f"{report.exporter} (torch.onnx.export, dynamo={report.exporter == 'dynamo'})"),
        ("opset", report.opset),
        ("input", f"input: float32 {shape}"),
        ("output", "output: float32 probability map, batch x 1 x H x W"),
        ("fused", "yes" if fused else "no"),
        ("weights", "float16" if options.fp16 else "float32"),
        ("source sha256", sha[:16] + "..."),
        ("export time", f"{report.seconds:.1f} s"),
    ]))
    console.print(table(f"onnxruntime vs PyTorch (tolerance {report.tolerance:g})",
                        ["input", "max abs diff", "mean abs diff", "ok"],
                        [(f"{r.batch}x3x{r.height}x{r.width}", f"{r.max_abs:.2e}", f"{r.mean_abs:.2e}",
                          "yes" if r.max_abs <= report.tolerance else "NO") for r in report.rows]))
