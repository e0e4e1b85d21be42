"""The learning-rate schedules OpenOCR ships, selected by `LRScheduler.name`, stepped once per iteration.

Each is a factor of the optimizer's lr as a function of the number of scheduler steps taken, so
the first optimizer step of a warm-up runs at lr 0 as in OpenOCR (docs/openocr-compat.md). The
formulas, including their unit quirks (StepLR and MultiStepLR count `warmup_epoch` in steps), are
OpenOCR's, so a YAML that names a schedule trains with the same learning rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from openocr_cli.config_schema import SCHEDULE_PARAMS
from openocr_cli.errors import UserError

if TYPE_CHECKING:  # torch is imported when a schedule is built
    import torch
    from torch.optim.lr_scheduler import LRScheduler as Scheduler


@dataclass(frozen=True)
class Schedule:
    """How one named schedule is built: the `LRScheduler` keys it reads and its builder."""

    params: frozenset[str]
    build: Callable[[torch.optim.Optimizer, dict, int, int, float], Scheduler]


def _lambda(factor: Callable[[dict, int, int, float], Callable[[int], float]]):
    """A builder for a schedule given as a factor of the base lr (PyTorch's LambdaLR)."""
    def build(opt, p: dict, per_epoch: int, total: int, lr: float) -> Scheduler:
        from torch.optim.lr_scheduler import LambdaLR

        return LambdaLR(opt, factor(p, per_epoch, total, lr))
    return build


def _warmup(step: int, warmup: float) -> float:
    return float(step) / float(max(1, warmup))


def cosine_factor(step: int, warmup_steps: float, total_steps: float) -> float:
    """OpenOCR's default (repvit_db.yml): linear warm-up, then half a cosine down to 0."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _cosine(p: dict, per_epoch: int, total: int, lr: float):
    warmup = float(p.get("warmup_epoch", 0)) * per_epoch
    return lambda s: cosine_factor(s, warmup, total)


def _const(p: dict, per_epoch: int, total: int, lr: float):
    warmup = float(p.get("warmup_epoch", 0)) * per_epoch
    return lambda s: _warmup(s, warmup) if s < warmup else 1.0


def _linear(p: dict, per_epoch: int, total: int, lr: float):
    warmup = float(p.get("warmup_epoch", 0)) * per_epoch
    return lambda s: _warmup(s, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))


def _step(p: dict, per_epoch: int, total: int, lr: float):
    if "step_size" not in p:
        raise UserError("LRScheduler.step_size is required by StepLR (epochs between decays).")
    size, gamma = per_epoch * float(p["step_size"]), float(p.get("gamma", 0.1))
    warmup = float(p.get("warmup_epoch", 0))
    return lambda s: _warmup(s, warmup) if s < warmup else gamma ** (s // size)


def _multistep(p: dict, per_epoch: int, total: int, lr: float):
    if not isinstance(p.get("milestones"), list):
        raise UserError("LRScheduler.milestones is required by MultiStepLR: a list of epochs, e.g. [200, 400].")
    marks = [per_epoch * float(m) for m in p["milestones"]]
    gamma, warmup = float(p.get("gamma", 0.1)), float(p.get("warmup_epoch", 0))
    return lambda s: _warmup(s, warmup) if s < warmup else gamma ** sum(m <= s for m in marks)


def _polynomial(p: dict, per_epoch: int, total: int, lr: float):
    warmup = float(p.get("warmup_epoch", 0)) * per_epoch
    end, power = float(p.get("lr_end", 1e-7)), float(p.get("power", 1.0))

    def factor(s: int) -> float:
        if s < warmup:
            return _warmup(s, warmup)
        if s > total:
            return end / lr
        remaining = 1 - (s - warmup) / (total - warmup)
        return ((lr - end) * remaining ** power + end) / lr
    return factor


def _cdistnet(p: dict, per_epoch: int, total: int, lr: float):
    second, warm = float(p.get("step2_epoch", 7)) * per_epoch, float(p.get("n_warmup_steps", 10000))
    return lambda s: (min(s ** -0.5 if s else math.inf, warm ** -1.5 * s) if s < second else 1e-5 / lr)


def _one_cycle(opt, p: dict, per_epoch: int, total: int, lr: float) -> Scheduler:
    from torch.optim.lr_scheduler import OneCycleLR

    return OneCycleLR(
        opt, max_lr=lr, total_steps=total, pct_start=float(p.get("warmup_epoch", 1.0)) * per_epoch / total,
        cycle_momentum=bool(p.get("cycle_momentum", True)))


def _warmup_cosine(opt, p: dict, per_epoch: int, total: int, lr: float) -> Scheduler:
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warmup = int(p.get("warmup_steps", 0))
    cosine = CosineAnnealingLR(opt, T_max=max(1, total - warmup), eta_min=float(p.get("eta_min", 0.0)))
    if warmup <= 0:
        return cosine
    ramp = LinearLR(opt, start_factor=1e-7, end_factor=1.0, total_iters=warmup)
    return SequentialLR(opt, [ramp, cosine], milestones=[warmup])


_BUILDERS = {
    "CosineAnnealingLR": _lambda(_cosine), "ConstLR": _lambda(_const), "LinearLR": _lambda(_linear),
    "StepLR": _lambda(_step), "MultiStepLR": _lambda(_multistep), "PolynomialLR": _lambda(_polynomial),
    "CdistNetLR": _lambda(_cdistnet), "OneCycleLR": _one_cycle, "WarmupCosineLR": _warmup_cosine,
}
# every schedule the config check accepts (config_schema.SCHEDULE_PARAMS: names and keys), with its builder
SCHEDULES: dict[str, Schedule] = {name: Schedule(params, _BUILDERS[name]) for name, params in SCHEDULE_PARAMS.items()}


def build_scheduler(optimizer: torch.optim.Optimizer, params: dict, steps_per_epoch: int, epochs: int,
                    lr: float) -> Scheduler:
    """The scheduler named in `params` (the LRScheduler section, checked by the config schema)."""
    name = str(params.get("name", "CosineAnnealingLR"))
    return SCHEDULES[name].build(optimizer, params, steps_per_epoch, epochs * steps_per_epoch, lr)
