"""Training events and their subscribers: the loop reports, subscribers decide what to do with it.

The trainer emits four events on the main process: `on_step` (every optimizer step; `smoothed`
is set on logging steps), `on_eval`, `on_epoch_end` and `on_train_end`. The live display, the log
writers and later guards (early stopping, curves, NaN checks) subscribe instead of adding
branches to the loop; a subscriber may call `trainer.request_stop(reason)`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

LOSS_KEYS = ("loss", "loss_shrink_maps", "loss_threshold_maps", "loss_binary_maps")
log = logging.getLogger("openocr_det")


@dataclass
class StepReport:
    epoch: int
    epoch_step: int
    global_step: int
    lr: float
    samples_per_s: float
    losses: dict[str, float]
    smoothed: Optional[dict[str, float]] = None  # median over the log window, on logging steps only


@dataclass
class EvalReport:
    epoch: int
    global_step: int
    precision: float
    recall: float
    hmean: float
    fps: Optional[float]
    best_hmean: float
    improved: bool


class Callback:
    """Override the events you need; every method is a no-op by default."""

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
        if report.smoothed is None:
            return
        self._write({"type": "train", "epoch": report.epoch, "global_step": report.global_step, **report.smoothed,
                     "lr": report.lr, "samples_per_s": report.samples_per_s})
        log.info("epoch: [%d/%d], global_step: %d, lr: %.6f, %s, ips: %.2f samples/s", report.epoch,
                 trainer.settings.epochs, report.global_step, report.lr,
                 ", ".join(f"{k}: {report.smoothed[k]:.6f}" for k in LOSS_KEYS), report.samples_per_s)

    def on_eval(self, trainer: Any, report: EvalReport) -> None:
        record = asdict(report)
        self._write({"type": "eval", "epoch": record.pop("epoch"), "global_step": record.pop("global_step"),
                     **record})
        log.info("cur metric, precision: %.6f, recall: %.6f, hmean: %.6f, fps: %.2f; best hmean: %.6f",
                 report.precision, report.recall, report.hmean, report.fps or 0, report.best_hmean)
