"""`openocr-det export`: a checkpoint -> a verified ONNX file with self-describing metadata.

The run itself (checks, loading, metadata, export, verification, int8) is export/run.py; this
module turns the flags into an ExportRequest and prints the tables of the result.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from openocr_cli.cli.options import (
    DEFAULT_WEIGHTS,
    ConfigPath,
    NonStrict,
    Overrides,
    PostprocessFile,
    Weights,
    float_option,
)
from openocr_cli.cli.ui import console, table
from openocr_cli.constants import DEFAULT_OPSET, INT8_OPSET
from openocr_cli.data.resize import MAX_SIDE
from openocr_cli.export.run import INT8_NAME, ExportFailed, ExportRequest, export_checkpoint

if TYPE_CHECKING:
    from openocr_cli.export.run import ExportResult, Int8Export


class Format(str, Enum):
    onnx = "onnx"
    openvino = "openvino"


class Exporter(str, Enum):
    auto = "auto"
    torchscript = "torchscript"
    dynamo = "dynamo"


def _size(value: Optional[str]) -> Optional[tuple[int, int]]:
    """Typer callback: '640x960' -> (640, 960); both sides multiples of 32 from 32 to MAX_SIDE."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", value)
    if match is None:
        raise typer.BadParameter(f"'{value}' is not HEIGHTxWIDTH (for example 960x960).")
    h, w = int(match.group(1)), int(match.group(2))
    if not (32 <= h <= MAX_SIDE and 32 <= w <= MAX_SIDE) or h % 32 or w % 32:
        raise typer.BadParameter(f"{h}x{w}: both sides must be multiples of 32 (the network's stride) from 32 to "
                                 f"{MAX_SIDE}.")
    return h, w


def export(
    weights: Weights = DEFAULT_WEIGHTS,
    output: Annotated[Optional[Path], typer.Option(
        "--output",
        help="File to write (default: export_det/det_model.onnx, or det_model.xml with --format openvino, in the "
             "folder of the weights file, or in ./output/export_det for a model name).", show_default=False)] = None,
    format: Annotated[Format, typer.Option(
        "--format", case_sensitive=False,
        help="onnx: one .onnx file (onnxruntime, OpenVINO, any ONNX runtime); openvino: an OpenVINO IR, .xml "
             "with its .bin beside it (predict --backend openvino), needs the openvino extra.")] = Format.onnx,
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
    tolerance: Annotated[Optional[float], float_option(
        "--tolerance", min=0.0,
        help="Largest accepted difference between onnxruntime and PyTorch probabilities "
             "(default 1e-4, 2e-2 with --fp16).", show_default=False)] = None,
    int8: Annotated[bool, typer.Option(
        "--int8", help="Also quantize to int8 and write that model instead (default name "
                       f"{INT8_NAME}, .xml with --format openvino): onnxruntime's static QDQ, or NNCF with "
                       "--format openvino; needs --calib-data. The int8 model is checked against float32 on the "
                       "check images (README: int8 accuracy guard).")] = False,
    calib_data: Annotated[Optional[Path], typer.Option(
        "--calib-data", metavar="DIR|LABEL_FILE",
        help="Calibration images for --int8: a folder, or a label file (then also the default --check-data).",
        show_default=False)] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Folder the --calib-data label paths are relative to (config default: "
                           "Eval.dataset.data_dir).", show_default=False)] = None,
    calib_images: Annotated[int, typer.Option(
        "--calib-images", min=1, help="Calibration images used, spread evenly over --calib-data.")] = 64,
    check_data: Annotated[Optional[Path], typer.Option(
        "--check-data", metavar="LABEL_FILE|DIR",
        help="Images the int8 (or --fp16) model is checked on against float32 before the file is kept: a label "
             "file (agreement and the hmean drop with a bootstrap interval) or a folder (agreement only). Default "
             "with --int8: --calib-data; --fp16 is checked only when this is given.",
        show_default=False)] = None,
    max_drop: Annotated[float, float_option(
        "--max-drop", min=0.0,
        help="Largest accepted hmean loss of the int8 model on labelled check images, in points (0.5 = 0.005 "
             "hmean). A failed check keeps stages of the network in float32, measured one by one, until it "
             "passes; else exit 1 keeping the closest attempt.")] = 0.5,
    min_agreement: Annotated[Optional[float], float_option(
        "--min-agreement", min=0.0, max=1.0,
        help="Agreement (hmean of int8 boxes against float32 boxes) an int8 model needs when labels cannot decide: "
             "no labels, or too few to resolve --max-drop (default 0.95).", show_default=False)] = None,
    config: ConfigPath = None,
    overrides: Overrides = None,
    non_strict: NonStrict = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a file already at --output (an export never replaces one otherwise).")] = False,
    postprocess: PostprocessFile = None,
) -> None:
    """Export a checkpoint to ONNX (or an OpenVINO IR) and verify it against PyTorch.

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

      openocr-det export -w best.pth --format openvino --int8 --calib-data calib_imgs/ --check-data val_label.txt

    With --int8, the float32 model is exported and verified first, then quantized with calibration images \
preprocessed exactly as predict feeds them, and checked against float32 on the check images; a table gives \
file size, agreement, hmean drop, ms per image and the decision of every attempt.
    """
    request = ExportRequest(
        weights=weights, output=output, format=format.value, opset=opset, fuse=fuse, dynamic=dynamic, size=size,
        fp16=fp16, exporter=exporter.value, tolerance=tolerance, int8=int8, calib_data=calib_data, data_dir=data_dir,
        calib_images=calib_images, check_data=check_data, max_drop=max_drop, min_agreement=min_agreement,
        config=config, overrides=tuple(overrides or ()), postprocess=postprocess, non_strict=non_strict,
        overwrite=overwrite)
    try:
        result = export_checkpoint(request, on_float=lambda partial: _print(partial, kept=not int8))
    except ExportFailed as exc:
        if exc.result.int8 is not None:
            _print_int8(exc.result.int8)
        if exc.result.fp16_check is not None:
            _print_fp16(exc.result.fp16_check, check_data)
        raise
    if result.fp16_check is not None:
        _print_fp16(result.fp16_check, check_data)
    if result.int8 is not None:
        _print_int8(result.int8)
        console.print(f"Exported int8 model: {result.path}")
    else:
        console.print(f"Exported and verified: {result.path}")


