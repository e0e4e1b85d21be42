"""The one place inference settings are decided: every value, and where it came from.

predict, eval, benchmark, export and the Python `Detector` all resolve through here, so one
precedence holds everywhere. Per value, lowest first:

1. the config: the packaged repvit_db.yml, or `config=` / --config (its `-o` edits count as "-o");
2. the model: a checkpoint's saved config (`PostProcess`) or an ONNX / OpenVINO model's metadata (post-processing,
   mean/std, channel order), the model registry for released files that state nothing; an explicit
   --config replaces the model's post-processing values;
3. a preset (`preset=` / --preset: another tool's settings for its models, inference/presets.py);
4. a post-processing file (`postprocess=` / --postprocess: the `tuned` object `eval --tune --json` writes);
5. `-o` overrides (`-o PostProcess.KEY=...`, and the resize's keys over a preset);
6. explicit arguments (the command's flags, the Detector's keyword arguments).

Each layer is built once: the config file is read once (`ConfigLayers`: as read and with -o), the post-processing
file once (`PostprocessLayers`), and each value with its source comes out of one lookup over the named layers
(inference/layers.py). An ONNX or OpenVINO model with a fixed input size outranks every resize setting. Nothing
here prints: notes go to the logger, the commands show them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from openocr_cli import config as cfgmod
from openocr_cli.constants import POSTPROCESS_KEYS
from openocr_cli.data.resize import Normalizer, ResizeSpec
from openocr_cli.errors import SettingError, UserError
from openocr_cli.inference import postprocess_sources as ppfile
from openocr_cli.inference.backends.onnx_metadata import CHANNEL_ORDERS, normalization
from openocr_cli.inference.layers import Setting, given, layered
from openocr_cli.inference.options import DEFAULT_WEIGHTS, InferenceOptions
from openocr_cli.inference.predictor import Backend, Predictor
from openocr_cli.inference.presets import POSTPROCESS_KEYS as PRESET_POSTPROCESS_KEYS
from openocr_cli.inference.presets import RESIZE_KEYS
from openocr_cli.postprocess import DBPostProcess, make_postprocess

log = logging.getLogger(__name__)

FILE_BACKENDS = ("onnx", "openvino")  # a model file run by a runtime, never torch
CHECKPOINT_SOURCE = "the checkpoint's saved config"
METADATA_SOURCE = "the ONNX model's metadata"  # an .onnx file's, whichever runtime reads it
IR_METADATA_SOURCE = "the OpenVINO IR's metadata"  # an .xml file's rt_info


@dataclass(frozen=True)
class ConfigLayers:
    """The config as read (once) and with the -o overrides applied: the two lowest layers of every setting.

    `matches` tells whether another options object names the same config and overrides (benchmark resolves one
    model after another from one reading)."""

    read: dict
    cfg: dict
    config: Optional[Path]
    overrides: tuple[str, ...]

    @classmethod
    def load(cls, options: InferenceOptions) -> ConfigLayers:
        read = cfgmod.load_config(options.config)
        return cls(read, cfgmod.apply_overrides(read, options.overrides), options.config, options.overrides)

    def matches(self, options: InferenceOptions) -> bool:
        return (self.config, self.overrides) == (options.config, options.overrides)


@dataclass
class Resolved:
    """Everything an inference run needs, built once; `settings` records each value's source."""

    cfg: dict
    backend: Backend
    resize: ResizeSpec
    normalizer: Normalizer
    postprocess: DBPostProcess
    settings: dict[str, Setting]

    @property
    def model(self) -> str:
        """The model as the caller named it (settings["model"])."""
        return self.settings["model"].value

    def predictor(self, options: InferenceOptions) -> Predictor:
        """The predictor these settings make, run as `options` asks (batch size, workers, PDF dpi, tiling, limits)."""
        return Predictor(self.backend, self.resize, self.normalizer, self.postprocess, batch_size=options.batch_size,
                         workers=options.workers, pdf_dpi=options.pdf_dpi, tile=options.tile_settings(),
                         limits=options.image_limits(), reading_order=options.reading_order)


