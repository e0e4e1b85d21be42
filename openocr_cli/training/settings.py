"""Typed training settings: built once from the OpenOCR-layout config plus the command-line flags.

The config dict stays the source of truth (it is saved in every checkpoint and in config.yml, in
OpenOCR's layout); `TrainSettings` reads it once, checks types and ranges with messages that
name the key, and is what the trainer uses. Flags are shorthands for config keys: `TRAIN_FLAGS`
is the only place that says which flag writes which key (train and resume both go through it).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from openocr_cli import config as cfgmod
from openocr_cli.config_schema import check_config
from openocr_cli.constants import MAX_BATCH, MAX_EPOCHS, MAX_SEED, MAX_WORKERS
from openocr_cli.errors import UserError

DEFAULT_OUTPUT = "output/det_repvit_db"


def _none_or(value: Optional[str]) -> Optional[str]:
    """YAML's empty value, 'null' and 'none' all mean 'not set' for a path-valued key."""
    if value is None or str(value).strip().lower() in ("", "none", "null"):
        return None
    return str(value)


# flag -> the config key(s) it writes: the one table train and resume go through
TRAIN_FLAGS: dict[str, tuple[str, ...]] = {
    "data_dir": ("Train.dataset.data_dir", "Eval.dataset.data_dir"),
    "train_label": ("Train.dataset.label_file_list", "Train.dataset.ratio_list"),
    "eval_label": ("Eval.dataset.label_file_list",), "weights": ("Global.pretrained_model",),
    "output": ("Global.output_dir",), "epochs": ("Global.epoch_num",), "lr": ("Optimizer.lr",),
    "batch_size": ("Train.loader.batch_size_per_card",), "workers": ("Train.loader.num_workers",),
    "device": ("Global.device",), "seed": ("Global.seed",), "amp": ("Global.amp",),
    "sync_bn": ("Global.use_sync_bn",), "eval_every": ("Global.eval_batch_step",),
    "save_every": ("Global.save_iter_step",), "patience": ("Global.patience",),
    "min_delta": ("Global.min_delta",), "scale_lr": ("Global.scale_lr",), "cache": ("Train.dataset.cache",),
}
# experiment trackers (`--log NAME`, repeatable) -> the config key that turns each on (training.tracking)
TRACKERS: dict[str, str] = {"tensorboard": "Global.use_tensorboard", "mlflow": "Global.use_mlflow"}
TRAIN_FLAGS["log"] = tuple(TRACKERS.values())
# what may change when a run is resumed: nothing that would make it a different run (a tracker may be added; the
# decode cache gives bit-identical samples, so it may be switched too)
# (nor --amp: a run moved to a machine without bf16 continues in float32, or the other way round)
RESUME_FLAGS = ("epochs", "device", "workers", "eval_every", "save_every", "patience", "min_delta", "log", "cache",
                "amp")
# --amp / Global.amp: mixed precision of the training step (training.builders.autocast_dtype decides per device)
AMP_MODES = ("off", "bf16", "fp16", "auto")
_KEEP = object()  # a flag's value that leaves its key as the config has it


def _flag_values(name: str, value: Any) -> tuple:
    """The value a flag writes to each of its keys, in OpenOCR's form."""
    if name in ("train_label", "eval_label"):
        files = [str(p) for p in value]
        return (files, [1.0] * len(files)) if name == "train_label" else (files,)
    if name == "weights":
        return (_none_or(value),)
    if name in ("eval_every", "save_every"):
        return ([0, int(value)],)
    if name == "data_dir":
        return (str(value), str(value))
    if name == "amp":
        return (amp_mode(value, "--amp"),)
    if name == "log":  # turns the named trackers on; the others keep the config's setting
        value = [value] if isinstance(value, str) else list(value)
        unknown = sorted(set(value) - set(TRACKERS))
        if unknown:
            raise UserError(f"--log {unknown[0]} is not a tracker openocr-det knows; choose from "
                            f"{', '.join(TRACKERS)} (repeat --log for more than one).", exit_code=2)
        return tuple(True if tracker in value else _KEEP for tracker in TRACKERS)
    return (str(value) if isinstance(value, Path) else value,)


