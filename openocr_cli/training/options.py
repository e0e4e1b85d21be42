"""The training options, declared once: `openocr_cli.train(**options)`, `resume(**options)` and the flags of
`openocr-det train` / `resume` are this table (a keyword and its flag share a name: eval_every <-> --eval-every).

Each field is `option(default, help, ...)` (option_table.py). None means "keep the config's value": the options
are shorthands for config keys (settings.TRAIN_FLAGS says which key each writes); `resume` takes only
settings.RESUME_FLAGS. To add a training option: add a field here and its key(s) to settings.TRAIN_FLAGS.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from openocr_cli import config as cfgmod
from openocr_cli.constants import MAX_BATCH, MAX_EPOCHS, MAX_SEED, MAX_WORKERS
from openocr_cli.option_table import check_ranges, flags_of, option

LOG_HELP = (
    "Experiment tracking: tensorboard (events in OUTPUT/tensorboard; config Global.use_tensorboard) or mlflow "
    "(MLFLOW_TRACKING_URI, default ./mlruns); repeatable. Needs the package (pip install tensorboard / mlflow-skinny). "
    "Under an external torchrun spell it --tracker.")
AMP_HELP = (
    "Mixed precision (autocast; weights, loss and checkpoints stay float32): bf16 on CPUs with AVX-512 BF16 or AMX "
    "and on CUDA GPUs that have it, fp16 (with loss scaling) on CUDA, auto = bf16 where native, else fp16 on a GPU, "
    "float32 on a CPU; True means auto (config: Global.amp; default off). resume may switch it.")
CACHE_HELP = (
    "Decode cache for the training images: none, ram (decoded once into memory, size checked) or disk (.npy files in "
    "the user cache, read memory-mapped) (config: Train.dataset.cache; default none). The samples are bit-identical "
    "either way, so resume may switch it.")


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """What a caller asked of a training run; None keeps the config's value."""

    config: Optional[Path] = option(
        None, "OpenOCR-style YAML, read unchanged (default: packaged repvit_db.yml).", names=("--config", "-c"))
    overrides: tuple[str, ...] = option(
        (), "Config override Key.sub=value, value parsed as YAML (repeatable).", names=("--override", "-o"),
        cli_type=Optional[list[str]])
    data_dir: Optional[Path] = option(
        None, "Folder the label paths are relative to (default: ./icdar2015/text_localization/).")
    train_label: Optional[tuple[Path, ...]] = option(
        None, "Training label file(s), repeatable.", cli_type=Optional[list[Path]])
    eval_label: Optional[tuple[Path, ...]] = option(
        None, "Evaluation label file(s), repeatable.", cli_type=Optional[list[Path]])
    weights: Union[str, os.PathLike, bool, None] = option(
        None, "Pretrained weights: a .pth, a model name (repvit), or 'none' to train from scratch.",
        names=("--weights", "-w"), cli_type=Optional[str])
    output: Optional[Path] = option(None, "Run folder (default: ./output/det_repvit_db).")
    epochs: Optional[int] = option(None, "Train up to this many epochs in total (config default: 500).", low=1,
                                   high=MAX_EPOCHS)
    batch_size: Optional[int] = option(
        None, "Images per batch per device (config default: 8).", names=("--batch-size", "-b"), low=1,
        high=MAX_BATCH)
    lr: Optional[float] = option(None, "Peak learning rate (config default: 0.001).", low=0.0)
    workers: Optional[int] = option(None, "Data-loading worker processes (config default: 8).", low=0,
                                    high=MAX_WORKERS)
    device: Optional[str] = option(None, "cpu, cuda or cuda:N (default: cuda if available).")
    seed: Optional[int] = option(None, "Random seed (config default: 48).", low=0, high=MAX_SEED)
    amp: Union[str, bool, None] = option(
        None, AMP_HELP, metavar="off|bf16|fp16|auto", cli_type=Optional[str])
    eval_every: Optional[int] = option(
        None, "Evaluate every N iterations, 0 = only at epoch ends (config default: 1000).", low=0)
    save_every: Optional[int] = option(None, "Also save latest.pth every N iterations (default: off).", low=0)
    skip_bad: bool = option(False, "Train on the valid label lines and report how many were skipped.")
    overwrite: bool = option(False, "Start over in an --output folder that already holds a run.")
    sync_bn: bool = option(False, "SyncBatchNorm across GPUs in distributed runs.")
    patience: Optional[int] = option(
        None, "Stop after N evaluations without an hmean gain of at least --min-delta (0 = never; config: "
              "Global.patience).", low=0)
    min_delta: Optional[float] = option(
        None, "Smallest hmean gain that counts as an improvement for --patience (default 0).", low=0.0)
    log: Union[str, Sequence[str], None] = option(
        None, LOG_HELP, names=("--log", "--tracker"), metavar="TRACKER", cli_type=Optional[list[str]])
    scale_lr: bool = option(False, "Multiply the learning rate by the number of processes (config: Global.scale_lr).")
    cache: Optional[str] = option(None, CACHE_HELP)

    def __post_init__(self) -> None:
        """Values in one form whoever made them (paths as Path, one label file or many), then ranges checked."""
        fixed: dict[str, Any] = {}
        for name in ("config", "data_dir", "output"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                fixed[name] = Path(value)
        for name in ("train_label", "eval_label"):
            value = getattr(self, name)
            if value is not None:
                fixed[name] = (Path(value),) if isinstance(value, (str, os.PathLike)) else tuple(Path(v) for v in value)
        if not isinstance(self.overrides, tuple):
            fixed["overrides"] = cfgmod.override_texts(self.overrides)
        for name, value in fixed.items():
            object.__setattr__(self, name, value)
        check_ranges({name: getattr(self, name) for name in flags_of(TrainOptions)}, TrainOptions)

    def replace(self, **changes: Any) -> TrainOptions:
        return dataclasses.replace(self, **changes)

    def values(self, names: Optional[Sequence[str]] = None) -> dict[str, Any]:
        """{name: value} of the options `names` (default: all), as keyword arguments for train() / resume()."""
        return {name: getattr(self, name) for name in (names or flags_of(TrainOptions))}


def option_names() -> tuple[str, ...]:
    """Every training option's name: the keywords `openocr_cli.train` takes besides its three positional ones."""
    return tuple(flags_of(TrainOptions))
