"""Forward passes behind one interface: a normalised NCHW float32 batch in, (N, 1, H, W) probabilities out.

Pre- and post-processing are shared by every backend, so swapping torch for another runtime
changes only this step.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from openocr_cli.checkpoint import LoadReport, load_weights
from openocr_cli.errors import UserError


def resolve_device(spec: Optional[str]) -> torch.device:
    """cpu, cuda, cuda:N (or OpenOCR's 'gpu'); default cuda when available. Clear errors otherwise."""
    if spec is None or spec == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = spec.strip().lower().replace("gpu", "cuda")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UserError(f"--device '{spec}' is not a device; use cpu, cuda or cuda:N.", exit_code=2) from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device '{spec}' is not supported; use cpu, cuda or cuda:N.", exit_code=2)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: CUDA is not available on this machine (PyTorch {torch.__version__}). "
                            "Use --device cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
    return device


def load_detector(weights: Path, arch: Optional[dict] = None, strict: bool = True,
                  fuse: bool = True) -> tuple[torch.nn.Module, LoadReport]:
    """Checkpoint -> eval-mode DBDetector (re-parameterised when `fuse`): the one place export and the
    torch backend build their model."""
    from openocr_cli.model import build_detector

    model = build_detector(arch)
    report = load_weights(model, weights, strict=strict)
    model.eval()
    if fuse:
        model.fuse()
    return model, report


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def precision_problem(precision: str, device: torch.device) -> Optional[str]:
    """Why `precision` cannot run on `device` (None: it can). bf16 needs a CPU with AVX-512 BF16 or AMX (what
    oneDNN's bf16 kernels use; elsewhere autocast would emulate it, slower than fp32) or a CUDA GPU with bf16;
    fp16 autocast is for CUDA only (on CPU it is emulated and slower than fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda":
            return None if torch.cuda.is_bf16_supported() else f"this GPU ({torch.cuda.get_device_name(device)}) " \
                                                                 "has no bf16 support"
        cpu = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
            getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        return None if cpu else "this CPU has neither AVX-512 BF16 nor AMX, so PyTorch would emulate bf16"
    if precision == "fp16":
        return None if device.type == "cuda" else "fp16 autocast runs on CUDA only (on a CPU it is emulated)"
    return f"PyTorch runs fp32, bf16 (autocast) and fp16 (CUDA autocast), not {precision}"


class TorchBackend:
    """A loaded, eval-mode DBDetector on one device.

    `channels_last` stores activations NHWC, which oneDNN runs about 25% faster on CPU (measured
    with benchmarks/bench_predict.py); the trainer's evaluation leaves its model's layout alone.
    `precision` bf16/fp16 runs the forward pass under torch.autocast (weights stay float32, the
    probability map comes back as float32); see `precision_problem` for where that is supported.
    """

    name = "torch"
    precision = "fp32"

    def __init__(self, model: torch.nn.Module, device: torch.device, channels_last: bool = False):
        self.model = model.to(device).eval()
        self.saved_config: Optional[dict] = None  # the checkpoint's config, when it carries one
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.device = device

    @classmethod
    def from_checkpoint(cls, weights: Path, device: torch.device, arch: Optional[dict] = None,
                        strict: bool = True, fuse: bool = True) -> TorchBackend:
        model, report = load_detector(weights, arch, strict, fuse)
        backend = cls(model, device, channels_last=device.type == "cpu")
        backend.saved_config = report.saved_config
        return backend

    def with_precision(self, precision: str) -> TorchBackend:
        """The same model (shared, not copied) run at another precision; refused where it cannot run."""
        if precision == self.precision:
            return self
        problem = precision_problem(precision, self.device)
        if problem is not None:
            raise UserError(f"--precision {precision} cannot run on {self.device}: {problem}; use --precision fp32"
                            f"{' or bf16' if precision_problem('bf16', self.device) is None else ''}.", exit_code=2)
        variant = copy.copy(self)
        variant.precision = precision
        return variant

    def _autocast(self):
        dtype = AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        with self._autocast():
            out = self.model(x)
        return np.ascontiguousarray(out.float().cpu().numpy())
