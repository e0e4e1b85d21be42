"""The pieces a training run is built from, one function each, in the order the trainer calls them.

Mixed precision (which autocast dtype this device runs, cuDNN's settings), model (optionally
SyncBatchNorm; channels-last on CUDA), pretrained weights, DB loss, optimizer (OpenOCR's
`filter_bias_and_bn` parameter groups, one fused update kernel), learning-rate schedule and the
resumable data loader (workers kept across epochs).
"""

from __future__ import annotations

import math
import signal
from typing import Optional

import torch
from torch.utils.data import DataLoader

from openocr_cli.checkpoint import load_weights
from openocr_cli.data.dataset import ResumableSampler, TrainDataset
from openocr_cli.data.labels import LabelSample
from openocr_cli.errors import UserError
from openocr_cli.log import run_logger
from openocr_cli.model import build_detector
from openocr_cli.training import distributed as ddp
from openocr_cli.training.loss import DBLoss
from openocr_cli.training.schedules import build_scheduler
from openocr_cli.training.settings import LEGACY_AMP, TrainSettings

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The dtype the training step's forward pass autocasts to on `device` (None: float32 throughout).

    bf16 where the hardware runs it natively (CPUs with AVX-512 BF16 or AMX, CUDA GPUs with bf16); fp16 on CUDA
    only, with a GradScaler; `auto` takes bf16 where native, else fp16 on older GPUs and float32 on CPUs.
    A combination the device would only emulate (5x slower than float32, not faster) is a usage error."""
    from openocr_cli.inference.backends.torch_backend import precision_problem

    if mode == "off" or (mode == LEGACY_AMP and device.type != "cuda"):  # OpenOCR's use_amp does nothing on CPU
        return None
    if mode == LEGACY_AMP:
        return torch.float16
    if mode == "auto":
        if precision_problem("bf16", device) is None:
            return torch.bfloat16
        if device.type == "cuda":
            return torch.float16
        run_logger.warning("--amp auto: %s, so training runs in float32", machine_precisions(device))
        return None
    problem = precision_problem(mode, device)
    if problem is not None:
        raise UserError(f"--amp {mode} cannot train on {device}: {problem}. {machine_precisions(device)}: "
                        f"{amp_advice(device)}", exit_code=2)
    return AMP_DTYPES[mode]


def machine_precisions(device: torch.device) -> str:
    """What `device` runs natively, in a user's words (for the messages above)."""
    from openocr_cli.inference.backends.torch_backend import precision_problem

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{name} runs fp16" + (" and bf16" if precision_problem("bf16", device) is None else " but not bf16")
    if precision_problem("bf16", device) is None:
        return "this CPU has native bf16 (AVX-512 BF16 or AMX) and no fast fp16"
    return "this CPU has neither native bf16 (AVX-512 BF16, AMX) nor fast fp16"


def amp_advice(device: torch.device) -> str:
    from openocr_cli.inference.backends.torch_backend import precision_problem

    if precision_problem("bf16", device) is None:
        return "use --amp bf16 (or --amp auto)."
    if device.type == "cuda":
        return "use --amp fp16 (or --amp auto)."
    return "train in float32 (--amp off), or on a CUDA GPU."


def configure_cuda(device: torch.device) -> None:
    """cuDNN picks the fastest convolution algorithm per input shape (training crops all share one size, so it
    searches once); TF32 tensor-core matmuls and convolutions on Ampere and later (float32 weights and results)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True


def build_model(settings: TrainSettings, device: torch.device, role: ddp.Role) -> torch.nn.Module:
    """The weights are channels-last (images follow in the step): cuDNN's NHWC kernels and tensor cores on
    CUDA, oneDNN's NHWC kernels on CPU (a training step 1.4-1.5x faster; docs/benchmarks.md, "Training")."""
    model = build_detector(settings.cfg.get("Architecture")).to(device, memory_format=memory_format(device))
    if role.distributed and settings.sync_bn:
        if device.type == "cuda":  # before the optimizer is built: conversion makes new BN modules
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            run_logger.warning("SyncBatchNorm needs CUDA; training with per-process BatchNorm on %s", device)
    return model


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout of the weights and the input images on `device`."""
    return torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format


def load_pretrained(model: torch.nn.Module, weights: Optional[str]) -> None:
    """OpenOCR's fine-tuning start: every tensor whose name and shape match, the rest reported."""
    if not weights:
        run_logger.info("training from scratch (no pretrained weights)")
        return
    from openocr_cli.hub import resolve_weights

    try:
        path = resolve_weights(str(weights))
    except UserError as exc:
        raise UserError(f"{exc} To train from scratch instead, pass --weights none.") from exc
    report = load_weights(model, path, strict=False)
    run_logger.info("loaded pretrained weights %s (%d tensors, %d missing)", path, report.loaded, len(report.missing))


def build_loss(settings: TrainSettings) -> DBLoss:
    return DBLoss(**settings.loss)


