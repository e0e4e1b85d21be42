"""A training job from options to result: the plumbing under `openocr_cli.train` / `resume` and the commands.

`plan_train` / `plan_resume` turn TrainOptions (training/options.py) into checked settings and the checkpoint a
run continues from; `run_job` checks the data and trains in this process (`openocr-det train --gpus` launches
torchrun, whose workers run the command again and so reach `run_job` too); `TrainResult` is where the run ended.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from openocr_cli import config as cfgmod
from openocr_cli.errors import UserError
from openocr_cli.fileio import unwritable_reason
from openocr_cli.log import logger as library_logger
from openocr_cli.training.options import TrainOptions
from openocr_cli.training.settings import RESUME_FLAGS, TRAIN_FLAGS, TrainSettings, apply_flags

if TYPE_CHECKING:  # torch loads when training starts, not when this module is imported
    from openocr_cli.training.callbacks import Callback
    from openocr_cli.training.run_data import RunData
    from openocr_cli.training.state import TrainState


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


def plan_train(options: TrainOptions) -> TrainJob:
    """Config, overrides and options -> checked settings; refuses an --output folder that holds a run.

    `Global.checkpoints` in the config continues from that checkpoint, as in OpenOCR.
    """
    from openocr_cli.training import distributed as ddp

    cfg = cfgmod.apply_overrides(cfgmod.load_config(options.config), options.overrides)
    flags = options.values(list(TRAIN_FLAGS))
    flags.update(weights="none" if options.weights is False else options.weights,
                 sync_bn=options.sync_bn or None, scale_lr=options.scale_lr or None)
    settings = TrainSettings.from_config(apply_flags(cfg, **flags))
    settings = replace(settings, train_data=settings.train_data.given(options.data_dir),
                       eval_data=settings.eval_data.given(options.data_dir))  # messages name the flag
    _require_trackers(settings)
    checkpoint = read_resumable(settings.checkpoints) if settings.checkpoints else None
    out = settings.output_dir
    if not ddp.under_launcher():  # the launching process checks the run folder, once
        _require_folder(out)
        if (out / "latest.pth").exists() and not options.overwrite and checkpoint is None:
            raise UserError(f"{out} already holds a training run (latest.pth). Continue it with "
                            f"`openocr-det resume {out}`, choose another --output, or pass --overwrite to start over.")
        if options.overwrite:
            for name in ("metrics.jsonl", "train.log"):
                (out / name).unlink(missing_ok=True)
            for events in (out / "tensorboard").glob("events.out.tfevents.*"):  # --log tensorboard's records
                events.unlink()
    return TrainJob(settings, checkpoint, skip_bad=options.skip_bad)


def _require_folder(out: Path) -> None:
    """The run folder is, or can become, a writable folder: checked before any data is read, not when train.log
    opens."""
    reason = unwritable_reason(out, folder=True)
    if reason is not None:
        raise UserError(f"--output {out} {reason}; choose another --output.", exit_code=2)


def plan_resume(target: Optional[Path], options: TrainOptions) -> TrainJob:
    """The run in `target` (a run folder or its latest.pth; None: the newest under ./output), with only the
    settings that keep it the same run changed (`options`' settings.RESUME_FLAGS); `log` adds experiment trackers."""
    path = find_checkpoint(Path(target) if target is not None else None)
    ckpt = read_resumable(path)
    settings = TrainSettings.from_config(apply_flags(ckpt["config"], output=path.parent,
                                                     **options.values(RESUME_FLAGS)))
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
    from openocr_cli.training.run import run_training

    ended = _ended(job)
    if ended is not None:  # a finished run answers at once: no data check, no model
        return _result(ended, job.settings, already_finished=True)
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
    level = library_logger.level
    library_logger.setLevel(logging.INFO)
    library_logger.addHandler(handler)  # train.log's logger is its child: its records come here too
    try:
        yield
    finally:
        library_logger.removeHandler(handler)
        library_logger.setLevel(level)
