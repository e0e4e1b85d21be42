"""The fine-tuning loop: a linear build from TrainSettings, then epochs of steps that emit events.

OpenOCR's optimiser, schedule, evaluation cadence and checkpoint layout, minus its bugs
(docs/openocr-compat.md): gradients are zeroed every step, the sampler is seeded and advanced
every epoch, resume continues mid-epoch from the exact sample and refuses best.pth's missing
optimizer clearly. Kept: the first step at lr 0, coupled weight decay, evaluation both every
`eval_batch_step` iterations and every `eval_epoch_step` epochs (an exact duplicate is skipped).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from openocr_cli.checkpoint import save_checkpoint, standard_layout
from openocr_cli.errors import UserError
from openocr_cli.evaluation.evaluator import EvalResult, evaluate_model
from openocr_cli.fileio import remove_stale_temporaries
from openocr_cli.log import run_logger
from openocr_cli.training import builders
from openocr_cli.training import distributed as ddp
from openocr_cli.training.callbacks import Callback, EvalReport, StepReport
from openocr_cli.training.data_wait import DataWait
from openocr_cli.training.finite import gradients_finite, nonfinite_tensors
from openocr_cli.training.interrupts import deferred_interrupts
from openocr_cli.training.loss import LOSS_KEYS
from openocr_cli.training.run_data import RunData
from openocr_cli.training.settings import TrainSettings
from openocr_cli.training.state import TrainState, require_full_state, seed_everything, set_rng_state

EVAL_PREVIEWS = 3  # evaluation images (with their detections) each EvalReport carries, for the trackers to draw


NONFINITE_AT_END = 3  # a run whose last steps were this many non-finite ones in a row did not end trained


class TrainingDiverged(UserError):
    """Too many consecutive steps with a non-finite loss or gradients: the run cannot recover by itself."""


class TrainingInterrupted(Exception):
    """Ctrl-C/SIGTERM stopped training after a completed step; latest.pth was written."""

    def __init__(self, checkpoint: Path, state: TrainState):
        super().__init__(f"interrupted at epoch {state.epoch}, step {state.global_step}")
        self.checkpoint, self.state = checkpoint, state


class Trainer:
    def __init__(self, settings: TrainSettings, data: RunData, device: torch.device, role: ddp.Role = ddp.Role(),
                 resume: Optional[dict] = None, callbacks: Sequence[Callback] = ()):
        self.settings, self.device, self.role = settings, device, role
        self.output_dir = settings.output_dir
        self.callbacks = list(callbacks)
        self.amp_dtype = builders.autocast_dtype(settings.amp, device)  # None: float32; refused before any work
        builders.configure_cuda(device)
        self.stop_reason: Optional[str] = None
        self.nonfinite_streak = 0
        self.epoch_data_wait = 0.0  # share of the last epoch's wall time spent waiting for data

        seed_everything(settings.seed)
        self.sampler = builders.build_sampler(settings, len(data.train), role)
        self.loader = builders.build_loader(data.train, settings, self.sampler, device)
        self.steps_per_epoch = builders.steps_per_epoch(settings, self.sampler.per_rank)
        self.eval_samples = data.eval
        self.model = builders.build_model(settings, device, role)
        self.memory_format = builders.memory_format(device)
        self.loss_fn = builders.build_loss(settings)
        self.lr = builders.learning_rate(settings, role)
        self.optimizer = builders.build_optimizer(self.model, settings, self.lr)
        self.scheduler = builders.build_schedule(self.optimizer, settings, self.steps_per_epoch, self.lr)
        # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        norms = (m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
        self.batch_norm_buffers = [b for m in norms for b in m.buffers()]
        self.state = TrainState()
        self.data = data
        # fine-tuning starts from weights worth measuring: evaluate them before the first step
        self.baseline_due = resume is None and bool(settings.pretrained_model) and bool(data.eval)
        if resume is not None:
            self._restore(resume)
        else:
            builders.load_pretrained(self.model, settings.pretrained_model)
        self.net = builders.wrap_distributed(self.model, device, role)

    def _restore(self, ckpt: dict) -> None:
        require_full_state(ckpt)
        self.model.load_state_dict({k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()})
        builders.load_optimizer_state(self.optimizer, ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState.from_checkpoint(ckpt, self.steps_per_epoch, self.settings.batch_size,
                                                self.role.world_size)
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        self.state.allow_patience(self.settings.patience)

    @property
    def finished(self) -> bool:
        return self.state.finished(self.settings.epochs)

    def request_stop(self, reason: str) -> None:
        """Finish the current step, save latest.pth and end training; the run then counts as finished."""
        self.stop_reason = self.state.stopped = reason

    # ------------------------------------------------------------- checkpoints
    def checkpoint(self, full: bool = True) -> dict:
        """OpenOCR's dict layout; best.pth (`full=False`) has no optimizer/scheduler, as OpenOCR's."""
        ckpt = {"state_dict": standard_layout(self.model.state_dict()),
                "optimizer": standard_layout(self.optimizer.state_dict()) if full else None,
                "scheduler": self.scheduler.state_dict() if full else None,
                "config": self.settings.cfg,
                **self.state.to_checkpoint(full, self.steps_per_epoch, self.settings.batch_size,
                                           self.role.world_size)}
        if full:
            ckpt["scaler"] = self.scaler.state_dict() if self.scaler.is_enabled() else None
        return ckpt

    def save(self, name: str, full: bool = True) -> Path:
        """Write a checkpoint (main process); one holding a non-finite tensor is never written."""
        path = self.output_dir / name
        if not self.role.is_main:
            return path
        ckpt = self.checkpoint(full)
        bad = nonfinite_tensors(ckpt)
        if bad:
            run_logger.error("not saving %s: %d tensor(s) are not finite (first: %s); the previous file is kept",
                             path, len(bad), bad[0])
            return path
        save_checkpoint(ckpt, path)
        run_logger.info("saved %s (epoch %d, step %d)", path, self.state.epoch, self.state.global_step)
        return path

    def _emit(self, event: str, *args) -> None:
        if self.role.is_main:
            for callback in self.callbacks:
                getattr(callback, event)(self, *args)

    # ------------------------------------------------------------------ steps
    def _step(self, batch: list[torch.Tensor]) -> Optional[dict[str, float]]:
        """One optimizer step; None when the loss or the gradients are not finite (step skipped)."""
        images, *labels = [t.to(self.device, non_blocking=True) for t in batch]
        images = images.contiguous(memory_format=self.memory_format)  # the weights' layout (channels-last)
        batch_norm_state = [b.clone() for b in self.batch_norm_buffers]
        with _autocast(self.device, self.amp_dtype):
            preds = self.net(images)
        losses = self.loss_fn(preds, labels)  # in float32 whatever the forward pass ran in (training.loss)
        # every rank skips together (DDP reduces gradients during backward)
        finite = not ddp.any_rank([not bool(torch.isfinite(losses["loss"]))], self.role, self.device)[0]
        if finite:
            self.scaler.scale(losses["loss"] / self.settings.accumulation).backward()
            # fp16: the GradScaler skips such steps itself (and lowers its scale)
            finite = self.scaler.is_enabled() or gradients_finite(self.model)
        if not finite:
            return self._skip_step(batch_norm_state)
        self.nonfinite_streak = 0
        last_of_epoch = self.state.epoch_step + 1 == self.steps_per_epoch
        if (self.state.epoch_step + 1) % self.settings.accumulation == 0 or last_of_epoch:
            if self.settings.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        values = torch.stack([losses[k].detach() for k in LOSS_KEYS]).tolist()  # one device sync, not four
        return dict(zip(LOSS_KEYS, values))

    def _skip_step(self, batch_norm_state: list[torch.Tensor]) -> None:
        """Undo what the forward pass changed (BatchNorm statistics), drop the gradients, keep the schedule."""
        with torch.no_grad():
            for buffer, saved in zip(self.batch_norm_buffers, batch_norm_state):
                buffer.copy_(saved)
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped first step makes PyTorch warn about the order
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        self.nonfinite_streak += 1
        if self.nonfinite_streak >= self.settings.max_nonfinite_steps:
            raise TrainingDiverged(self._diverged(self.state.global_step + 1))
        return None

    def _diverged(self, last_step: int) -> str:
        other = "broken labels (run `openocr-det check-data`)"
        if self.amp_dtype is not None:
            other += f" or mixed precision (this run trains with --amp {self.settings.amp}; try --amp off)"
        return (f"training stopped: {self.nonfinite_streak} consecutive steps had a non-finite loss or gradients "
                f"(every step from {last_step - self.nonfinite_streak + 1} to {last_step}, whatever their images): "
                f"the weights diverged, most likely because the learning rate is too high for this data (now "
                f"{self.lr:g}; try --lr {self.lr / 10:g}). Other causes: {other}. latest.pth holds the last good "
                "state.")

    def evaluate(self) -> Optional[EvalResult]:
        """Every rank scores its share of the eval images; the per-image records are gathered, so
        the metric equals a single-process evaluation of the same weights."""
        if not self.eval_samples:
            return None
        from openocr_cli.inference.backends.torch_backend import TorchBackend
        from openocr_cli.inference.predictor import Predictor

        predictor = Predictor.from_config(TorchBackend(self.model, self.device), self.settings.cfg,
                                          batch_size=self.settings.eval_batch_size,
                                          workers=self.settings.eval_workers)
        shard = self.eval_samples[self.role.rank::self.role.world_size]
        try:
            result = evaluate_model(predictor, shard)
        finally:
            self.model.train()
        self.state.last_eval_step = self.state.global_step
        merged = EvalResult.combine(ddp.gather_objects(result, self.role))
        merged.scored = result.scored[:EVAL_PREVIEWS]  # this rank's first images, not all of them
        return merged

    def _evaluate_and_record(self, baseline: bool = False) -> None:
        """Record the metric; best.pth only when hmean beats the best so far (the starting weights'
        when fine-tuning); ties keep the older file (openocr-compat: best-by-hmean)."""
        result = self.evaluate()
        if result is None:
            return
        best = self.state.best
        epoch = 0 if baseline else self.state.epoch
        gain = result.hmean - float(best.get("hmean", 0.0))
        improved = gain > 0 and not baseline
        if improved or baseline:
            best.update(precision=result.precision, recall=result.recall, hmean=result.hmean, fps=result.fps,
                        best_epoch=epoch)
        if improved:
            self.save("best.pth", full=False)
        self._emit("on_eval", EvalReport(epoch, 0 if baseline else self.state.global_step, result.precision,
                                         result.recall, result.hmean, result.fps, best["hmean"], improved, gain,
                                         baseline, previews=list(getattr(result, "scored", ()))))

    def _prepare_output(self) -> None:
        if self.role.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for path in remove_stale_temporaries(self.output_dir):  # a killed run's half-written checkpoint
                run_logger.info("removed %s, left by a run that was killed while saving", path.name)
            with open(self.output_dir / "config.yml", "w", encoding="utf-8") as f:
                yaml.safe_dump(self.settings.cfg, f, sort_keys=False, allow_unicode=True)

    # ------------------------------------------------------------------- loop
    def train(self, stop_after: Optional[int] = None) -> dict:
        """Run until the last epoch (or `stop_after` global steps); returns the best metric.

        Ctrl-C (or SIGTERM) is deferred to the end of the current step: latest.pth then holds a
        consistent state and TrainingInterrupted is raised. A second Ctrl-C stops at once.
        """
        self._prepare_output()
        if self.baseline_due:
            self.baseline_due = False
            self._evaluate_and_record(baseline=True)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        window: deque[dict[str, float]] = deque(maxlen=self.settings.log_window)
        with deferred_interrupts() as stop:
            try:
                while not self.finished:
                    self._run_epoch(window, stop, stop_after)
                    # All ranks decide together: a signal may have reached one rank only after the epoch's
                    # last step (during its evaluation or save), and an epoch-end evaluation may have asked
                    # for a stop on the main process.
                    interrupted, asked = ddp.any_rank([stop.requested, self.stop_reason is not None], self.role,
                                                      self.device)
                    if interrupted:
                        raise TrainingInterrupted(self.output_dir / "latest.pth", self.state)
                    if self._follow_stop(asked) or (stop_after is not None and self.state.global_step >= stop_after):
                        break
            finally:
                builders.release_workers(self.loader)  # persistent workers end with the run, not at exit
        if self.nonfinite_streak >= min(NONFINITE_AT_END, self.settings.max_nonfinite_steps):
            raise TrainingDiverged(self._diverged(self.state.global_step))  # a short run that ended diverged
        self._emit("on_train_end")
        return self.state.best

    def _follow_stop(self, asked: bool) -> bool:
        """A stop requested by a subscriber (main process only) ends the run on every rank."""
        if asked and self.stop_reason is None:
            self.stop_reason = self.state.stopped = "stopped on the main process's request"
        return asked

    def _run_epoch(self, window: deque, stop, stop_after: Optional[int]) -> None:
        s, state = self.settings, self.state
        self.sampler.set_epoch(state.epoch, state.epoch_step * s.batch_size)
        waits = DataWait()
        tick = time.perf_counter()
        for batch in self.loader:
            arrived = time.perf_counter()
            losses = self._step(batch)
            state.epoch_step += 1
            state.global_step += 1
            now = time.perf_counter()
            waits.add(arrived - tick, now - tick)
            report = StepReport(state.epoch, state.epoch_step, state.global_step, self.scheduler.get_last_lr()[0],
                                len(batch[0]) / max(now - tick, 1e-9), losses or {})
            if losses is None:
                state.skipped_steps += 1
                first = (state.epoch_step - 1) * s.batch_size
                report.nonfinite_images = [str(self.data.train[i].image)
                                           for i in self.sampler.indices(first, len(batch[0]))]
            else:
                window.append(losses)
            if window and (state.global_step % s.print_every == 0 or state.epoch_step == self.steps_per_epoch):
                report.smoothed = {k: float(np.median([w[k] for w in window])) for k in LOSS_KEYS}
                report.data_wait = waits.window_share()
            self._emit("on_step", report)
            if s.eval_every.due(state.global_step):
                self._evaluate_and_record()
            if s.save_every.due(state.global_step):
                self.save("latest.pth")
            # every rank stops at the same step: a signal or a subscriber's request on any rank counts. The
            # decision uses the reduced value, never the flag, which a signal may set right after the reduction.
            interrupted, asked = ddp.any_rank([stop.requested, self.stop_reason is not None], self.role,
                                              self.device)
            stop.requested |= interrupted
            self._follow_stop(asked)
            if interrupted or asked or (stop_after is not None and state.global_step >= stop_after):
                break
            tick = time.perf_counter()  # evaluations and saves above are neither data wait nor step time
        self.epoch_data_wait = waits.epoch_share()
        if state.epoch_step >= self.steps_per_epoch:
            self._end_epoch()
        else:
            self.save("latest.pth")

    def _end_epoch(self) -> None:
        epoch = self.state.epoch
        if self.settings.eval_epochs.due(epoch) and self.state.last_eval_step != self.state.global_step:
            self._evaluate_and_record()
        self.save("latest.pth")
        if self.settings.save_epochs.due(epoch):
            self.save(f"epoch_{epoch}.pth")
        self._emit("on_epoch_end")
        self.state.next_epoch()


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """Autocast to `dtype` (weights, loss and optimizer state stay float32); no context at all for float32."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
