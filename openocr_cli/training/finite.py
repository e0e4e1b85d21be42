"""Non-finite checks of the training step's guard: a step whose gradients hold a NaN or an inf is skipped, and a
checkpoint holding one is never written (training/trainer.py)."""

from __future__ import annotations

import torch


def gradients_finite(model: torch.nn.Module) -> bool:
    """One reduction per gradient and one sync: a tensor's max-abs norm is NaN or inf exactly when the tensor
    holds a NaN or an inf (a maximum cannot overflow, unlike a sum of squares)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.stack(torch._foreach_norm(grads, float("inf"))).isfinite().all())


def nonfinite_tensors(ckpt: dict) -> list[str]:
    """Names of the floating-point tensors of a checkpoint (weights, optimizer state) that are not finite."""
    found = [k for k, t in ckpt["state_dict"].items() if t.is_floating_point() and not torch.isfinite(t).all()]
    for pid, slots in ((ckpt.get("optimizer") or {}).get("state") or {}).items():
        found += [f"optimizer.state.{pid}.{k}" for k, t in slots.items()
                  if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()]
    return found
