"""One training run in this process: join the process group, open train.log, build the trainer, train, leave.

The command line and the Python API (api.training) both train through `run_training`. What the run
is doing reaches the caller through its callbacks (training.callbacks) and train.log; nothing is printed.
Launching the processes of a multi-process run (torchrun) is the command's: each of its workers runs
the command again, which lands here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from openocr_cli.inference.backends.torch_backend import resolve_device
from openocr_cli.inference.cpu_threads import fit_torch_threads
from openocr_cli.log import logger as library_logger
from openocr_cli.log import run_logger
from openocr_cli.training import distributed as ddp
from openocr_cli.training.callbacks import Callback, EarlyStopping, ResultsPlot, RunLog, notify, within
from openocr_cli.training.run_data import RunData
from openocr_cli.training.settings import TrainSettings
from openocr_cli.training.trainer import Trainer, TrainingInterrupted

# OpenOCR's train.log layout, with the program's name where OpenOCR writes its logger's ("opendet")
LOG_FORMAT = "[%(asctime)s] openocr_det %(levelname)s: %(message)s"


@dataclass
class RunOutcome:
    trainer: Trainer
    already_finished: bool  # the run had reached its end before: nothing was trained


@contextlib.contextmanager
def train_log(output_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Append the run's log records to OUTPUT/train.log while the block runs (the main process's only)."""
    if not enabled:
        yield
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y/%m/%d %H:%M:%S"))
    run_logger.setLevel(logging.INFO)
    run_logger.addHandler(handler)
    try:
        yield
    finally:
        run_logger.removeHandler(handler)
        handler.close()


def run_training(settings: TrainSettings, data: RunData, resume: Optional[dict] = None,
                 callbacks: Sequence[Callback] = ()) -> RunOutcome:
    """Train `settings` on `data` (continuing from the checkpoint dict `resume`) in this process.

    The run writes metrics.jsonl, results.png and train.log besides the checkpoints, and stops early
    with `Global.patience`; `callbacks` see every event (after the log writers, before the experiment
    trackers of `settings.trackers` (training.tracking, main process only) and early stopping).
    Under torchrun this process is one rank of the run (roles from the launcher's environment). Ctrl-C
    or SIGTERM ends the current step, saves latest.pth and raises TrainingInterrupted.
    """
    out = settings.output_dir
    callbacks = [RunLog(out), ResultsPlot(out), *callbacks]  # the log first: the plot reads it
    role = ddp.role_from_env()
    if settings.trackers:  # a missing package is refused on every rank, before the process group exists
        from openocr_cli.training.tracking import build_trackers

        trackers = build_trackers(settings)
        if role.is_main:
            callbacks.extend(trackers)
    if settings.patience:
        callbacks.append(EarlyStopping(settings.patience, settings.min_delta))
    device = ddp.init(role, resolve_device(settings.device))
    if device.type == "cpu" and not role.distributed and "OMP_NUM_THREADS" not in os.environ:
        note = fit_torch_threads(torch, "OMP_NUM_THREADS=N")  # a busy CPU: fewer threads than cores
        if note:
            library_logger.info(note)
    ended_together = False  # every rank reached the same end (not an error on this one)
    try:
        with train_log(settings.output_dir, enabled=role.is_main):
            if settings.ignored:
                run_logger.info("config keys OpenOCR defines but openocr-det does not use (ignored): %s",
                                ", ".join(settings.ignored))
            notify(callbacks, "on_run_start", settings, role)
            trainer = Trainer(settings, data, device, role, resume=resume, callbacks=callbacks)
            if trainer.finished:
                ended_together = True
                return RunOutcome(trainer, already_finished=True)
            batch = settings.batch_size
            run_logger.info("run with torch %s and device %s; world size %d, batch %d per process, effective batch "
                            "%d, lr %g; %d train / %d eval images", torch.__version__, device, role.world_size, batch,
                            batch * role.world_size, trainer.lr, len(data.train), len(data.eval))
            try:
                with within(callbacks, "running", trainer):
                    trainer.train()
            except TrainingInterrupted:
                ended_together = True  # every rank stopped at the same step
                raise
            ended_together = True
            return RunOutcome(trainer, already_finished=False)
    finally:
        ddp.shutdown(wait_for_all=ended_together)
