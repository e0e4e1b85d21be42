"""Options and set-up shared by the inference-side subcommands (predict, eval)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from openocr_cli import config as cfgmod
from openocr_cli.data.resize import Normalizer, ResizeSpec
from openocr_cli.engine.predictor import Backend, Predictor
from openocr_cli.errors import UserError
from openocr_cli.postprocess import DBPostProcess, make_postprocess
from openocr_cli.ui import err_console, warn


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


DEFAULT_WEIGHTS = "repvit"
DEFAULT_ONNX_MODEL = "repvit-onnx"


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
    help="Checkpoint .pth (OpenOCR or ours) or a model name from `openocr-det download --list`.")]
ConfigPath = Annotated[Optional[Path], typer.Option(
    "--config", "-c", help="OpenOCR-style YAML config (default: packaged repvit_db.yml).")]
Overrides = Annotated[Optional[list[str]], typer.Option(
    "--override", "-o",
    help="Config override Key.sub=value (repeatable), e.g. -o PostProcess.box_thresh=0.5.")]
Device = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda if available).")]
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
    help="torch runs the --weights checkpoint with PyTorch; onnx runs the --onnx-model file with onnxruntime "
         "(same pre- and post-processing). Default: onnx when --onnx-model is given, else torch.")]
OnnxModel = Annotated[Optional[str], typer.Option(
    "--onnx-model",
    help="ONNX detector for --backend onnx: a file (ours, OpenOCR's openocr_det_model.onnx, a PaddleOCR det model) "
         "or the name repvit-onnx (the default).")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1,
    help="Threads per forward pass: onnxruntime's intra-op threads, or PyTorch's with the torch backend "
         "(default: the runtime's choice).")]
Mean = Annotated[Optional[str], typer.Option(
    "--mean", callback=_three_floats, metavar="C1,C2,C3",
    help="Normalisation mean, three comma-separated values in the model's channel order "
         "(default: the ONNX model's metadata, else the config's ImageNet values).")]
PostprocessFile = Annotated[Optional[Path], typer.Option(
    "--postprocess", metavar="FILE",
    help="thresh / box_thresh / unclip_ratio from a JSON file: the `tuned` object `eval --tune --json` writes, "
         "or a flat object with those keys. Order, lowest first: config, the checkpoint's saved config or the "
         "ONNX metadata, this file, -o PostProcess.*, the --thresh/--box-thresh/--unclip-ratio flags.")]
Std = Annotated[Optional[str], typer.Option(
    "--std", callback=_three_floats, metavar="C1,C2,C3",
    help="Normalisation std, three comma-separated values (default: as --mean).")]



def labelled_data(cfg: dict, section: str, data_dir: Optional[Path],
                  label_files: Optional[list[Path]]) -> tuple[Path, list[Path]]:
    """--data-dir / --label-file, else the config's `<section>.dataset` values; no label file is a usage error."""
    dataset = (cfg.get(section) or {}).get("dataset") or {}
    data_dir = data_dir if data_dir is not None else Path(str(dataset.get("data_dir", ".")))
    files = label_files or [Path(str(p)) for p in dataset.get("label_file_list") or []]
    if not files:
        raise UserError(f"no label file: pass --label-file FILE (or set {section}.dataset.label_file_list in the "
                        "config).", exit_code=2)
    return data_dir, files


