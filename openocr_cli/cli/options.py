"""Options and set-up shared by the inference-side subcommands (predict, eval, benchmark)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from openocr_cli.cli.ui import err_console
from openocr_cli.data.labels import labelled_data  # noqa: F401 (the commands' name for it)
from openocr_cli.data.pdf import DEFAULT_PDF_DPI  # noqa: F401 (the commands' default for --pdf-dpi)
from openocr_cli.errors import UserError
from openocr_cli.fileio import atomic_write_text
from openocr_cli.inference.resolve import DEFAULT_ONNX_MODEL, DEFAULT_WEIGHTS, InferenceOptions  # noqa: F401 (re-exported


class ScoreMode(str, Enum):
    slow = "slow"
    fast = "fast"


class BoxType(str, Enum):
    quad = "quad"
    poly = "poly"


class LimitType(str, Enum):
    max = "max"
    min = "min"
    resize_long = "resize_long"


class BackendName(str, Enum):
    torch = "torch"
    onnx = "onnx"
    openvino = "openvino"



def _three_floats(value: Optional[str]) -> Optional[tuple[float, float, float]]:
    """Typer callback: '0.5,0.5,0.5' -> (0.5, 0.5, 0.5); anything else is a usage error."""
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != 3:
        raise typer.BadParameter(f"'{value}' is not three comma-separated numbers (e.g. 0.485,0.456,0.406).")
    return numbers  # type: ignore[return-value]

Weights = Annotated[str, typer.Option(
    "--weights", "-w",
    help="Checkpoint .pth (OpenOCR or ours) or a model name from `openocr-det download --list`; a .onnx / .xml "
         "file runs as --onnx-model / --openvino-model.")]
ConfigPath = Annotated[Optional[Path], typer.Option(
    "--config", "-c", help="OpenOCR-style YAML config (default: packaged repvit_db.yml).")]
Overrides = Annotated[Optional[list[str]], typer.Option(
    "--override", "-o",
    help="Config override Key.sub=value (repeatable), e.g. -o PostProcess.box_thresh=0.5.")]
Device = Annotated[Optional[str], typer.Option(
    "--device", help="cpu, cuda or cuda:N (default: cuda if available); the openvino backend takes cpu (default) or "
                     "gpu / gpu:N (Intel GPUs).")]
BatchSize = Annotated[int, typer.Option(
    "--batch-size", "-b", min=1, help="Images per forward pass (same-size images are batched).")]
Workers = Annotated[int, typer.Option("--workers", min=1, help="Threads decoding and resizing images.")]
Thresh = Annotated[Optional[float], typer.Option(
    "--thresh", min=0.0, max=1.0, help="Pixel threshold on the probability map (config default: 0.3).")]
BoxThresh = Annotated[Optional[float], typer.Option(
    "--box-thresh", min=0.0, max=1.0, help="Minimum box score (config default: 0.6).")]
UnclipRatio = Annotated[Optional[float], typer.Option(
    "--unclip-ratio", min=0.0, help="Box expansion ratio (config default: 1.5).")]
ScoreModeOpt = Annotated[Optional[ScoreMode], typer.Option(
    "--score-mode", case_sensitive=False,
    help="Box score: slow (polygon mean) or fast (box mean) (config default: slow).")]
BoxTypeOpt = Annotated[Optional[BoxType], typer.Option(
    "--box-type", case_sensitive=False, help="quad (4 points) or poly (polygons) (config default: quad).")]
LimitSide = Annotated[Optional[int], typer.Option(
    "--limit-side-len", min=32, help="Resize limit in pixels (config default: 960).")]
LimitTypeOpt = Annotated[Optional[LimitType], typer.Option(
    "--limit-type", case_sensitive=False,
    help="max: longest side <= limit; min: shortest side >= limit; resize_long: longest side = limit "
         "(config default: max).")]
NonStrict = Annotated[bool, typer.Option(
    "--non-strict", help="Load only the tensors that match the model and report the rest.")]
BackendOpt = Annotated[Optional[BackendName], typer.Option(
    "--backend", case_sensitive=False,
    help="torch runs the --weights checkpoint with PyTorch; onnx runs the --onnx-model file with onnxruntime; "
         "openvino runs the --openvino-model file with OpenVINO (same pre- and post-processing). Default: onnx "
         "when --onnx-model is given, openvino when --openvino-model is, else torch.")]
OnnxModel = Annotated[Optional[str], typer.Option(
    "--onnx-model",
    help="ONNX detector for --backend onnx: a file (ours, OpenOCR's openocr_det_model.onnx, a PaddleOCR det model) "
         "or the name repvit-onnx (the default).")]
OpenVinoModel = Annotated[Optional[str], typer.Option(
    "--openvino-model",
    help="Detector for --backend openvino (implies it): an OpenVINO IR .xml (its .bin beside it, as `export "
         "--format openvino` writes) or an .onnx file, run with OpenVINO (pip install 'openocr-det\\[openvino]').")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1,
    help="Threads per forward pass: onnxruntime's intra-op threads, OpenVINO's inference threads (CPU), or "
         "PyTorch's with the torch backend (default: the runtime's choice).")]
Mean = Annotated[Optional[str], typer.Option(
    "--mean", callback=_three_floats, metavar="C1,C2,C3",
    help="Normalisation mean, three comma-separated values in the model's channel order "
         "(default: the ONNX / OpenVINO model's metadata, else the config's ImageNet values).")]
PostprocessFile = Annotated[Optional[Path], typer.Option(
    "--postprocess", metavar="FILE",
    help="thresh / box_thresh / unclip_ratio from a JSON file: the `tuned` object `eval --tune --json` writes, "
         "or a flat object with those keys. Order, lowest first: config, the checkpoint's saved config or the "
         "ONNX metadata, this file, -o PostProcess.*, the --thresh/--box-thresh/--unclip-ratio flags.")]
Std = Annotated[Optional[str], typer.Option(
    "--std", callback=_three_floats, metavar="C1,C2,C3",
    help="Normalisation std, three comma-separated values (default: as --mean).")]
Tile = Annotated[Optional[str], typer.Option(
    "--tile", metavar="off|auto|N",
    help="Run large images as tiles at their own resolution, merging the tiles' probability maps before "
         "post-processing: auto (only images the resize shrinks so far that their smallest text found is under "
         "12 px), N (every image, tiles of at most N pixels, a multiple of 32), off (default: the normal resize).")]
TileOverlap = Annotated[Optional[int], typer.Option(
    "--tile-overlap", min=0, help="Pixels neighbouring tiles share (default 128: 64 px of context at each seam).")]
PdfDpi = Annotated[float, typer.Option(
    "--pdf-dpi", min=1, max=2400, metavar="DPI",
    help="Resolution PDF pages are rendered at (each page is an input, doc.pdf#page=N; needs "
         "pip install 'openocr-det\\[pdf]'). 200 dpi makes 10 pt text ~28 px tall.")]



def write_json(path: Path, data: dict) -> None:
    """The --json output of a command, with a clear error when the file cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}.") from None


# command parameter -> InferenceOptions field, where the names differ
_RENAMED = {"override": "overrides", "postprocess_file": "postprocess"}


def inference_options(params: Mapping[str, Any], **changes: Any) -> InferenceOptions:
    """The one options object for an inference command, from its parameters (pass `locals()`).

    Every parameter that names an InferenceOptions field is taken (Typer enums become their values), so
    predict, eval and benchmark share one list of settings instead of repeating it.
    """
    names = {f.name for f in dataclasses.fields(InferenceOptions)}
    values = {}
    for key, value in {**params, **changes}.items():
        key = _RENAMED.get(key, key)
        if key not in names or value is None:
            continue
        values[key] = tuple(value) if key == "overrides" else value.value if isinstance(value, Enum) else value
    return InferenceOptions(**values)


def report_unreadable(failures: list[str], what: str = "could not be read") -> None:
    """The closing list of images a command skipped, and exit 1 (every inference command ends this way)."""
    if not failures:
        return
    err_console.print(f"[red]{len(failures)} image(s) {what}:[/red]")
    for failure in failures:
        err_console.print(f"  {failure}", markup=False)
    raise typer.Exit(1)

