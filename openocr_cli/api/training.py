"""`train` and `resume`: fine-tuning from Python, on the same code path as `openocr-det train` / `resume`.

    import openocr_cli
    run = openocr_cli.train(data_dir="data", train_label="data/train.txt", eval_label="data/test.txt",
                            weights="none", epochs=50, device="cpu", output="runs/a")
    print(run.best_hmean, run.best_epoch, run.best_path)
    run = openocr_cli.resume("runs/a", epochs=80)

The options are the command line's (settings.TRAIN_FLAGS says which config key each one writes); the
run folder gets the same files (latest.pth, best.pth, config.yml, train.log, metrics.jsonl,
results.png). Nothing is printed: `progress=True` shows train.log's lines and the library's warnings on
stderr, `callbacks` (training.callbacks.Callback) see every event, and otherwise the notes and warnings
go to the "openocr_cli" logger. Errors are UserError with the command line's messages. A Ctrl-C
(SIGINT) or SIGTERM ends the current step, saves latest.pth and raises TrainingInterrupted.

Multi-process training stays with the command: `openocr-det train --gpus 0,1` launches torchrun, whose
workers run the command again and so reach `run_job` here; these functions train in this process only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from openocr_cli import config as cfgmod
from openocr_cli.errors import UserError
from openocr_cli.log import logger as library_logger
from openocr_cli.training.settings import TrainSettings, apply_flags

if TYPE_CHECKING:  # torch loads when training starts, not when this module is imported
    from openocr_cli.training.callbacks import Callback
    from openocr_cli.training.run_data import RunData
    from openocr_cli.training.state import TrainState

PathLike = Union[str, os.PathLike]
Paths = Union[PathLike, Sequence[PathLike]]
Overrides = Union[Sequence[str], Mapping[str, Any], None]


@dataclass(frozen=True)
class TrainResult:
    """Where a run stands when train() or resume() returns: its folder and what its files say."""

    run_dir: Path
    best_hmean: float  # the best evaluation's hmean (0.0 when no evaluation ever rose above 0)
    best_epoch: Optional[int]  # the epoch that evaluation followed; 0 = the starting weights; None = none rose
    epoch: int  # the last epoch trained, as latest.pth records it (a run stopped mid-epoch: that epoch)
    global_step: int
    epochs: int  # the epochs the run is set to (Global.epoch_num)
    latest_path: Path  # latest.pth: everything resume needs
    best_path: Optional[Path]  # best.pth (weights of the best evaluation), when the run wrote one
    metrics: dict = field(default_factory=dict)  # the best evaluation: precision, recall, hmean, fps, best_epoch
    stopped: Optional[str] = None  # why the run ended before its last epoch (early stopping), else None
    stale_evals: int = 0  # evaluations since hmean last rose by at least min_delta (early stopping's count)
    already_finished: bool = False  # the run had ended before this call: nothing was trained


@dataclass
class TrainJob:
    """A run ready to start: its settings and, when it continues one, the checkpoint it continues from."""

    settings: TrainSettings
    checkpoint: Optional[dict] = None  # read with read_resumable
    checkpoint_path: Optional[Path] = None  # set by resume: the file the run continues from
    skip_bad: bool = False


def _paths(value: Optional[Paths]) -> Optional[list[Path]]:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def plan_train(*, config: Optional[PathLike] = None, overrides: Overrides = None,
               data_dir: Optional[PathLike] = None, train_label: Optional[Paths] = None,
               eval_label: Optional[Paths] = None, weights: Union[str, os.PathLike, bool, None] = None,
               output: Optional[PathLike] = None, epochs: Optional[int] = None, lr: Optional[float] = None,
               batch_size: Optional[int] = None, workers: Optional[int] = None, device: Optional[str] = None,
               seed: Optional[int] = None, amp: Optional[bool] = None, eval_every: Optional[int] = None,
               save_every: Optional[int] = None, patience: Optional[int] = None, min_delta: Optional[float] = None,
               scale_lr: bool = False, sync_bn: bool = False, skip_bad: bool = False,
               overwrite: bool = False, cache: Optional[str] = None, log: Union[str, Sequence[str], None] = None
               ) -> TrainJob:
    """Config, overrides and options -> checked settings; refuses an --output folder that holds a run.

    `Global.checkpoints` in the config continues from that checkpoint, as in OpenOCR.
    """
    from openocr_cli.training import distributed as ddp

    cfg = cfgmod.apply_overrides(cfgmod.load_config(Path(config) if config is not None else None),
                                 cfgmod.override_texts(overrides))
    cfg = apply_flags(cfg, data_dir=data_dir, train_label=_paths(train_label), eval_label=_paths(eval_label),
                      weights="none" if weights is False else weights, output=output, epochs=epochs,
                      batch_size=batch_size, lr=lr, workers=workers, device=device, seed=seed, amp=amp,
                      eval_every=eval_every, save_every=save_every, sync_bn=sync_bn or None, patience=patience,
                      min_delta=min_delta, scale_lr=scale_lr or None, cache=cache, log=log)
    settings = TrainSettings.from_config(cfg)
    settings = replace(settings, train_data=settings.train_data.given(data_dir),
                       eval_data=settings.eval_data.given(data_dir))  # messages name the flag
    _require_trackers(settings)
    checkpoint = read_resumable(settings.checkpoints) if settings.checkpoints else None
    out = settings.output_dir
    if not ddp.under_launcher():  # the launching process checks the run folder, once
        if (out / "latest.pth").exists() and not overwrite and checkpoint is None:
            raise UserError(f"{out} already holds a training run (latest.pth). Continue it with "
                            f"`openocr-det resume {out}`, choose another --output, or pass --overwrite to start over.")
        if overwrite:
            for name in ("metrics.jsonl", "train.log"):
                (out / name).unlink(missing_ok=True)
            for events in (out / "tensorboard").glob("events.out.tfevents.*"):  # --log tensorboard's records
                events.unlink()
    return TrainJob(settings, checkpoint, skip_bad=skip_bad)


def plan_resume(target: Optional[PathLike] = None, *, epochs: Optional[int] = None, device: Optional[str] = None,
                workers: Optional[int] = None, eval_every: Optional[int] = None, save_every: Optional[int] = None,
                patience: Optional[int] = None, min_delta: Optional[float] = None,
                log: Union[str, Sequence[str], None] = None, cache: Optional[str] = None) -> TrainJob:
    """The run in `target` (a run folder or its latest.pth; None: the newest under ./output), with only the
    settings that keep it the same run changed (settings.RESUME_FLAGS); `log` adds experiment trackers."""
    path = find_checkpoint(Path(target) if target is not None else None)
    ckpt = read_resumable(path)
    changes = {"epochs": epochs, "device": device, "workers": workers, "eval_every": eval_every,
               "save_every": save_every, "patience": patience, "min_delta": min_delta, "log": log, "cache": cache}
    cfg = apply_flags(ckpt["config"], output=path.parent, **changes)
    settings = TrainSettings.from_config(cfg)
    _require_trackers(settings)
    return TrainJob(settings, ckpt, checkpoint_path=path)


def _require_trackers(settings: TrainSettings) -> None:
    """A tracker whose package is missing is refused before the data is read (training.tracking)."""
    if settings.trackers:
        from openocr_cli.training.tracking import require

        require(settings.trackers)


def find_checkpoint(target: Optional[Path]) -> Path:
    """RUN_DIR -> RUN_DIR/latest.pth; a file as is; nothing -> the newest latest.pth under ./output."""
    if target is None:
        runs = sorted(Path("output").glob("**/latest.pth"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UserError("no run to resume: ./output holds no latest.pth. Pass the run folder or checkpoint, "
                            "e.g. `openocr-det resume output/det_repvit_db`.")
        return runs[-1]
    if target.is_dir():
        if not (target / "latest.pth").exists():
            raise UserError(f"{target} holds no latest.pth, so there is nothing to resume there.")
        return target / "latest.pth"
    if not target.exists():
        raise UserError(f"{target} does not exist. Pass a run folder or a latest.pth.")
    return target


def read_resumable(path: Path) -> dict:
    """A training checkpoint (OpenOCR's layout or ours); anything else is a clear error."""
    if not path.is_file():
        raise UserError(f"Global.checkpoints is {path}, which does not exist. Point it at a latest.pth to resume, "
                        "or leave it empty to start a new run.")
    from openocr_cli.checkpoint import read_checkpoint
    from openocr_cli.training.state import require_full_state

    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "state_dict" not in ckpt:
        raise UserError(f"{path} is not a training checkpoint (no config/state_dict); it cannot be resumed.")
    require_full_state(ckpt)  # best.pth: refused before any data is read
    return ckpt


def load_job_data(job: TrainJob, callbacks: Sequence[Callback] = ()) -> RunData:
    """The job's samples: handed over by the launcher (a torchrun worker), else validated here."""
    from openocr_cli.training.callbacks import notify
    from openocr_cli.training.run_data import run_data

    if job.checkpoint_path is not None:
        notify(callbacks, "on_resume", job.checkpoint_path, job.checkpoint)
    return run_data(job.settings, job.skip_bad, callbacks)


def run_job(job: TrainJob, callbacks: Sequence[Callback] = (), progress: bool = False,
            data: Optional[RunData] = None) -> TrainResult:
    """Check the job's data (unless given) and train it in this process."""
    from openocr_cli.training.allocator import keep_freed_memory
    from openocr_cli.training.run import run_training

    ended = _ended(job)
    if ended is not None:  # a finished run answers at once: no data check, no model
        return _result(ended, job.settings, already_finished=True)
    keep_freed_memory()  # no page faults for every step's buffers (training/allocator.py)
    with _progress_on_stderr(progress):
        if data is None:
            data = load_job_data(job, callbacks)
        outcome = run_training(job.settings, data, job.checkpoint, callbacks)
        return _result(outcome.trainer.state, job.settings, outcome.already_finished)


def _ended(job: TrainJob) -> Optional[TrainState]:
    """The position of a continued run that its checkpoint shows has ended, else None."""
    if job.checkpoint is None:
        return None
    from openocr_cli.training import distributed as ddp
    from openocr_cli.training.state import ended_state

    s = job.settings
    return ended_state(job.checkpoint, s.epochs, s.patience, s.batch_size, ddp.role_from_env().world_size)


def train(data_dir: Optional[PathLike] = None, train_label: Optional[Paths] = None,
          eval_label: Optional[Paths] = None, *, weights: Union[str, os.PathLike, bool, None] = None,
          output: Optional[PathLike] = None, epochs: Optional[int] = None, lr: Optional[float] = None,
          batch_size: Optional[int] = None, workers: Optional[int] = None, device: Optional[str] = None,
          seed: Optional[int] = None, amp: Optional[bool] = None, eval_every: Optional[int] = None,
          save_every: Optional[int] = None, patience: Optional[int] = None, min_delta: Optional[float] = None,
          scale_lr: bool = False, sync_bn: bool = False, config: Optional[PathLike] = None,
          overrides: Overrides = None, skip_bad: bool = False, overwrite: bool = False, progress: bool = False,
          callbacks: Sequence[Callback] = (), cache: Optional[str] = None,
          log: Union[str, Sequence[str], None] = None) -> TrainResult:
    """Fine-tune the detector, as `openocr-det train` does; returns where the run ended.

    `train_label` / `eval_label` take one label file or a list; `weights` a .pth, a model name
    ("repvit") or "none" (or False) to train from scratch, None keeping the config's. `config` is an
    OpenOCR-style YAML (default: the packaged repvit_db.yml), `overrides` a list of "Key.sub=value"
    strings or a {"Key.sub": value} mapping (the command's -o). Unset options keep the config's values.
    `skip_bad` trains on the usable label lines (the others are logged); `overwrite` starts over in an
    `output` folder that holds a run. `progress=True` shows train.log's lines on stderr. `cache` is the
    decode cache of the training images ("none", "ram" or "disk"; None keeps Train.dataset.cache).
    `log` turns experiment trackers on: "tensorboard", "mlflow" or both in a list (the command's --log;
    training.tracking says what they record and where); a resumed run keeps logging to the same records.

    Like the command, this keeps the memory a step frees for the next one (training.allocator: glibc's
    allocator is told so for this whole process).
    """
    job = plan_train(config=config, overrides=overrides, data_dir=data_dir, train_label=train_label,
                     eval_label=eval_label, weights=weights, output=output, epochs=epochs, lr=lr,
                     batch_size=batch_size, workers=workers, device=device, seed=seed, amp=amp,
                     eval_every=eval_every, save_every=save_every, patience=patience, min_delta=min_delta,
                     scale_lr=scale_lr, sync_bn=sync_bn, skip_bad=skip_bad, overwrite=overwrite, cache=cache,
                     log=log)
    return run_job(job, callbacks, progress)


def resume(target: Optional[PathLike] = None, *, epochs: Optional[int] = None, device: Optional[str] = None,
           workers: Optional[int] = None, eval_every: Optional[int] = None, save_every: Optional[int] = None,
           patience: Optional[int] = None, min_delta: Optional[float] = None, progress: bool = False,
           callbacks: Sequence[Callback] = (), log: Union[str, Sequence[str], None] = None,
           cache: Optional[str] = None) -> TrainResult:
    """Continue a stopped run exactly where it stopped, as `openocr-det resume` does.

    `target` is the run folder or its latest.pth (None: the newest run under ./output). Only `epochs`,
    `device`, `workers`, `eval_every`, `save_every`, `patience`, `min_delta` and `cache` may change, and `log` may add
    a tracker (the run's own trackers go on logging to the same records). A run that had already finished
    returns at once with `already_finished` set.
    """
    job = plan_resume(target, epochs=epochs, device=device, workers=workers, eval_every=eval_every,
                      save_every=save_every, patience=patience, min_delta=min_delta, log=log, cache=cache)
    return run_job(job, callbacks, progress)


def _result(state: TrainState, settings: TrainSettings, already_finished: bool) -> TrainResult:
    out = settings.output_dir
    best = dict(state.best)
    best_epoch = best.get("best_epoch")
    best_path = out / "best.pth"
    return TrainResult(
        run_dir=out, best_hmean=float(best.get("hmean", 0.0)), best_epoch=best_epoch,
        epoch=state.epoch if state.epoch_step else state.epoch - 1, global_step=state.global_step,
        epochs=settings.epochs, latest_path=out / "latest.pth",
        best_path=best_path if best_epoch and best_path.is_file() else None, metrics=best, stopped=state.stopped,
        stale_evals=state.stale_evals, already_finished=already_finished)


@contextlib.contextmanager
def _progress_on_stderr(enabled: bool) -> Iterator[None]:
    """train.log's lines and the library's notes and warnings on stderr while the block runs."""
    if not enabled:
        yield
        return
    from openocr_cli.training.run import RUN_LOGGER

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
    run_logger, level = logging.getLogger(RUN_LOGGER), library_logger.level
    run_logger.setLevel(logging.INFO)
    library_logger.setLevel(logging.INFO)
    run_logger.addHandler(handler)
    library_logger.addHandler(handler)
    try:
        yield
    finally:
        run_logger.removeHandler(handler)
        library_logger.removeHandler(handler)
        library_logger.setLevel(level)