class PostprocessLayers:
    """Post-processing's layers, each built once: the config (with -o), the model's values, the postprocess= file,
    -o, the explicit values. Made before the model loads, it reads the file and checks every value given so far
    (a bad one fails fast); `resolve` adds the model's layer and gives the DBPostProcess and each key's source."""

    def __init__(self, options: InferenceOptions, cfg: dict):
        self.options, self.cfg = options, cfg
        self.file = self._file_layer()
        self.resolve(note_model_values=False)

    def _file_layer(self) -> Optional[tuple[str, dict[str, float]]]:
        options = self.options
        if options.postprocess is None:
            return None
        if isinstance(options.postprocess, Mapping):
            return "postprocess=", ppfile.check_values(dict(options.postprocess), "postprocess=")
        label = (f"--postprocess {options.postprocess}" if options.origin == "flag" else
                 f"postprocess={options.postprocess}")
        return label, ppfile.read_postprocess_file(Path(options.postprocess))

    def resolve(self, model_layer: Optional[tuple[str, Mapping]] = None,
                note_model_values: bool = True) -> tuple[DBPostProcess, dict[str, Setting]]:
        """DBPostProcess from config < model < file < -o < explicit values, with the source of every key."""
        options = self.options
        if options.config is not None:  # an explicit config outranks the values the model carries
            model_layer = None
        layers = [model_layer] if model_layer and model_layer[1] else []
        preset = options.preset_layer(PRESET_POSTPROCESS_KEYS)
        if preset is not None:
            layers.append(preset)
        if self.file is not None:
            layers.append(self.file)
        explicit = {key: getattr(options, key) for key in ("thresh", "box_thresh", "unclip_ratio", "score_mode",
                                                            "box_type")}
        params, sources = ppfile.layered_params(self.cfg, options.overrides, layers, explicit, explicit=options.origin)
        postprocess = _named_postprocess(params, sources, options.config)
        if note_model_values and layers and model_layer:
            base = make_postprocess(cfgmod.postprocess_params(self.cfg))
            changed = [f"{k} {getattr(postprocess, k):g}" for k, src in sources.items()
                       if src == model_layer[0] and getattr(postprocess, k) != getattr(base, k)]
            if changed:
                log.info(f"note: post-processing {', '.join(changed)} from {model_layer[0]} (the config says "
                         "otherwise; flags, -o or --postprocess override it).")
        return postprocess, {k: Setting(getattr(postprocess, k), sources[k]) for k in POSTPROCESS_KEYS}


def _named_postprocess(params: dict, sources: Mapping[str, str], config: Optional[Path]) -> DBPostProcess:
    """make_postprocess, whose refusal also says where the refused value came from (the config file, -o, a
    --postprocess file, a flag or the model), so a bad value in a YAML file is found there."""
    try:
        return make_postprocess(params)
    except SettingError as exc:
        key = next((k for k in sorted(sources, key=len, reverse=True) if str(exc).split(": ", 1)[-1].startswith(k)),
                   None)
        if key is None:
            raise
        source = sources[key]
        if source == "config":
            source = f"the config {config}" if config is not None else "the packaged config"
        raise SettingError(f"{exc} (PostProcess.{key}, from {source}).") from None


def resolve_resize(options: InferenceOptions, config: ConfigLayers) -> tuple[ResizeSpec, dict[str, Setting]]:
    """DetResizeForTest from the config's Eval pipeline (or -o), replaced by explicit limit settings."""
    params = cfgmod.resize_params(config.cfg)
    base = cfgmod.resize_params(config.read)
    sources = {key: "-o" if params.get(key) != base.get(key) else "config"
               for key in ("limit_side_len", "limit_type", "image_shape", "resize_long")}
    preset = options.preset_layer([key for key in RESIZE_KEYS if sources[key] == "config"])  # -o outranks it
    chain = layered((options.origin, given({key: getattr(options, key) for key in RESIZE_KEYS})),
                    *([preset] if preset is not None else []))
    if chain:  # explicit limits, or a preset's, replace the config's resize
        params = {"limit_side_len": int(params.get("limit_side_len", 960)),
                  "limit_type": params.get("limit_type", "max"), **{key: s.value for key, s in chain.items()}}
        sources.update({key: setting.source for key, setting in chain.items()})
    spec = ResizeSpec.from_params(params)
    return spec, _resize_settings(spec, sources)


def _resize_settings(spec: ResizeSpec, sources: dict[str, str]) -> dict[str, Setting]:
    if spec.image_shape is not None:
        return {"image_shape": Setting(spec.image_shape, sources["image_shape"])}
    if spec.resize_long is not None:
        return {"resize_long": Setting(spec.resize_long, sources["resize_long"])}
    return {key: Setting(getattr(spec, key), sources[key]) for key in ("limit_side_len", "limit_type")}


class RgbNormalizer(Normalizer):
    """For models trained on RGB input: flip our BGR image before normalising."""

    def __call__(self, image):
        return super().__call__(image[..., ::-1])


