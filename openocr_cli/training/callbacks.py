"""Training events and their subscribers: the loop reports, subscribers decide what to do with it.

The trainer emits four events on the main process: `on_step` (every optimizer step; `smoothed`
is set on logging steps), `on_eval`, `on_epoch_end` and `on_train_end`. The live display, the log
writers and later guards (early stopping, curves, NaN checks) subscribe instead of adding
branches to the loop; a subscriber may call `trainer.request_stop(reason)`.

Before and around the loop, the run itself (training.run_data, api.training) tells the same subscribers,
on every process, what it is doing: `checking_data()` (a context manager around the label and image
check), `on_data_checked(report)`, `on_resume(checkpoint, ckpt)`, `on_run_start(settings, role)` (the
settings are final and train.log is open; the trainer is built next) and `running(trainer)` (a context
manager around the loop, not entered when the run had already finished). This is how the command line
shows its spinner, tables and live display while the library itself prints nothing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from openocr_cli.log import run_logger
from openocr_cli.training.loss import LOSS_KEYS

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from openocr_cli.data.doctor import DataReport
    from openocr_cli.evaluation.evaluator import ScoredImage
    from openocr_cli.training.distributed import Role
    from openocr_cli.training.settings import TrainSettings



@dataclass
class StepReport:
    epoch: int
    epoch_step: int
    global_step: int
    lr: float
    samples_per_s: float
    losses: dict[str, float]
    smoothed: Optional[dict[str, float]] = None  # median over the log window, on logging steps only
    data_wait: Optional[float] = None  # share of the log window's wall time spent waiting for data
    nonfinite_images: Optional[list[str]] = None  # set when this step was skipped (non-finite loss/grads)


@dataclass
class EvalReport:
    epoch: int
    global_step: int
    precision: float
    recall: float
    hmean: float
    fps: Optional[float]
    best_hmean: float
    improved: bool  # a strict gain over the best so far: best.pth was written
    gain: float = 0.0  # hmean minus the best before this evaluation
    baseline: bool = False  # the starting weights, evaluated before the first step
    # the first evaluation images of the main process, with their labels and detections (for the trackers'
    # drawn previews; not written to metrics.jsonl)
    previews: list[ScoredImage] = field(default_factory=list, repr=False)


def notify(callbacks: Sequence[Any], event: str, *args: Any) -> None:
    """Call the run event `event` on every subscriber that has it (a plain object may have only some)."""
    for callback in callbacks:
        method = getattr(callback, event, None)
        if method is not None:
            method(*args)


@contextlib.contextmanager
def within(callbacks: Sequence[Any], event: str, *args: Any) -> Iterator[None]:
    """Enter the context manager every subscriber that has `event` returns for it, for the block's duration."""
    with contextlib.ExitStack() as stack:
        for callback in callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                stack.enter_context(method(*args))
        yield


class Callback:
    """Override the events you need; every method is a no-op by default."""

    # ------------------------------------------------- the run's events (every process)
    def checking_data(self) -> AbstractContextManager[None]:
        """Entered while the training labels and images are checked (this can take a while)."""
        return contextlib.nullcontext()

    def on_data_checked(self, report: DataReport) -> None: ...

    def on_resume(self, checkpoint: Path, ckpt: dict) -> None:
        """The run continues from `checkpoint` (read into `ckpt`); its data is checked next."""

    def on_run_start(self, settings: TrainSettings, role: Role) -> None: ...

    def running(self, trainer: Any) -> AbstractContextManager[None]:
        """Entered around the training loop."""
        return contextlib.nullcontext()

    # ------------------------------------------------- the trainer's events (main process)
    def on_step(self, trainer: Any, report: StepReport) -> None: ...

    def on_eval(self, trainer: Any, report: EvalReport) -> None: ...

    def on_epoch_end(self, trainer: Any) -> None: ...

    def on_train_end(self, trainer: Any) -> None: ...


class RunLog(Callback):
    """metrics.jsonl (one JSON record per logged step and per evaluation) and the train.log lines."""

    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / "metrics.jsonl"

    def _write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def on_step(self, trainer: Any, report: StepReport) -> None:
        where = {"epoch": report.epoch, "global_step": report.global_step}
        if report.nonfinite_images is not None:
            self._write({"type": "nonfinite", **where, "images": report.nonfinite_images})
            if getattr(trainer, "nonfinite_streak", 1) > 1:  # in a row: the weights, not these images
                run_logger.warning("step %d skipped: non-finite loss or gradients again (%d steps in a row, whatever "
                                   "the images): the weights are diverging, most likely the learning rate (%g) is too "
                                   "high", report.global_step, trainer.nonfinite_streak, report.lr)
            else:
                run_logger.warning("step %d skipped: non-finite loss or gradients; batch images: %s",
                                   report.global_step, ", ".join(report.nonfinite_images))
        if report.smoothed is None:
            return
        self._write({"type": "train", **where, **report.smoothed, "lr": report.lr,
                     "samples_per_s": report.samples_per_s, "data_wait": report.data_wait})
        run_logger.info("epoch: [%d/%d], global_step: %d, lr: %.6f, %s, ips: %.2f samples/s, data wait: %.0f%%",
                        report.epoch, trainer.settings.epochs, report.global_step, report.lr,
                        ", ".join(f"{k}: {report.smoothed[k]:.6f}" for k in LOSS_KEYS), report.samples_per_s,
                        100 * (report.data_wait or 0))

    def on_eval(self, trainer: Any, report: EvalReport) -> None:
        record = {f.name: getattr(report, f.name) for f in fields(report) if f.name != "previews"}
        self._write({"type": "eval", "epoch": record.pop("epoch"), "global_step": record.pop("global_step"),
                     **record})
        run_logger.info("%s metric, precision: %.6f, recall: %.6f, hmean: %.6f, fps: %.2f; best hmean: %.6f",
                        "starting weights" if report.baseline else "cur", report.precision, report.recall, report.hmean,
                        report.fps or 0, report.best_hmean)


class EarlyStopping(Callback):
    """Ends training after `patience` evaluations without an hmean gain of at least `min_delta`."""

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta

    def on_eval(self, trainer: Any, report: EvalReport) -> None:
        if report.baseline:
            return
        state = trainer.state  # the count is saved in checkpoints, so a resumed run keeps it
        state.stale_evals = 0 if report.gain > 0 and report.gain >= self.min_delta else state.stale_evals + 1
        if state.stale_evals >= self.patience:
            best = state.best
            trainer.request_stop(f"early stop: no hmean gain of at least {self.min_delta:g} in {self.patience} "
                                 f"evaluations (best hmean {best.get('hmean', 0):.4f} at epoch "
                                 f"{best.get('best_epoch', 0)})")


class ResultsPlot(Callback):
    """results.png in the run folder, redrawn from metrics.jsonl after every evaluation and at the end."""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)

    def on_eval(self, trainer: Any, report: EvalReport) -> None:
        self.draw()

    def on_train_end(self, trainer: Any) -> None:
        self.draw()

    def draw(self) -> None:
        from openocr_cli.training.plots import plot_results

        plot_results(self.output_dir / "metrics.jsonl", self.output_dir / "results.png")