def parameter_groups(model: torch.nn.Module, weight_decay: float, filter_bias_and_bn: bool) -> list[dict]:
    """One group, all parameters decayed (OpenOCR's default); with `filter_bias_and_bn`, 1-D tensors,
    biases and the model's `no_weight_decay()` names get no decay, in a first group, as in OpenOCR."""
    if not (filter_bias_and_bn and weight_decay > 0):
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    plain, decayed = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias") or any(s in name for s in skip)
        (plain if no_decay else decayed).append(param)
    return [{"params": plain, "weight_decay": 0.0}, {"params": decayed, "weight_decay": weight_decay}]


def learning_rate(settings: TrainSettings, role: ddp.Role) -> float:
    """The config's lr, times the number of processes with `Global.scale_lr` (--scale-lr)."""
    return settings.optimizer["lr"] * (role.world_size if settings.scale_lr else 1)


def build_optimizer(model: torch.nn.Module, settings: TrainSettings, lr: float) -> torch.optim.Optimizer:
    opt = settings.optimizer
    groups = parameter_groups(model, opt["weight_decay"], opt["filter_bias_and_bn"])
    kind = torch.optim.AdamW if opt["name"] == "AdamW" else torch.optim.Adam
    return kind(groups, lr=lr, betas=opt["betas"], eps=opt["eps"], amsgrad=opt["amsgrad"], **update_kernel(model))


def update_kernel(model: torch.nn.Module) -> dict:
    """`fused=True` where PyTorch has a fused Adam for every parameter (float on CPU or CUDA): one kernel over
    all tensors instead of ~8 per tensor, about 5x faster on CPU, equal to the loop up to float rounding.
    Elsewhere `foreach=True` (bit-identical to the loop, still batched)."""
    params = list(model.parameters())
    if params and all(p.device.type in ("cpu", "cuda") and p.dtype in FUSED_DTYPES for p in params):
        return {"fused": True, "foreach": None}
    return {"fused": None, "foreach": True}


FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a saved optimizer state, keeping this optimizer's update kernel: a checkpoint written with the
    per-tensor loop (older runs, OpenOCR) would otherwise switch the resumed run back to it."""
    kernel = {k: optimizer.param_groups[0].get(k) for k in ("fused", "foreach")}
    state = {**state, "param_groups": [{**group, **kernel} for group in state["param_groups"]]}
    optimizer.load_state_dict(state)
    match_parameter_layouts(optimizer)


def match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's memory layout.

    A loaded state keeps the layout it was saved in (checkpoints hold standard-layout tensors; the model may be
    channels-last), and the fused and foreach kernels pair elements by memory offset, so a moment stored in
    another layout than its parameter would be silently updated against the wrong elements (measured: off by
    0.17 after one step on a 16x8x3x3 weight)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            slots = optimizer.state.get(param, {})
            for name, value in slots.items():
                if (isinstance(value, torch.Tensor) and value.shape == param.shape
                        and value.stride() != param.stride()):
                    slots[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def steps_per_epoch(settings: TrainSettings, samples_per_rank: int) -> int:
    if settings.drop_last:
        return max(1, samples_per_rank // settings.batch_size)
    return math.ceil(samples_per_rank / settings.batch_size)


def build_schedule(optimizer: torch.optim.Optimizer, settings: TrainSettings, per_epoch: int, lr: float):
    return build_scheduler(optimizer, settings.scheduler, per_epoch, settings.epochs, lr)


def build_sampler(settings: TrainSettings, size: int, role: ddp.Role) -> ResumableSampler:
    return ResumableSampler(size, settings.seed, shuffle=settings.shuffle, rank=role.rank,
                            world_size=role.world_size)


def build_loader(samples: list[LabelSample], settings: TrainSettings, sampler: ResumableSampler,
                 device: torch.device) -> DataLoader:
    """Workers persist across epochs (no re-fork and re-import each epoch): every sample is seeded from its
    (epoch, position) key in `__getitem__`, and the sampler's epoch and resume offset are read in the main
    process when each epoch's iterator starts, so worker lifetime changes no sample. Pinned memory on CUDA
    only, where it lets the step's non_blocking copies overlap."""
    dataset = TrainDataset(samples, settings.transforms, settings.seed, cache=settings.cache)
    summary = dataset.prepare_cache(settings.workers)  # ram: decoded here, before the workers fork
    if summary is not None:
        run_logger.info("%s", summary.describe())
    return DataLoader(dataset, batch_size=settings.batch_size, sampler=sampler, num_workers=settings.workers,
                      pin_memory=device.type == "cuda", drop_last=settings.drop_last,
                      persistent_workers=settings.workers > 0, worker_init_fn=_init_worker)


def release_workers(loader: DataLoader) -> None:
    """Stop a loader's persistent worker processes now rather than at garbage collection (end of training)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def _init_worker(worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which finishes its step and shuts them down.

    OpenCV's thread count is left alone: cv2.setNumThreads in a forked worker tears down the thread pool
    inherited from the parent and can hang on its lock (seen here), so the data code owns that choice."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def wrap_distributed(model: torch.nn.Module, device: torch.device, role: ddp.Role) -> torch.nn.Module:
    """The DDP wrapper the forward pass runs through; checkpoints keep saving the unwrapped model."""
    if not role.distributed:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