def _print(result: ExportResult, kept: bool = True) -> None:
    """The float32 export's tables; `kept` False for the temporary float32 model of an int8 run."""
    report, options = result.report, result.options
    shape = "batch x 3 x height x width" if options.dynamic else f"batch x 3 x {options.size[0]} x {options.size[1]}"
    console.print(table("export" if kept else "float32 export (quantized next)", ["item", "value"], [
        ("file", report.path if kept else "temporary"),
        ("format", "OpenVINO IR (.xml, weights in the .bin beside it)" if report.runtime == "OpenVINO" else "ONNX"),
        ("size", f"{report.size / 1e6:.1f} MB"),
        ("exporter", f"{report.exporter} (torch.onnx.export, dynamo={report.exporter == 'dynamo'})"),
        ("opset", report.opset),
        ("input", f"input: float32 {shape}"),
        ("output", "output: float32 probability map, batch x 1 x H x W"),
        ("fused", "yes" if result.fused else "no"),
        ("weights", "float16" if options.fp16 else "float32"),
        ("source sha256", result.metadata["source_sha256"][:16] + "..."),
        ("export time", f"{report.seconds:.1f} s"),
    ]))
    console.print(table(f"{report.runtime} vs PyTorch (tolerance {report.tolerance:g})",
                        ["input", "max abs diff", "mean abs diff", "ok"],
                        [(f"{r.batch}x3x{r.height}x{r.width}", f"{r.max_abs:.2e}", f"{r.mean_abs:.2e}",
                          "yes" if r.max_abs <= report.tolerance else "NO") for r in report.rows]))


def _print_fp16(verdict, source) -> None:
    """--fp16 --check-data: the fp16 file against the float32 model, decided by the int8 guard's rule."""
    drop = "-" if verdict.drop is None else \
        f"{verdict.drop:.2f} [{verdict.interval[0]:.2f}, {verdict.interval[1]:.2f}]"
    hmean = "-" if verdict.hmean is None else f"{verdict.hmean:.4f}"
    console.print(table(f"fp16 accuracy check on {source}", ["hmean", "drop [95% CI]", "agreement", "max |dp|",
                                                               "decision"],
                        [(hmean, drop, f"{verdict.agreement['hmean']:.4f}", f"{verdict.max_prob_diff:.3f}",
                          verdict.decision)]))
    console.print(f"decision: {verdict.reason}.", markup=False)


def _print_int8(int8: Int8Export) -> None:
    """One row per model: float32, then every int8 attempt with what it kept float, measured and decided."""
    def number(value: Optional[float], digits: int = 4) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    reference = int8.reference
    rows = [("float32", f"{int8.float_size / 1e6:.1f} MB", number(reference.hmean), "", "1.0000", "",
             f"{reference.ms_per_image:.1f}", "")]
    for attempt in int8.attempts:
        v = attempt.verdict
        drop = "-" if v.drop is None else f"{v.drop:.2f} [{v.interval[0]:.2f}, {v.interval[1]:.2f}]"
        kept = attempt is int8.chosen
        name = attempt.label + (" (kept)" if kept and len(int8.attempts) > 1 else "")
        rows.append((name, f"{int8.size / 1e6:.1f} MB" if kept else "",
                     number(v.hmean), drop, number(v.agreement["hmean"]), f"{v.max_prob_diff:.3f}",
                     f"{v.ms_per_image:.1f}", v.decision))
    labels = "labelled" if int8.check.samples is not None else "unlabelled"
    title = (f"int8 accuracy check: {len(int8.check.images)} {labels} image(s) from {int8.check.source}, "
             f"--max-drop {int8.max_drop:g}, --min-agreement {int8.min_agreement:g}")
    console.print(table(title, ["model", "size", "hmean", "drop [95% CI]", "agreement", "max |dp|", "ms/img",
                                "decision"], rows))
    console.print(f"decision: {int8.chosen.verdict.reason}.", markup=False)
