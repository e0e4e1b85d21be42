"""Live training display, a subscriber of the trainer's events: epoch bar with loss terms, lr,
samples/s and ETA; a line per logging step and a table per evaluation."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from openocr_cli.cli.ui import table, warn
from openocr_cli.log import run_logger
from openocr_cli.training.callbacks import Callback, EvalReport, StepReport

DATA_WAIT_WARNING = 0.3  # an epoch waiting for data longer than this share of its time is starved


class TrainDisplay(Callback):
    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta {task.fields[eta]}"), TextColumn("{task.fields[stats]}"),
            console=console, disable=bool(os.environ.get("OPENOCR_DET_NO_PROGRESS")),
        )
        self.task = None
        self.started = time.perf_counter()
        self.first_step = 0
        self.data_wait: Optional[float] = None
        self.warned_data_wait = False

    @contextlib.contextmanager
    def live(self, trainer) -> Iterator[None]:
        state = trainer.state
        self.first_step = state.global_step
        with self.progress:
            self.task = self.progress.add_task("train", total=trainer.steps_per_epoch, completed=state.epoch_step,
                                               epoch=f"{state.epoch}/{trainer.settings.epochs}", eta="?", stats="")
            yield

    def running(self, trainer) -> contextlib.AbstractContextManager[None]:
        """The run's event around the loop: the live display (a caller of api.training.train may pass this)."""
        return self.live(trainer)

    def on_step(self, trainer, report: StepReport) -> None:
        epochs = trainer.settings.epochs
        done = report.global_step - self.first_step
        remaining = epochs * trainer.steps_per_epoch - report.global_step
        eta = (time.perf_counter() - self.started) / max(done, 1) * remaining
        if report.data_wait is not None:
            self.data_wait = report.data_wait
        waiting = f", data wait {self.data_wait:.0%}" if self.data_wait is not None else ""
        losses = report.losses
        if report.nonfinite_images is not None:
            stats = "step skipped: non-finite loss or gradients"
            shown = ", ".join(report.nonfinite_images[:4]) + (" ..." if len(report.nonfinite_images) > 4 else "")
            streak = getattr(trainer, "nonfinite_streak", 1)
            if streak > 1:  # in a row, whatever the images: the weights diverge
                warn(f"step {report.global_step} skipped: the loss or the gradients are not finite again ({streak} "
                     f"steps in a row): the weights are diverging, most likely the learning rate ({report.lr:g}) is "
                     "too high")
            else:
                warn(f"step {report.global_step} skipped: the loss or the gradients are not finite (images: {shown})")
        else:
            stats = (f"loss {losses['loss']:.4f} (shrink {losses['loss_shrink_maps']:.3f} thresh "
                     f"{losses['loss_threshold_maps']:.3f} binary {losses['loss_binary_maps']:.3f}) "
                     f"lr {report.lr:.2e} {report.samples_per_s:.1f} img/s{waiting}")
        self.progress.update(self.task, completed=report.epoch_step, epoch=f"{report.epoch}/{epochs}",
                             eta=_hms(eta), stats=stats)
        if report.smoothed is not None:
            s = report.smoothed
            self.console.print(
                f"epoch {report.epoch} step {report.global_step}: loss {s['loss']:.4f}, "
                f"shrink {s['loss_shrink_maps']:.4f}, thresh {s['loss_threshold_maps']:.4f}, "
                f"binary {s['loss_binary_maps']:.4f}, lr {report.lr:.6f}, {report.samples_per_s:.1f} img/s"
                f"{waiting}")

    def on_epoch_end(self, trainer) -> None:
        if trainer.epoch_data_wait > DATA_WAIT_WARNING and not self.warned_data_wait:
            self.warned_data_wait = True
            message = (f"epoch {trainer.state.epoch} spent {trainer.epoch_data_wait:.0%} of its time waiting for "
                       f"data: the GPU/CPU is starved. Use more loader processes (--workers, now "
                       f"{trainer.settings.workers}) or faster storage.")
            warn(message)
            run_logger.warning(message)

    def on_eval(self, trainer, report: EvalReport) -> None:
        mark = " (new best, saved best.pth)" if report.improved else ""
        where = "of the starting weights" if report.baseline else f"at epoch {report.epoch}, step {report.global_step}"
        self.console.print(f"eval {where}{mark}")
        rows = [("precision", f"{report.precision:.4f}"), ("recall", f"{report.recall:.4f}"),
                ("hmean", f"{report.hmean:.4f}"), ("best hmean", f"{report.best_hmean:.4f}"),
                ("FPS", f"{report.fps or 0:.2f}")]
        self.console.print(table("", ["metric", "value"], rows))


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
