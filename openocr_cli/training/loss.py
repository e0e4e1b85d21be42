"""DBNet training loss, numerically equal to OpenOCR's DBLoss for `repvit_db.yml` (openocr-compat: balance-loss).

Terms (already weighted): 5 * balanced Dice on the probability map P, 10 * masked L1 on the
threshold map T, 1 * Dice on the approximate binary map B. Two behaviours are kept on purpose
(openocr-compat: balance-loss): the "OHEM" balance around Dice is a no-op scaling, and the shrink term is exactly
zero for a batch without positive pixels. One is fixed (openocr-compat: loss-scalar): `loss` is a scalar.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

BALANCE_EPS = 1e-6  # BalanceLoss and its inner Dice use their own fixed eps in the original
# The terms DBLoss returns, in order: what the trainer logs, metrics.jsonl records and results.png draws.
LOSS_KEYS = ("loss", "loss_shrink_maps", "loss_threshold_maps", "loss_binary_maps")


def dice_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """Batch-wide Dice: 1 - 2*sum(p*g*m) / (sum(p*m) + sum(g*m) + eps), a scalar in [0, 1].

    The original asserts `loss <= 1`, which only a NaN prediction breaks; here a NaN loss is returned
    and the trainer's non-finite guard skips that step instead of crashing the run.
    """
    intersection = (pred * gt * mask).sum()
    union = (pred * mask).sum() + (gt * mask).sum() + eps
    return 1 - 2.0 * intersection / union


def mask_l1_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean absolute error over the masked pixels of the whole batch."""
    return ((pred - gt).abs() * mask).sum() / (mask.sum() + eps)


def balanced_dice_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor,
                       negative_ratio: float) -> torch.Tensor:
    """OpenOCR's BalanceLoss(DiceLoss) in closed form.

    Dice is a scalar, so the per-pixel OHEM (top-k of neg * dice) only rescales it by
    (n_pos + n_neg) / (n_pos + n_neg + 1e-6) for the 0/1 maps the label makers produce.
    With no positive pixel n_neg is 0 too and the factor (hence value and gradient) is 0.
    The counts stay on the device (no host sync per step on CUDA); float64 keeps them exact integers and
    the arithmetic is Python's int/float one (same value and gradient, bit for bit).
    """
    dice = dice_loss(pred, gt, mask, BALANCE_EPS)
    with torch.no_grad():
        n_pos = (gt * mask).sum(dtype=torch.float64).floor()
        n_neg = torch.minimum(((1 - gt) * mask).sum(dtype=torch.float64), negative_ratio * n_pos).floor()
        n = n_pos + n_neg
    return dice * n.to(dice.dtype) / (n + BALANCE_EPS).to(dice.dtype)


class DBLoss(nn.Module):
    """DB loss on predictions (N,3,H,W) = [P, T, B] and labels (T*, T-mask, G, G-mask).

    Always computed in float32 (autocast off, inputs upcast): the sums run over whole batches of
    pixels and would lose precision in half types.
    """

    def __init__(self, alpha: float = 5, beta: float = 10, ohem_ratio: float = 3, eps: float = 1e-6,
                 balance_loss: bool = True, main_loss_type: str = "DiceLoss"):
        super().__init__()
        if main_loss_type != "DiceLoss":
            raise ValueError(f"DBLoss: main_loss_type {main_loss_type!r} is not supported (only 'DiceLoss')")
        self.alpha = alpha
        self.beta = beta
        self.ohem_ratio = ohem_ratio
        self.eps = eps
        self.balance_loss = bool(balance_loss)

    def forward(self, pred: torch.Tensor, labels: Sequence[torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        if pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(f"DBLoss expects predictions of shape (N, 3, H, W), got {tuple(pred.shape)}")
        if len(labels) != 4:
            raise ValueError("DBLoss expects labels (threshold_map, threshold_mask, shrink_map, shrink_mask)")
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred = pred.float()
            thresh_gt, thresh_mask, shrink_gt, shrink_mask = (t.to(pred.device, torch.float32) for t in labels)
            prob, thresh, binary = pred[:, 0], pred[:, 1], pred[:, 2]

            if self.balance_loss:
                shrink = balanced_dice_loss(prob, shrink_gt, shrink_mask, self.ohem_ratio)
            else:  # BalanceLoss(balance_loss=False) returns its main loss unchanged
                shrink = dice_loss(prob, shrink_gt, shrink_mask, BALANCE_EPS)
            loss_shrink = self.alpha * shrink
            loss_thresh = self.beta * mask_l1_loss(thresh, thresh_gt, thresh_mask, self.eps)
            loss_binary = dice_loss(binary, shrink_gt, shrink_mask, self.eps)
            total = loss_shrink + loss_thresh + loss_binary

        return OrderedDict(zip(LOSS_KEYS, (total, loss_shrink, loss_thresh, loss_binary)))