def resolve_normalizer(options: InferenceOptions, cfg: dict, metadata: Optional[Mapping[str, str]] = None,
                       model_source: str = METADATA_SOURCE) -> tuple[Normalizer, dict[str, Setting]]:
    """mean/std: explicit values, else the model's metadata, else the config's NormalizeImage (ImageNet)."""
    meta_mean, meta_std, order = normalization(metadata or {})
    if order is not None and order not in CHANNEL_ORDERS:
        raise UserError(f"the model's metadata gives channel_order {order!r}; openocr-det feeds BGR "
                        "or RGB only.")
    chain = layered((options.origin, given({"mean": options.mean or None, "std": options.std or None})),
                    (model_source, given({"mean": meta_mean or None, "std": meta_std or None, "channel_order": order})),
                    ("config", {**cfgmod.normalize_params(cfg), "channel_order": "BGR"}))
    chosen = {key: Setting(tuple(float(v) for v in chain[key].value), chain[key].source) for key in ("mean", "std")}
    chosen["channel_order"] = chain["channel_order"]
    kind = RgbNormalizer if order == "RGB" else Normalizer
    return kind(chosen["mean"].value, chosen["std"].value), chosen


def resolve(options: InferenceOptions, config: Optional[ConfigLayers] = None) -> Resolved:
    """Read the config and load the model once and decide every setting (settings are checked before the model
    loads, so a bad value fails fast). `config`: the config already read for the same config and -o."""
    if config is None or not config.matches(options):
        config = ConfigLayers.load(options)
    cfg = config.cfg
    options.tile_settings()  # a bad --tile fails before the model loads
    backend_name = options.backend_name()
    precision = options.precision_name()
    post = PostprocessLayers(options, cfg)  # every post-processing value checked before the model loads
    resize, resize_settings = resolve_resize(options, config)
    metadata: Mapping[str, str] = {}
    if backend_name in FILE_BACKENDS:
        backend, resize, resize_settings, metadata, meta_source = _file_backend(options, resize, resize_settings)
        normalizer, norm_settings = resolve_normalizer(options, cfg, metadata, meta_source)
        log.info(f"{backend_name} backend: {backend.info.path} on {backend.providers[0]}, input "
                 f"'{backend.info.input_name}', output '{backend.info.output_name}', normalisation from "
                 f"{_norm_source(norm_settings)}.")
        model_layer = (_metadata_source(backend.info.path), ppfile.from_metadata(backend.info.metadata))
        device = backend.providers[0]
    else:
        backend = _torch_backend(options, cfg)
        normalizer, norm_settings = resolve_normalizer(options, cfg)
        model_layer = (CHECKPOINT_SOURCE, ppfile.from_saved_config(backend.saved_config))
        device = str(backend.device)
    postprocess, post_settings = post.resolve(model_layer)
    if backend_name in FILE_BACKENDS and options.preset is None and not any(k in metadata for k in STATED_KEYS):
        log.info(_unstated_note(backend.info.path, {**resize_settings, **norm_settings, **post_settings}))
    explicit = options.origin
    settings = {
        "model": Setting(options.model_name(), explicit if options.named_model() else "default"),
        "backend": Setting(backend_name, explicit if options.backend else "default"),
        "device": Setting(device, explicit if options.device else "default"),
        "precision": Setting(precision, explicit if options.precision else "default"),
        **resize_settings, **norm_settings, **post_settings,
    }
    return Resolved(cfg, backend, resize, normalizer, postprocess, settings)


def _norm_source(settings: dict[str, Setting]) -> str:
    source = settings["mean"].source
    if source == "config":
        return "the config (ImageNet)"
    if source in ("flag", "argument"):
        return "--mean/--std" if source == "flag" else "mean=/std="
    return "the model's metadata" if source in (METADATA_SOURCE, IR_METADATA_SOURCE) else source


STATED_KEYS = ("mean", "std", "postprocess", "resize")  # what an openocr-det export says about pre/post-processing
NOTED = ("limit_side_len", "limit_type", "image_shape", "resize_long", "mean", "std", "channel_order", "thresh",
         "box_thresh", "unclip_ratio")


