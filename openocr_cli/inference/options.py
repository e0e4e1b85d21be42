"""The inference options, declared once: `Detector(**options)`, `InferenceOptions` and the flags of predict,
eval, benchmark and serve are all this table (a keyword and its flag share a name: box_thresh <-> --box-thresh).

Each field is `option(default, help, ...)` (option_table.py): the Python default, the flag's help, its names
when they differ from the field's (`overrides` is -o / --override), its range or choices. cli/options.py turns
the table into Typer options; `Detector` checks its keywords against it. None means "not given": resolve.py
decides the value and records where it came from.

To add an inference option: add a field here, read it where it is used (resolve.py, the predictor), and list
it in the commands that take it only if a command should not (`INFERENCE_FLAGS` in cli/options.py).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

from openocr_cli import config as cfgmod
from openocr_cli.constants import MAX_BATCH, MAX_THREADS, MAX_WORKERS
from openocr_cli.data.images import MAX_IMAGE_MB, MAX_PIXELS, ImageLimits
from openocr_cli.data.pdf import DEFAULT_PDF_DPI
from openocr_cli.errors import UserError
from openocr_cli.inference.presets import PRESETS
from openocr_cli.inference.tiling import TileSettings, parse_tile
from openocr_cli.option_table import check_ranges, flags_of, option
from openocr_cli.postprocess import MAX_UNCLIP_RATIO

DEFAULT_WEIGHTS = "repvit"
DEFAULT_ONNX_MODEL = "repvit-onnx"
BACKENDS = ("torch", "onnx", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16")  # --precision: torch autocast, OpenVINO's inference precision hint

BACKEND_HELP = (
    "torch runs the --weights checkpoint with PyTorch; onnx runs the --onnx-model file with onnxruntime; openvino runs "
    "the --openvino-model file with OpenVINO (same pre- and post-processing). Default: onnx when --onnx-model is "
    "given, openvino when --openvino-model is, else torch.")
POSTPROCESS_HELP = (
    "thresh / box_thresh / unclip_ratio from a JSON file: the `tuned` object `eval --tune --json` writes, or a flat "
    "object with those keys. Order, lowest first: config, the checkpoint's saved config or the ONNX metadata, this "
    "file, -o PostProcess.*, the --thresh/--box-thresh/--unclip-ratio flags.")
PRECISION_HELP = (
    "Forward-pass precision: torch autocast (bf16 on CPUs with AVX-512 BF16 or AMX and on CUDA, fp16 on CUDA) or "
    "OpenVINO's inference precision hint; weights and outputs stay float32 (default fp32). eval also runs fp32 and "
    "reports the hmean drop with its bootstrap interval (docs/guides/mixed-precision.md).")
TILE_HELP = (
    "Run large images as tiles at their own resolution, merging the tiles' probability maps before post-processing: "
    "auto (only images whose text, seen at full resolution in a few probe crops, the resize would shrink below "
    "12-px boxes), N (every image, tiles of at most N pixels, a multiple of 32), off (default: the normal resize).")


@dataclass(frozen=True, kw_only=True)
class InferenceOptions:
    """What a caller asked for; None means "not given" (the resolver decides).

    `origin` names explicit values in the recorded sources: "flag" for the command line, "argument" for
    the Python API. `postprocess` is a JSON file path or a mapping of thresh / box_thresh / unclip_ratio.
    """

    weights: str = option(
        DEFAULT_WEIGHTS, "Checkpoint .pth (OpenOCR or ours) or a model name from `openocr-det download --list`; a "
                         ".onnx / .xml file runs as --onnx-model / --openvino-model.",
        names=("--weights", "-w"))
    onnx_model: Optional[str] = option(
        None, "ONNX detector for --backend onnx: a file (ours, OpenOCR's openocr_det_model.onnx, a PaddleOCR det "
              "model) or the name repvit-onnx (the default).")
    openvino_model: Optional[str] = option(
        None, "Detector for --backend openvino (implies it): an OpenVINO IR .xml (its .bin beside it, as `export "
              "--format openvino` writes) or an .onnx file, run with OpenVINO (pip install 'openocr-det\\[openvino]').")
    backend: Optional[str] = option(None, BACKEND_HELP, choices=BACKENDS)
    config: Optional[Path] = option(
        None, "OpenOCR-style YAML config (default: packaged repvit_db.yml).", names=("--config", "-c"))
    overrides: tuple[str, ...] = option(
        (), "Config override Key.sub=value (repeatable), e.g. -o PostProcess.box_thresh=0.5.",
        names=("--override", "-o"), cli_type=Optional[list[str]])
    postprocess: Union[Path, Mapping[str, float], None] = option(
        None, POSTPROCESS_HELP, metavar="FILE", cli_type=Optional[Path])
    device: Optional[str] = option(
        None, "cpu, cuda or cuda:N (default: cuda if available); the openvino backend takes cpu (default) or gpu / "
              "gpu:N (Intel GPUs).")
    threads: Optional[int] = option(
        None, "Threads per forward pass: onnxruntime's intra-op threads, OpenVINO's inference threads (CPU), or "
              "PyTorch's with the torch backend (default: the runtime's choice).", low=1, high=MAX_THREADS)
    batch_size: int = option(1, "Images per forward pass (same-size images are batched).",
                             names=("--batch-size", "-b"), low=1, high=MAX_BATCH)
    workers: int = option(2, "Threads decoding and resizing images.", low=1, high=MAX_WORKERS)
    thresh: Optional[float] = option(
        None, "Pixel threshold on the probability map (config default: 0.3).", low=0.0, high=1.0)
    box_thresh: Optional[float] = option(None, "Minimum box score (config default: 0.6).", low=0.0, high=1.0)
    unclip_ratio: Optional[float] = option(None, "Box expansion ratio, above 0 (config default: 1.5).", low=0.0,
                                           high=MAX_UNCLIP_RATIO)
    score_mode: Optional[str] = option(
        None, "Box score: slow (polygon mean) or fast (box mean) (config default: slow).", choices=("slow", "fast"))
    box_type: Optional[str] = option(
        None, "quad (4 points) or poly (polygons) (config default: quad).", choices=("quad", "poly"))
    limit_side_len: Optional[int] = option(None, "Resize limit in pixels (config default: 960).", low=32)
    limit_type: Optional[str] = option(
        None, "max: longest side <= limit; min: shortest side >= limit; resize_long: longest side = limit "
              "(config default: max).", choices=("max", "min", "resize_long"))
    mean: Optional[Sequence[float]] = option(
        None, "Normalisation mean, three comma-separated values in the model's channel order (default: the ONNX / "
              "OpenVINO model's metadata, else the config's ImageNet values).",
        metavar="C1,C2,C3", cli_type=Optional[str], parse="three_floats")
    std: Optional[Sequence[float]] = option(
        None, "Normalisation std, three comma-separated values (default: as --mean).",
        metavar="C1,C2,C3", cli_type=Optional[str], parse="three_floats")
    non_strict: bool = option(False, "Load only the tensors that match the model and report the rest.")
    fuse: bool = option(True, "Run the re-parameterised (fused) backbone.", names=("--fuse/--no-fuse",))
    pdf_dpi: float = option(
        DEFAULT_PDF_DPI, "Resolution PDF pages are rendered at (each page is an input, doc.pdf#page=N; needs pip "
                         "install 'openocr-det\\[pdf]'). 200 dpi makes 10 pt text ~28 px tall.",
        low=1, high=2400, metavar="DPI")
    tile: Optional[str] = option(None, TILE_HELP, metavar="off|auto|N", cli_type=Optional[str])
    tile_overlap: Optional[int] = option(
        None, "Pixels neighbouring tiles share (default 128: 64 px of context at each seam).", low=0)
    reading_order: bool = option(
        False, "Give each image's boxes in reading order (lines top to bottom, left to right within a line) instead "
               "of the contours' order (bottom line first, as OpenOCR); results, crops and pre-annotations follow it.")
    max_image_mb: float = option(
        MAX_IMAGE_MB, "Largest input file read, in MB; a larger one is skipped by name without being read.", low=0.001)
    max_pixels: int = option(
        MAX_PIXELS, "Refuse images and PDF pages of more than N pixels, from the file's header before decoding (each "
                    "image needs about 3 bytes per pixel, twice that while decoding); a larger one is skipped by name.",
        low=1, metavar="N")
    precision: Optional[str] = option(None, PRECISION_HELP, choices=PRECISIONS)
    preset: Optional[str] = option(
        None, "Another tool's settings for its own models: ppocr-v5 / ppocr-v6 run PaddleOCR's detectors as its OCR "
              "pipeline does (shorter side to at least 736 px, thresh 0.3, box_thresh 0.6, unclip_ratio 1.5, "
              "score_mode fast). Flags, -o and --postprocess still override it (docs/guides/other-tools.md).",
        choices=tuple(PRESETS))
    origin: str = "flag"

    def __post_init__(self) -> None:
        """Values in one form whoever made them (a Typer enum, a path as text, a tuple of numbers), then the
        declared ranges checked: a bad keyword fails before any model loads."""
        fixed = {}
        for name in flags_of(InferenceOptions):
            value = getattr(self, name)
            if isinstance(value, Enum):
                fixed[name] = value.value
        if self.config is not None and not isinstance(self.config, Path):
            fixed["config"] = Path(self.config)
        if not isinstance(self.overrides, tuple):
            fixed["overrides"] = cfgmod.override_texts(self.overrides)
        if isinstance(self.postprocess, (str, os.PathLike)) and not isinstance(self.postprocess, Path):
            fixed["postprocess"] = Path(self.postprocess)
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                fixed[name] = tuple(value)
        if self.tile is not None and not isinstance(self.tile, str):
            fixed["tile"] = str(self.tile)
        fixed.update(self._model_file_as_weights())
        for name, value in fixed.items():
            object.__setattr__(self, name, value)
        check_ranges({name: getattr(self, name) for name in flags_of(InferenceOptions)}, InferenceOptions,
                     self.spell)

    def _model_file_as_weights(self) -> dict[str, str]:
        """`-w model.onnx` / `-w model.xml` mean --onnx-model / --openvino-model, as Detector("model.onnx") does
        (with --backend torch the file is refused, naming the way to run it)."""
        name = str(self.weights).lower()
        if self.onnx_model or self.openvino_model or not name.endswith((".onnx", ".xml")):
            return {}
        if name.endswith(".xml") or self.backend == "openvino":
            return {"openvino_model": str(self.weights), "weights": DEFAULT_WEIGHTS}
        if self.backend in (None, "onnx"):
            return {"onnx_model": str(self.weights), "weights": DEFAULT_WEIGHTS}
        return {}

    def spell(self, name: str) -> str:
        """How the caller wrote an option, for messages: `--box-thresh ` on the command line, `box_thresh=` else."""
        if self.origin == "flag":
            return flags_of(InferenceOptions)[name][1].flag_names(name)[0].split("/")[0] + " "
        return f"{name}="

    def preset_layer(self, keys: Sequence[str]) -> Optional[tuple[str, dict[str, Any]]]:
        """(source, values) of the preset for these keys, None without one."""
        if self.preset is None:
            return None
        return f"{self.spell('preset')}{self.preset}", {key: PRESETS[self.preset][key] for key in keys}

    def image_limits(self) -> ImageLimits:
        """--max-image-mb / --max-pixels as the limits read_image checks before reading a file."""
        return ImageLimits(int(self.max_image_mb * 1024 ** 2), int(self.max_pixels))

    def tile_settings(self) -> TileSettings:
        """--tile / --tile-overlap checked and parsed (a bad value is a usage error naming the flag)."""
        return parse_tile(self.tile, self.tile_overlap)

    def replace(self, **changes: Any) -> InferenceOptions:
        return dataclasses.replace(self, **changes)

    def backend_name(self) -> str:
        """openvino / onnx when that model is given, else torch; an explicit backend must agree with the model."""
        if self.onnx_model and self.openvino_model:
            raise UserError("--onnx-model and --openvino-model both name a model; pass one (OpenVINO reads .onnx "
                            "files too: --openvino-model FILE.onnx).", exit_code=2)
        if self.backend is None:
            return "openvino" if self.openvino_model else "onnx" if self.onnx_model else "torch"
        if self.backend not in BACKENDS:
            raise UserError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}.", exit_code=2)
        if self.backend != "onnx" and self.onnx_model:
            instead = ("pass the file as --openvino-model (OpenVINO reads .onnx files)" if self.backend == "openvino"
                       else "pass --backend onnx")
            raise UserError(f"--onnx-model is used by the onnx backend only; drop it or {instead}.", exit_code=2)
        if self.backend != "openvino" and self.openvino_model:
            raise UserError("--openvino-model is used by the openvino backend only; drop it or pass --backend "
                            "openvino.", exit_code=2)
        return self.backend

    def precision_name(self) -> str:
        """fp32 unless asked; bf16 / fp16 only for the backends that can change it (onnx runs its file's)."""
        precision = self.precision or "fp32"
        if precision != "fp32" and self.backend_name() == "onnx":
            raise UserError(f"{self.spell('precision')}{precision}: the onnx backend runs a file at the precision it "
                            "was exported with; export one (export --fp16) or run this file with --openvino-model "
                            f"{self.onnx_model or DEFAULT_ONNX_MODEL} --precision {precision}.", exit_code=2)
        return precision

    def model_name(self) -> str:
        """The model as the caller named it (the .pth / .onnx / .xml path or registry name this run uses)."""
        backend = self.backend_name()
        if backend == "torch":
            return self.weights
        return (self.onnx_model if backend == "onnx" else self.openvino_model) or DEFAULT_ONNX_MODEL

    def named_model(self) -> bool:
        """Whether the caller named the model (else the default one runs)."""
        backend = self.backend_name()
        if backend == "torch":
            return self.weights != DEFAULT_WEIGHTS
        return (self.onnx_model if backend == "onnx" else self.openvino_model) is not None


def option_names() -> tuple[str, ...]:
    """Every inference option's name: the keywords `Detector` takes besides the model."""
    return tuple(flags_of(InferenceOptions))
