"""Live training display: epoch/iteration bar with loss terms, lr, samples/s and ETA; eval tables."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from openocr_cli.ui import table


class TrainDisplay:
    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta {task.fields[eta]}"), TextColumn("{task.fields[stats]}"),
            console=console, disable=bool(os.environ.get("OPENOCR_DET_NO_PROGRESS")),
        )
        self.task = None
        self.trainer = None
        self.started = time.perf_counter()
        self.first_step = 0

    @contextlib.contextmanager
    def live(self, trainer) -> Iterator[None]:
        self.trainer = trainer
        self.first_step = trainer.pos.global_step
        total = trainer.steps_per_epoch
        with self.progress:
            self.task = self.progress.add_task("train", total=total, completed=trainer.pos.epoch_step,
                                               epoch=f"{trainer.pos.epoch}/{trainer.epochs}", eta="?", stats="")
            yield

    def step(self, pos, values: dict) -> None:
        t = self.trainer
        done = pos.global_step - self.first_step
        remaining = t.epochs * t.steps_per_epoch - pos.global_step
        eta = (time.perf_counter() - self.started) / max(done, 1) * remaining
        stats = (f"loss {values['loss']:.4f} (shrink {values['loss_shrink_maps']:.3f} thresh "
                 f"{values['loss_threshold_maps']:.3f} binary {values['loss_binary_maps']:.3f}) "
                 f"lr {values['lr']:.2e} {values['samples_per_s']:.1f} img/s")
        self.progress.update(self.task, completed=pos.epoch_step, epoch=f"{pos.epoch}/{t.epochs}",
                             eta=_hms(eta), stats=stats)

    def event(self, kind: str, record: dict) -> None:
        if kind == "train":
            self.console.print(
                f"epoch {record['epoch']} step {record['global_step']}: loss {record['loss']:.4f}, "
                f"shrink {record['loss_shrink_maps']:.4f}, thresh {record['loss_threshold_maps']:.4f}, "
                f"binary {record['loss_binary_maps']:.4f}, lr {record['lr']:.6f}, {record['samples_per_s']:.1f} img/s")
        elif kind == "eval":
            mark = " (new best, saved best.pth)" if record["improved"] else ""
            self.console.print(f"eval at epoch {record['epoch']}, step {record['global_step']}{mark}")
            self.console.print(table("", ["metric", "value"],
                                     [("precision", f"{record['precision']:.4f}"), ("recall", f"{record['recall']:.4f}"),
                                      ("hmean", f"{record['hmean']:.4f}"), ("best hmean", f"{record['best_hmean']:.4f}"),
                                      ("FPS", f"{record['fps']:.2f}")]))


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