def _unstated_note(path: Path, settings: Mapping[str, Setting]) -> str:
    """A model file that states no pre/post-processing (another tool's export) runs with values it may not
    have been trained with: name them, and how to change them."""
    values = ", ".join(f"{key} {_shown(settings[key].value)}" for key in NOTED if key in settings)
    return (f"note: {Path(path).name} states no pre- or post-processing (none of the metadata our exports write), "
            f"so it runs with {values}. If it was trained with other values, pass them: --limit-side-len/--limit-type, "
            "--mean/--std, --thresh/--box-thresh/--unclip-ratio, or --preset ppocr-v5 for PaddleOCR's detectors "
            "(docs/guides/other-tools.md).")


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _torch_backend(options: InferenceOptions, cfg: dict) -> Backend:
    from openocr_cli.hub import resolve_weights

    if options.weights.lower().endswith(".onnx"):
        raise UserError(f"--weights {options.weights} is an ONNX model; run it with --backend onnx "
                        f"--onnx-model {options.weights}.", exit_code=2)
    if options.weights.lower().endswith(".xml"):
        raise UserError(f"--weights {options.weights} is an OpenVINO model; run it with --openvino-model "
                        f"{options.weights}.", exit_code=2)
    from openocr_cli.inference.backends.torch_backend import TorchBackend, resolve_device  # torch: this branch only

    device = resolve_device(options.device)
    import torch

    if options.threads is not None:
        torch.set_num_threads(options.threads)
    elif device.type == "cpu":  # a busy CPU: fewer threads than cores (inference/cpu_threads.py)
        from openocr_cli.inference.cpu_threads import fit_torch_threads

        note = fit_torch_threads(torch)
        if note:
            log.info(note)
    weights = resolve_weights(options.weights)
    backend = TorchBackend.from_checkpoint(weights, device, cfg.get("Architecture"), strict=not options.non_strict,
                                           fuse=options.fuse)
    return backend.with_precision(options.precision_name())


def _metadata_source(path: Path) -> str:
    return IR_METADATA_SOURCE if Path(path).suffix.lower() == ".xml" else METADATA_SOURCE


def _load_file_backend(options: InferenceOptions, name: str):
    """The runtime for the chosen file backend (imported here: neither runtime loads before it is used)."""
    from openocr_cli.hub import resolve_weights

    if options.backend_name() == "onnx":
        from openocr_cli.inference.backends.onnx_backend import OnnxBackend

        return OnnxBackend.load(resolve_weights(name, kind="ONNX model file", files=".onnx"), options.device,
                                options.threads)
    from openocr_cli.inference.backends.openvino_backend import OpenVinoBackend

    # no .xml is in the registry: the loader's own message names a missing IR and its .bin
    path = (Path(name).expanduser() if name.lower().endswith(".xml") else
            resolve_weights(name, kind="OpenVINO model file", files=".xml/.onnx"))
    return OpenVinoBackend.load(path, options.device, options.threads, options.precision_name())


def _file_backend(options: InferenceOptions, resize: ResizeSpec, resize_settings: dict[str, Setting]):
    """Load the model file once (onnxruntime or OpenVINO); a fixed input size gets images resized to exactly it."""
    from openocr_cli.hub import get_entry

    backend_name = options.backend_name()
    if options.weights != DEFAULT_WEIGHTS:
        flag = "--onnx-model" if backend_name == "onnx" else "--openvino-model"
        log.warning(f"--weights {options.weights} is not used by the {backend_name} backend (it runs {flag}).")
    name = options.model_name()
    backend = _load_file_backend(options, name)
    info = backend.info
    metadata, source = info.metadata, _metadata_source(info.path)
    entry = None if Path(name).expanduser().is_file() else get_entry(name)
    if "mean" not in metadata and entry is not None:  # e.g. OpenOCR's released file, which states nothing
        metadata, source = {**entry.preprocess.as_metadata(), **metadata}, f"the model registry ({entry.name})"
    if info.fixed_hw is not None:
        if options.limit_side_len is not None or options.limit_type is not None:
            log.warning("--limit-side-len/--limit-type are ignored: the model's input size is fixed.")
        log.info(f"note: the model takes a fixed {info.fixed_hw[0]}x{info.fixed_hw[1]} input, so every image is "
                 "resized to exactly that size (aspect ratio not kept).")
        resize = ResizeSpec(image_shape=info.fixed_hw)
        resize_settings = {"image_shape": Setting(info.fixed_hw, "the model's fixed input size")}
    return backend, resize, resize_settings, metadata, source


def describe_settings(settings: Mapping[str, Setting]) -> dict[str, dict[str, Any]]:
    """JSON-ready {key: {"value": ..., "source": ...}}."""
    return {k: {"value": list(s.value) if isinstance(s.value, tuple) else s.value, "source": s.source}
            for k, s in settings.items()}