def apply_flags(cfg: dict, **flags: Any) -> dict:
    """A copy of `cfg` with every given flag (not None, not an empty list) written to its keys."""
    cfg = copy.deepcopy(cfg)
    for name, value in flags.items():
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        for key, converted in zip(TRAIN_FLAGS[name], _flag_values(name, value)):
            if converted is not _KEEP:
                _set(cfg, key, converted)
    return cfg


def _set(cfg: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _get(cfg: dict, key: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return default
        node = node[part]
    return node


def _bad(key: str, value: Any, wanted: str) -> UserError:
    return UserError(f"config key {key} is {value!r}; it must be {wanted}.")


def _int(cfg: dict, key: str, default: int, minimum: int = 0, maximum: Optional[int] = None) -> int:
    """A whole number in [minimum, maximum]: the upper bounds keep a typo (a seed or batch size of 1e20) from
    ending as a traceback deep in NumPy or the sampler."""
    value = _get(cfg, key, default)
    whole = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
             and value == int(value))
    if not whole or value < minimum or (maximum is not None and value > maximum):
        raise _bad(key, value, f"a whole number >= {minimum}" if maximum is None else
                   f"a whole number from {minimum} to {maximum:,}")
    return int(value)


def _device(cfg: dict) -> str:
    """Global.device as written (OpenOCR's gpu, or cpu / cuda / cuda:N), its spelling checked before any data is
    read: a typo set by -o or a config file would otherwise surface after the data check, blamed on --device."""
    value = _get(cfg, "Global.device", "gpu")
    if not isinstance(value, str) or not re.fullmatch(r"(cpu|cuda|gpu)(:\d+)?", value.strip().lower()):
        raise UserError(f"config key Global.device (or --device) is {value!r}; it must be cpu, cuda, cuda:N or "
                        "gpu (OpenOCR's word for the default CUDA device).", exit_code=2)
    return value.strip()


def _float(cfg: dict, key: str, default: float, minimum: float = 0.0) -> float:
    value = _get(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise _bad(key, value, f"a number >= {minimum:g}")
    return float(value)


def _bool(cfg: dict, key: str, default: bool) -> bool:
    value = _get(cfg, key, default)
    if not isinstance(value, bool):
        raise _bad(key, value, "true or false")
    return value


@dataclass(frozen=True)
class Cadence:
    """OpenOCR's `[start, every]` schedule (a plain number means start 0; every 0 = never).

    Acts at n when n > start and (n - start) % every == 0. OpenOCR counts its iteration saves
    (`save_iter_step`) from 0 instead: n > start and n % every == 0 (`from_start=False`).
    """

    start: float = 0
    every: int = 0
    from_start: bool = True

    def due(self, n: int) -> bool:
        if self.every <= 0 or not n > self.start:
            return False
        return ((n - self.start) if self.from_start else n) % self.every == 0

    @classmethod
    def read(cls, cfg: dict, key: str, default: list, from_start: bool = True) -> Cadence:
        value = _get(cfg, key, default)
        pair = value if isinstance(value, (list, tuple)) else [0, value]
        ok = len(pair) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
        if not ok or pair[0] < 0 or pair[1] < 0 or pair[1] != int(pair[1]):
            raise _bad(key, value, "[start, every] (two numbers >= 0, every a whole number) or a whole number")
        return cls(pair[0], int(pair[1]), from_start)


@dataclass(frozen=True)
class DataSource:
    """Label files read relative to one folder; `ratios` as OpenOCR's ratio_list (share of each file)."""

    data_dir: Path
    label_files: list[Path]
    ratios: list[float]
    origin: str = "the config"  # where data_dir came from, for messages: "from --data-dir", a config key

    @classmethod
    def read(cls, cfg: dict, section: str, fallback: Optional[DataSource] = None) -> DataSource:
        data_dir = _get(cfg, f"{section}.dataset.data_dir")
        origin = f"the config's {section}.dataset.data_dir"
        if data_dir is None:
            data_dir, origin = (fallback.data_dir, fallback.origin) if fallback else (".", "the current folder")
        files = _get(cfg, f"{section}.dataset.label_file_list", [])
        if not isinstance(files, list):
            files = [files]
        ratios = _get(cfg, f"{section}.dataset.ratio_list", 1.0)
        ratios = [ratios] * len(files) if not isinstance(ratios, list) else ratios
        if len(ratios) != len(files) or not all(isinstance(r, (int, float)) and 0 <= r <= 1 for r in ratios):
            raise UserError(f"{section}.dataset.ratio_list is {ratios!r}: it needs one number between 0 and 1 for "
                            f"each of the {len(files)} label file(s).")
        return cls(Path(str(data_dir)), [Path(str(f)) for f in files], [float(r) for r in ratios], origin)

    def given(self, flag: Optional[object]) -> DataSource:
        """This source with its origin "from --data-dir" when that flag was given."""
        return self if flag is None else replace(self, origin="from --data-dir")


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Everything a training run reads from its config, typed and checked once."""

    cfg: dict = field(repr=False)
    output_dir: Path
    device: Optional[str]
    epochs: int
    seed: int
    pretrained_model: Optional[str]
    checkpoints: Optional[Path]
    batch_size: int
    workers: int
    shuffle: bool
    drop_last: bool
    eval_batch_size: int
    eval_workers: int
    optimizer: dict
    scheduler: dict
    loss: dict
    model: dict
    transforms: list
    eval_every: Cadence
    eval_epochs: Cadence
    save_every: Cadence
    save_epochs: Cadence
    print_every: int
    log_window: int
    grad_clip: float
    accumulation: int
    amp: str  # AMP_MODES: off, bf16, fp16 or auto
    sync_bn: bool
    scale_lr: bool
    patience: int
    min_delta: float
    max_nonfinite_steps: int
    train_data: DataSource
    eval_data: DataSource
    ignored: list[str] = field(default_factory=list)
    cache: str = "none"  # the decode cache of the training images: none, ram or disk (data.decode_cache)
    trackers: tuple[str, ...] = ()  # experiment trackers turned on (TRACKERS' names), e.g. ("tensorboard",)

    @classmethod
    def from_config(cls, cfg: dict) -> TrainSettings:
        """Check `cfg` (schema, types, ranges) and read it; UserErrors name the config key."""
        from openocr_cli.model.build import detector_options

        report = check_config(cfg, "config")
        cfg = copy.deepcopy(cfg)
        _set(cfg, "Global.output_dir", str(_get(cfg, "Global.output_dir", DEFAULT_OUTPUT)))
        device = _device(cfg)
        checkpoints = _none_or(_get(cfg, "Global.checkpoints"))
        train_data = DataSource.read(cfg, "Train")
        _check_inference(cfg)
        return cls(
            cfg=cfg, output_dir=Path(_get(cfg, "Global.output_dir")), device=None if device == "gpu" else device,
            epochs=_int(cfg, "Global.epoch_num", 500, 1, MAX_EPOCHS), seed=_int(cfg, "Global.seed", 48, 0, MAX_SEED),
            pretrained_model=_none_or(_get(cfg, "Global.pretrained_model")),
            checkpoints=Path(checkpoints) if checkpoints else None,
            batch_size=_int(cfg, "Train.loader.batch_size_per_card", 8, 1, MAX_BATCH),
            workers=_int(cfg, "Train.loader.num_workers", 0, 0, MAX_WORKERS),
            shuffle=_bool(cfg, "Train.loader.shuffle", True), drop_last=_bool(cfg, "Train.loader.drop_last", False),
            eval_batch_size=_int(cfg, "Eval.loader.batch_size_per_card", 1, 1, MAX_BATCH),
            eval_workers=max(1, _int(cfg, "Eval.loader.num_workers", 2, 0, MAX_WORKERS)),
            optimizer=_optimizer(cfg), scheduler=_scheduler(cfg),
            loss={k: v for k, v in _get(cfg, "Loss", {}).items() if k != "name"},
            model=detector_options(_get(cfg, "Architecture")),
            transforms=list(_get(cfg, "Train.dataset.transforms", [])),
            eval_every=Cadence.read(cfg, "Global.eval_batch_step", [0, 0]),
            eval_epochs=Cadence.read(cfg, "Global.eval_epoch_step", [0, 1]),
            save_every=Cadence.read(cfg, "Global.save_iter_step", [1e11, 2000], from_start=False),
            save_epochs=Cadence.read(cfg, "Global.save_epoch_step", [0, 1]),
            print_every=_int(cfg, "Global.print_batch_step", 100, 1),
            log_window=_int(cfg, "Global.log_smooth_window", 20, 1),
            grad_clip=_float(cfg, "Global.grad_clip_val", 0.0),
            accumulation=_int(cfg, "Global.accumulation_steps", 1, 1),
            amp=_amp(cfg), sync_bn=_bool(cfg, "Global.use_sync_bn", False),
            scale_lr=_bool(cfg, "Global.scale_lr", False), patience=_int(cfg, "Global.patience", 0),
            min_delta=_float(cfg, "Global.min_delta", 0.0),
            max_nonfinite_steps=_int(cfg, "Global.max_nonfinite_steps", 20, 1),
            train_data=train_data, eval_data=DataSource.read(cfg, "Eval", train_data),
            ignored=report.ignored, cache=_cache(cfg),
            trackers=tuple(name for name, key in TRACKERS.items() if _bool(cfg, key, False)),
        )


def amp_mode(value: Any, where: str) -> str:
    """off / bf16 / fp16 / auto (any case); a bool means auto (True) or off (False), as `amp=True` once did."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    text = str(value).strip().lower()
    if text not in AMP_MODES:
        raise UserError(f"{where} is {value!r}; it must be one of {', '.join(AMP_MODES)}.", exit_code=2)
    return text


def _amp(cfg: dict) -> str:
    """Global.amp when set; else OpenOCR's Global.use_amp, whose true means float16 with a GradScaler on CUDA (and
    nothing on a CPU, as in OpenOCR): "fp16-cuda", which autocast_dtype turns into fp16 or off by device."""
    value = _get(cfg, "Global.amp")
    if value is not None:
        try:
            return amp_mode(value, "config key Global.amp")
        except UserError as exc:
            raise UserError(str(exc)) from None  # a config value, not a flag: exit 1
    return LEGACY_AMP if _bool(cfg, "Global.use_amp", False) else "off"


LEGACY_AMP = "fp16-cuda"  # OpenOCR's Global.use_amp: true


def _cache(cfg: dict) -> str:
    """Train.dataset.cache: none (the default; also empty or false), ram or disk."""
    value = _get(cfg, "Train.dataset.cache", "none")
    return "none" if value is False else str(value).strip().lower()


def _optimizer(cfg: dict) -> dict:
    betas = _get(cfg, "Optimizer.betas", [0.9, 0.999])
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(isinstance(b, (int, float)) for b in betas)):
        raise _bad("Optimizer.betas", betas, "two numbers, e.g. [0.9, 0.999]")
    return {"name": str(_get(cfg, "Optimizer.name", "Adam")), "lr": _float(cfg, "Optimizer.lr", 1e-3),
            "betas": (float(betas[0]), float(betas[1])), "eps": _float(cfg, "Optimizer.eps", 1e-8),
            "weight_decay": _float(cfg, "Optimizer.weight_decay", 0.0),  # OpenOCR: torch default when absent
            "amsgrad": _bool(cfg, "Optimizer.amsgrad", False),
            "filter_bias_and_bn": _bool(cfg, "Optimizer.filter_bias_and_bn", False)}


def _scheduler(cfg: dict) -> dict:
    params = dict(_get(cfg, "LRScheduler", {"name": "CosineAnnealingLR", "warmup_epoch": 2}))
    params.setdefault("name", "CosineAnnealingLR")
    for key in ("warmup_epoch", "gamma", "step_size", "lr_end", "power", "eta_min", "warmup_steps"):
        if key in params:
            _float(cfg, f"LRScheduler.{key}", 0.0)
    return params


def _check_inference(cfg: dict) -> None:
    """The evaluation settings are used only at the first evaluation: check them before training starts."""
    from openocr_cli.data.resize import ResizeSpec
    from openocr_cli.postprocess import make_postprocess

    try:
        make_postprocess(cfgmod.postprocess_params(cfg))
    except UserError as exc:  # a config value here, not a flag: exit 1
        raise UserError(f"PostProcess section: {exc}") from exc
    ResizeSpec.from_params(cfgmod.resize_params(cfg))
