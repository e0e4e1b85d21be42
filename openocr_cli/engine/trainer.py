"""Fine-tuning loop: OpenOCR's optimiser, schedule, evaluation cadence and checkpoint layout, minus its bugs.

Fixed on purpose (spec section 10): gradients are zeroed every step (#1), the sampler is seeded
and advanced every epoch (#9, #10), resume continues mid-epoch from the exact sample (our
checkpoints) and refuses best.pth's missing optimizer clearly (#12), failed samples are retried a
bounded number of times (#8). Kept: first step at lr 0 (#15), coupled weight decay (#16), the
double evaluation cadence (#11, an exact duplicate is skipped).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from openocr_cli import config as cfgmod
from openocr_cli.checkpoint import load_weights, save_checkpoint
from openocr_cli.data.dataset import ResumableSampler, TrainDataset
from openocr_cli.data.labels import LabelSample
from openocr_cli.data.resize import Normalizer, ResizeSpec
from openocr_cli.engine import distributed as ddp
from openocr_cli.engine.backends import TorchBackend
from openocr_cli.engine.evaluator import EvalResult, evaluate_model
from openocr_cli.engine.predictor import Predictor
from openocr_cli.errors import UserError
from openocr_cli.loss import DBLoss
from openocr_cli.model import build_detector
from openocr_cli.postprocess import DBPostProcess

log = logging.getLogger("openocr_det")

LOSS_KEYS = ("loss", "loss_shrink_maps", "loss_threshold_maps", "loss_binary_maps")


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """OpenOCR's per-iteration cosine schedule with linear warm-up (factor(0) = 0)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def interval(value: Any, default: int) -> int:
    """OpenOCR cadences are `[start, every]` lists or a plain int; return `every` (0 = off)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        value = value[1]
    if value is None:
        return default
    return int(float(value))


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@dataclass
class Position:
    """Where training stands: `epoch` (1-based) and batches done in it; `global_step` overall."""

    epoch: int = 1
    epoch_step: int = 0
    global_step: int = 0


@dataclass
class RunData:
    """What the trainer needs from the data side, built by the caller (validated samples)."""

    train: list[LabelSample]
    eval: list[LabelSample] = field(default_factory=list)


class Trainer:
    def __init__(self, cfg: dict, data: RunData, device: torch.device, output_dir: Path,
                 resume: Optional[dict] = None, display: Optional[Callable[..., Any]] = None,
                 role: ddp.Role = ddp.Role()):
        self.cfg = cfg
        self.device = device
        self.role = role
        self.output_dir = Path(output_dir)
        g = cfg.get("Global") or {}
        self.epochs = int(g.get("epoch_num", 500))
        self.seed = int(g.get("seed", 48))
        self.eval_every = interval(g.get("eval_batch_step"), 0)
        self.eval_epoch_every = interval(g.get("eval_epoch_step", 1), 1)
        self.save_every = interval(g.get("save_iter_step"), 0)
        self.save_epoch = g.get("save_epoch_step") or [0, 0]
        self.print_every = max(1, interval(g.get("print_batch_step", 100), 100))
        self.grad_clip = float(g.get("grad_clip_val") or 0)
        self.accumulation = max(1, int(g.get("accumulation_steps") or 1))
        self.use_amp = bool(g.get("use_amp")) and device.type == "cuda"
        self.display = display

        seed_everything(self.seed)
        loader_cfg = (cfg.get("Train") or {}).get("loader") or {}
        self.batch_size = int(loader_cfg.get("batch_size_per_card", 8))
        self.workers = int(loader_cfg.get("num_workers", 0))
        global_ops = {k: v for k, v in g.items() if k not in ("epoch",)}
        transforms = ((cfg.get("Train") or {}).get("dataset") or {}).get("transforms") or []
        self.dataset = TrainDataset(data.train, transforms, global_ops, self.seed)
        self.sampler = ResumableSampler(len(self.dataset), self.seed, bool(loader_cfg.get("shuffle", True)),
                                        role.rank, role.world_size)
        self.steps_per_epoch = math.ceil(self.sampler.per_rank / self.batch_size)
        self.eval_samples = data.eval

        self.model = build_detector(cfg.get("Architecture")).to(device)
        if role.distributed and g.get("use_sync_bn"):
            if device.type == "cuda":  # before the optimizer is built: conversion makes new BN modules
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            else:
                log.warning("SyncBatchNorm needs CUDA; training with per-process BatchNorm on %s", device)
        self.net: torch.nn.Module = self.model  # what the forward pass runs: the DDP wrapper when distributed
        self.loss_fn = DBLoss(**{k: v for k, v in (cfg.get("Loss") or {}).items() if k != "name"})
        opt = cfg.get("Optimizer") or {}
        if str(opt.get("name", "Adam")) != "Adam":
            raise UserError(f"Optimizer.name '{opt.get('name')}' is not supported; openocr-det trains with Adam.")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=float(opt.get("lr", 1e-3)),
                                          betas=tuple(opt.get("betas", (0.9, 0.999))),
                                          weight_decay=float(opt.get("weight_decay", 5e-5)))
        sched = cfg.get("LRScheduler") or {}
        warmup = int(round(float(sched.get("warmup_epoch", 2)) * self.steps_per_epoch))
        total = self.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, warmup, total))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

        self.pos = Position()
        self.best: dict = {"hmean": 0.0}
        self.last_eval_step = -1
        if resume is not None:
            self._restore(resume)
        else:
            self._load_pretrained(g.get("pretrained_model"))
        if role.distributed:  # checkpoints keep saving the unwrapped model (no `module.` keys)
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=False)

    # ----------------------------------------------------------------- set-up
    def _load_pretrained(self, weights: Optional[str]) -> None:
        if not weights:
            log.info("training from scratch (no pretrained weights)")
            return
        from openocr_cli.hub import resolve_weights

        try:
            path = resolve_weights(str(weights))
        except UserError as exc:
            raise UserError(f"{exc} To train from scratch instead, pass --weights none.") from None
        report = load_weights(self.model, path, strict=False)
        log.info("loaded pretrained weights %s (%d tensors, %d missing)", path, report.loaded, len(report.missing))

    def _restore(self, ckpt: dict) -> None:
        if ckpt.get("optimizer") is None or ckpt.get("scheduler") is None:
            raise UserError("this checkpoint has no optimizer/scheduler state (OpenOCR writes best.pth that way), "
                            "so training cannot continue exactly from it. Resume from latest.pth, or start a new "
                            "run with --weights pointing at it.")
        self.model.load_state_dict({k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()})
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") and self.use_amp:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.best = dict(ckpt.get("metrics") or {})
        self.best.setdefault("hmean", 0.0)
        epoch, step = int(ckpt.get("epoch", 0)), int(ckpt.get("global_step", 0))
        done = ckpt.get("epoch_step")
        if done is not None and ckpt.get("world_size", 1) != self.role.world_size:
            # another process count: continue after the same number of samples, in whole batches
            done = int(ckpt.get("epoch_samples", 0)) // (self.batch_size * self.role.world_size)
        if done is None or int(done) >= self.steps_per_epoch:  # OpenOCR's own latest.pth: next epoch
            self.pos = Position(epoch + 1, 0, step)
        else:
            self.pos = Position(epoch, int(done), step)
        self.last_eval_step = int(ckpt.get("last_eval_step", -1))
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])

    @property
    def finished(self) -> bool:
        return self.pos.epoch > self.epochs

    # ------------------------------------------------------------- checkpoints
    def checkpoint(self, full: bool = True) -> dict:
        ckpt = {
            "epoch": self.pos.epoch,
            "global_step": self.pos.global_step,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if full else None,
            "scheduler": self.scheduler.state_dict() if full else None,
            "config": self.cfg,
            "metrics": dict(self.best),
        }
        if full:
            ckpt.update({"epoch_step": self.pos.epoch_step, "steps_per_epoch": self.steps_per_epoch,
                         "world_size": self.role.world_size,
                         "epoch_samples": self.pos.epoch_step * self.batch_size * self.role.world_size,
                         "scaler": self.scaler.state_dict() if self.use_amp else None,
                         "rng": rng_state(), "last_eval_step": self.last_eval_step})
        return ckpt

    def save(self, name: str, full: bool = True) -> Path:
        path = self.output_dir / name
        if not self.role.is_main:
            return path
        save_checkpoint(self.checkpoint(full), path)
        log.info("saved %s (epoch %d, step %d)", path, self.pos.epoch, self.pos.global_step)
        return path

    # ------------------------------------------------------------------ loops
    def _loader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler,
                          num_workers=self.workers, pin_memory=self.device.type == "cuda",
                          drop_last=False, persistent_workers=False, worker_init_fn=_ignore_stop_signals)

    def _step(self, batch: list[torch.Tensor], step_in_epoch: int) -> dict[str, float]:
        images, *labels = [t.to(self.device, non_blocking=True) for t in batch]
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            preds = self.net(images)
        losses = self.loss_fn(preds, labels)
        self.scaler.scale(losses["loss"] / self.accumulation).backward()
        last_of_epoch = step_in_epoch + 1 == self.steps_per_epoch
        if (step_in_epoch + 1) % self.accumulation == 0 or last_of_epoch:
            if self.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return {k: float(losses[k].detach()) for k in LOSS_KEYS}

    def evaluate(self) -> Optional[EvalResult]:
        """Every rank scores its share of the eval images; the per-image records are gathered, so
        the metric equals a single-process evaluation of the same weights."""
        if not self.eval_samples:
            return None
        cfg = self.cfg
        predictor = Predictor(TorchBackend(self.model, self.device),
                              ResizeSpec.from_params(cfgmod.resize_params(cfg)),
                              Normalizer(**cfgmod.normalize_params(cfg)),
                              DBPostProcess(**cfgmod.postprocess_params(cfg)), batch_size=1, workers=2)
        shard = self.eval_samples[self.role.rank::self.role.world_size]
        try:
            result = evaluate_model(predictor, shard)
        finally:
            self.model.train()
        self.last_eval_step = self.pos.global_step
        return EvalResult.combine(ddp.gather_objects(result, self.role))

    def _after_eval(self, result: EvalResult) -> bool:
        """Record the metric; save best.pth on hmean >= best (ties take the newer model)."""
        current = {"precision": result.precision, "recall": result.recall, "hmean": result.hmean, "fps": result.fps}
        improved = result.hmean >= float(self.best.get("hmean", 0.0))
        if improved:
            self.best.update(current)
            self.best["best_epoch"] = self.pos.epoch
            self.save("best.pth", full=False)
        self._emit("eval", **current, best_hmean=self.best["hmean"], improved=improved)
        return improved

    def _emit(self, kind: str, **values: Any) -> None:
        if not self.role.is_main:
            return
        record = {"type": kind, "epoch": self.pos.epoch, "global_step": self.pos.global_step, **values}
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if kind == "train":
            log.info("epoch: [%d/%d], global_step: %d, lr: %.6f, %s, ips: %.2f samples/s", self.pos.epoch,
                     self.epochs, self.pos.global_step, values["lr"],
                     ", ".join(f"{k}: {values[k]:.6f}" for k in LOSS_KEYS), values["samples_per_s"])
        elif kind == "eval":
            log.info("cur metric, precision: %.6f, recall: %.6f, hmean: %.6f, fps: %.2f; best hmean: %.6f",
                     values["precision"], values["recall"], values["hmean"], values["fps"] or 0, values["best_hmean"])
        if self.display is not None:
            self.display(kind, record)

    def prepare_output(self) -> None:
        if not self.role.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "config.yml", "w", encoding="utf-8") as f:
            yaml.safe_dump(self.cfg, f, sort_keys=False, allow_unicode=True)

    def train(self, on_step: Optional[Callable[[Position, dict], None]] = None,
              stop_after: Optional[int] = None) -> dict:
        """Run until the last epoch (or `stop_after` global steps); returns the best metric.

        Ctrl-C (or SIGTERM) is deferred to the end of the current step: latest.pth then holds a
        consistent state and TrainingInterrupted is raised. A second Ctrl-C stops at once.
        """
        self.prepare_output()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        window: list[dict[str, float]] = []
        with _deferred_interrupts() as stop:
            while self.pos.epoch <= self.epochs:
                self.sampler.set_epoch(self.pos.epoch, self.pos.epoch_step * self.batch_size)
                tick = time.perf_counter()
                for batch in self._loader():
                    values = self._step(batch, self.pos.epoch_step)
                    self.pos.epoch_step += 1
                    self.pos.global_step += 1
                    window = (window + [values])[-20:]
                    now = time.perf_counter()
                    values["samples_per_s"] = len(batch[0]) / max(now - tick, 1e-9)
                    values["lr"] = self.scheduler.get_last_lr()[0]
                    tick = now
                    if on_step is not None:
                        on_step(self.pos, values)
                    if self.pos.global_step % self.print_every == 0 or self.pos.epoch_step == self.steps_per_epoch:
                        smooth = {k: float(np.median([w[k] for w in window])) for k in LOSS_KEYS}
                        self._emit("train", **smooth, lr=values["lr"], samples_per_s=values["samples_per_s"])
                    if self.eval_every and self.pos.global_step % self.eval_every == 0:
                        result = self.evaluate()
                        if result is not None:
                            self._after_eval(result)
                    if self.save_every and self.pos.global_step % self.save_every == 0:
                        self.save("latest.pth")
                    stop.requested = ddp.any_rank(stop.requested, self.role, self.device)
                    if stop.requested or (stop_after is not None and self.pos.global_step >= stop_after):
                        break
                if self.pos.epoch_step >= self.steps_per_epoch:
                    self._end_epoch()
                else:
                    self.save("latest.pth")
                if stop.requested:
                    raise TrainingInterrupted(self.output_dir / "latest.pth", self.pos)
                if stop_after is not None and self.pos.global_step >= stop_after:
                    break
        return self.best

    def _end_epoch(self) -> None:
        epoch = self.pos.epoch
        if self.eval_epoch_every and epoch % self.eval_epoch_every == 0 and self.last_eval_step != self.pos.global_step:
            result = self.evaluate()
            if result is not None:
                self._after_eval(result)
        self.save("latest.pth")
        start, every = (list(self.save_epoch) + [0, 0])[:2] if isinstance(self.save_epoch, (list, tuple)) else (0, self.save_epoch)
        if every and epoch > int(start) and (epoch - int(start)) % int(every) == 0:
            self.save(f"epoch_{epoch}.pth")
        self.pos = Position(epoch + 1, 0, self.pos.global_step)


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which finishes its step and shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class TrainingInterrupted(Exception):
    """Ctrl-C/SIGTERM stopped training after a completed step; latest.pth was written."""

    def __init__(self, checkpoint: Path, position: Position):
        super().__init__(f"interrupted at epoch {position.epoch}, step {position.global_step}")
        self.checkpoint, self.position = checkpoint, position


class _StopFlag:
    requested = False


@contextlib.contextmanager
def _deferred_interrupts():
    """SIGINT/SIGTERM set a flag the loop checks after each step; a second SIGINT interrupts at once."""
    flag = _StopFlag()

    def handler(signum, frame):
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested = True
        log.warning("stop requested (signal %d): finishing the current step and saving latest.pth", signum)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals stay as they are
        pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
