"""Where a training run stands, and how that position is written to and read from a checkpoint.

OpenOCR's checkpoint keys (`epoch`, `global_step`, `metrics`) keep their meaning; our extra keys
(`epoch_step`, `epoch_samples`, `rng`, ...) let a resumed run continue from the exact sample.
OpenOCR's own latest.pth has none of them and resumes at the next epoch, as OpenOCR does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from openocr_cli.errors import UserError


@dataclass
class TrainState:
    """`epoch` is 1-based; `epoch_step` counts the batches done in it; `best` is the best metric so far."""

    epoch: int = 1
    epoch_step: int = 0
    global_step: int = 0
    best: dict = field(default_factory=lambda: {"hmean": 0.0})
    last_eval_step: int = -1
    stale_evals: int = 0  # evaluations since hmean last rose by at least min_delta (early stopping)
    stopped: Optional[str] = None  # why the run ended before its last epoch (it counts as finished)
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradients, over the whole run
    tracking: dict = field(default_factory=dict)  # experiment trackers' ids (training.tracking), e.g. the MLflow run

    def to_checkpoint(self, full: bool, steps_per_epoch: int, batch_size: int, world_size: int) -> dict:
        """The position keys of a checkpoint; `full` adds what an exact resume needs (latest.pth)."""
        out = {"epoch": self.epoch, "global_step": self.global_step, "metrics": dict(self.best)}
        if full:
            out.update(epoch_step=self.epoch_step, steps_per_epoch=steps_per_epoch, world_size=world_size,
                       epoch_samples=self.epoch_step * batch_size * world_size, rng=rng_state(),
                       last_eval_step=self.last_eval_step, stale_evals=self.stale_evals, stopped=self.stopped,
                       skipped_steps=self.skipped_steps)
            if self.tracking:
                out["tracking"] = dict(self.tracking)
        return out

    @classmethod
    def from_checkpoint(cls, ckpt: dict, steps_per_epoch: int, batch_size: int, world_size: int) -> TrainState:
        """Continue mid-epoch where our checkpoint stopped; at the next epoch for OpenOCR's own files."""
        best = dict(ckpt.get("metrics") or {})
        best.setdefault("hmean", 0.0)
        epoch, step = int(ckpt.get("epoch", 0)), int(ckpt.get("global_step", 0))
        done = ckpt.get("epoch_step")
        if done is not None and ckpt.get("world_size", 1) != world_size:
            # another process count: continue after the same number of samples, in whole batches
            done = int(ckpt.get("epoch_samples", 0)) // (batch_size * world_size)
        state = cls(best=best, last_eval_step=int(ckpt.get("last_eval_step", -1)),
                    stale_evals=int(ckpt.get("stale_evals", 0)), stopped=ckpt.get("stopped"),
                    skipped_steps=int(ckpt.get("skipped_steps", 0)), tracking=dict(ckpt.get("tracking") or {}))
        if done is None or int(done) >= steps_per_epoch:
            state.epoch, state.global_step = epoch + 1, step
        else:
            state.epoch, state.epoch_step, state.global_step = epoch, int(done), step
        return state

    def next_epoch(self) -> None:
        self.epoch, self.epoch_step = self.epoch + 1, 0

    def allow_patience(self, patience: int) -> None:
        """A run that stopped early continues when resumed with a larger (or no) patience."""
        if self.stopped and self.stopped.startswith("early stop") and (not patience or self.stale_evals < patience):
            self.stopped = None

    def finished(self, epochs: int) -> bool:
        return self.epoch > epochs or self.stopped is not None


def require_full_state(ckpt: dict) -> None:
    """Refuse a checkpoint that cannot continue a run exactly (best.pth): no optimizer/scheduler state."""
    if ckpt.get("optimizer") is None or ckpt.get("scheduler") is None:
        raise UserError("this checkpoint has no optimizer/scheduler state (OpenOCR writes best.pth that way), "
                        "so training cannot continue exactly from it. Resume from latest.pth, or start a new "
                        "run with --weights pointing at it.")


def ended_state(ckpt: dict, epochs: int, patience: int, batch_size: int, world_size: int) -> Optional[TrainState]:
    """The run's position when the checkpoint alone shows it has ended, else None (the trainer decides).

    Nothing about the data is needed: an epoch counts as complete when the checkpoint recorded all of
    its steps (its own `steps_per_epoch`, same process count) or it is OpenOCR's file (next epoch).
    """
    recorded = ckpt.get("steps_per_epoch")
    if ckpt.get("epoch_step") is not None and (recorded is None or ckpt.get("world_size", 1) != world_size):
        return None
    state = TrainState.from_checkpoint(ckpt, int(recorded or 0), batch_size, world_size)
    state.allow_patience(patience)
    return state if state.finished(epochs) else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def rng_state() -> dict:
    """RNG states as tensors and plain values, so checkpoints load with weights_only=True."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["key"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