def write_json(path: Path, data: dict) -> None:
    """The --json output of a command, with a clear error when the file cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}.") from None

@dataclass(kw_only=True)
class InferenceSettings:
    """Everything the inference drivers take from flags and config, resolved once (None: not given)."""

    weights: str
    batch_size: int
    workers: int
    config: Optional[Path] = None
    overrides: Optional[list[str]] = None
    device: Optional[str] = None
    thresh: Optional[float] = None
    box_thresh: Optional[float] = None
    unclip_ratio: Optional[float] = None
    score_mode: Optional[ScoreMode] = None
    box_type: Optional[BoxType] = None
    limit_side_len: Optional[int] = None
    limit_type: Optional[LimitType] = None
    non_strict: bool = False
    backend: Optional[BackendName] = None
    onnx_model: Optional[str] = None
    threads: Optional[int] = None
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None
    fuse: bool = True
    postprocess_file: Optional[Path] = None
    # filled by build_predictor: where each tunable post-processing value came from
    postprocess_sources: dict = field(default_factory=dict)

    def load_config(self) -> dict:
        return cfgmod.apply_overrides(cfgmod.load_config(self.config), self.overrides or [])

    def build_postprocess(self, cfg: dict, model_values: Optional[tuple[str, dict]] = None) -> DBPostProcess:
        """Config, then `model_values` (checkpoint or ONNX metadata), --postprocess, -o, flags (see
        evaluation.postprocess_file); notes when the model's values replace the config's."""
        from openocr_cli.evaluation import postprocess_file as ppfile

        layers = [model_values] if model_values and model_values[1] else []
        if self.postprocess_file is not None:
            values = ppfile.read_postprocess_file(self.postprocess_file)
            layers.append((f"--postprocess {self.postprocess_file}", values))
        flags = {"thresh": self.thresh, "box_thresh": self.box_thresh, "unclip_ratio": self.unclip_ratio,
                 "score_mode": self.score_mode.value if self.score_mode else None,
                 "box_type": self.box_type.value if self.box_type else None}
        params, sources = ppfile.layered_params(cfg, self.overrides or [], layers, flags)
        postprocess = make_postprocess(params)
        base = make_postprocess(cfgmod.postprocess_params(cfg))
        changed = [f"{k} {getattr(postprocess, k):g}" for k, src in sources.items()
                   if model_values and src == model_values[0] and getattr(postprocess, k) != getattr(base, k)]
        if changed:
            err_console.print(f"note: post-processing {', '.join(changed)} from {model_values[0]} (the config says "
                              "otherwise; flags, -o or --postprocess override it).")
        self.postprocess_sources = sources
        return postprocess

    def build_resize(self, cfg: dict) -> ResizeSpec:
        params = cfgmod.resize_params(cfg)
        if self.limit_side_len is not None or self.limit_type is not None:
            params = {"limit_side_len": self.limit_side_len or int(params.get("limit_side_len", 960)),
                      "limit_type": self.limit_type.value if self.limit_type else params.get("limit_type", "max")}
        return ResizeSpec.from_params(params)

    def backend_name(self) -> BackendName:
        if self.backend is None:
            return BackendName.onnx if self.onnx_model else BackendName.torch
        if self.backend is BackendName.torch and self.onnx_model:
            raise UserError("--onnx-model is used by the onnx backend only; drop it or pass --backend onnx.",
                            exit_code=2)
        return self.backend

    def build_normalizer(self, cfg: dict, metadata: Optional[dict] = None) -> Normalizer:
        """--mean/--std, else the ONNX model's metadata, else the config's NormalizeImage (ImageNet)."""
        from openocr_cli.engine.onnx_metadata import CHANNEL_ORDERS, normalization

        params = cfgmod.normalize_params(cfg)
        meta_mean, meta_std, order = normalization(metadata or {})
        mean = self.mean or meta_mean or params["mean"]
        std = self.std or meta_std or params["std"]
        if order is not None and order not in CHANNEL_ORDERS:
            raise UserError(f"the ONNX model's metadata gives channel_order {order!r}; openocr-det feeds BGR "
                            "or RGB only.")
        return _RgbNormalizer(mean, std) if order == "RGB" else Normalizer(mean, std)

    def build_predictor(self, cfg: dict) -> Predictor:
        from openocr_cli.hub import resolve_weights

        self.build_postprocess(cfg)  # settings are checked before the (slow) model load
        resize = self.build_resize(cfg)
        if self.backend_name() is BackendName.onnx:
            from openocr_cli.evaluation.postprocess_file import from_metadata

            backend, resize, normalizer = self._onnx_backend(cfg, resize)
            model_values = ("the ONNX model's metadata", from_metadata(backend.info.metadata))
        else:
            if self.weights.lower().endswith(".onnx"):
                raise UserError(f"--weights {self.weights} is an ONNX model; run it with --backend onnx "
                                f"--onnx-model {self.weights}.", exit_code=2)
            from openocr_cli.engine.backends import TorchBackend, resolve_device  # torch: this branch only

            device = resolve_device(self.device)
            if self.threads is not None:
                import torch

                torch.set_num_threads(self.threads)
            weights = resolve_weights(self.weights)
            backend = TorchBackend.from_checkpoint(weights, device, cfg.get("Architecture"), strict=not self.non_strict,
                                                   fuse=self.fuse)
            normalizer = self.build_normalizer(cfg)
            from openocr_cli.evaluation.postprocess_file import from_saved_config

            model_values = ("the checkpoint's saved config", from_saved_config(backend.saved_config))
        if self.config is not None:  # an explicit --config outranks the values the model carries
            model_values = None
        postprocess = self.build_postprocess(cfg, model_values)
        return Predictor.from_config(backend, cfg, resize=resize, normalizer=normalizer, postprocess=postprocess,
                                     batch_size=self.batch_size, workers=self.workers)

    def _onnx_backend(self, cfg: dict, resize: ResizeSpec) -> tuple[Backend, ResizeSpec, Normalizer]:
        """Load the session once; a model with a fixed input size gets images resized to exactly that."""
        from openocr_cli.engine.onnx_backend import OnnxBackend
        from openocr_cli.hub import get_entry, resolve_weights

        if self.weights != DEFAULT_WEIGHTS:
            warn(f"--weights {self.weights} is not used by the onnx backend (it runs --onnx-model).")
        name = self.onnx_model or DEFAULT_ONNX_MODEL
        path = resolve_weights(name)
        backend = OnnxBackend.load(path, self.device, self.threads)
        info = backend.info
        metadata, source = info.metadata, "the model's metadata"
        entry = None if Path(name).expanduser().is_file() else get_entry(name)
        if "mean" not in metadata:  # e.g. OpenOCR's released file, which states nothing
            metadata = {**entry.preprocess.as_metadata(), **metadata} if entry else metadata
            source = f"the model registry ({entry.name})" if entry else "the config (ImageNet)"
        normalizer = self.build_normalizer(cfg, metadata)
        if self.mean or self.std:
            source = "--mean/--std"
        err_console.print(f"onnx backend: {path} on {backend.providers[0]}, input '{info.input_name}', "
                          f"output '{info.output_name}', normalisation from {source}.")
        if info.fixed_hw is not None:
            if self.limit_side_len is not None or self.limit_type is not None:
                warn("--limit-side-len/--limit-type are ignored: the model's input size is fixed.")
            err_console.print(f"note: the model takes a fixed {info.fixed_hw[0]}x{info.fixed_hw[1]} input, so every "
                              "image is resized to exactly that size (aspect ratio not kept).")
            resize = ResizeSpec(image_shape=info.fixed_hw)
        return backend, resize, normalizer


class _RgbNormalizer(Normalizer):
    """For models trained on RGB input: flip our BGR image before normalising."""

    def __call__(self, image):
        return super().__call__(image[..., ::-1])
