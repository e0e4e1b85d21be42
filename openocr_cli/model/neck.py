"""RSEFPN neck: fuses the four backbone maps into one 1/4-resolution map for the DB head.

Two details are kept exactly as the released weights were trained (openocr-compat: neck-details): the SE
gate is PyTorch's hard-sigmoid relu6(z + 3) / 6, and p5 comes from in5 (not a top-down sum),
with the output concatenated as [p5, p4, p3, p2].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NeckSE(nn.Module):
    """Squeeze-excite with a C/4 bottleneck and a hard-sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1)
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.conv2(F.relu(self.conv1(self.avg_pool(x))))
        return x * F.hardsigmoid(gate)


class RSELayer(nn.Module):
    """Bias-free k x k conv, then SE re-weighting; `shortcut` adds the conv output back."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, shortcut: bool = True):
        super().__init__()
        self.in_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.se_block = NeckSE(out_channels)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.in_conv(x)
        return z + self.se_block(z) if self.shortcut else self.se_block(z)


def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="nearest")


class RSEFPN(nn.Module):
    """Top-down FPN over (c2, c3, c4, c5); output has `out_channels` channels at stride 4."""

    def __init__(self, in_channels: list[int], out_channels: int = 96, shortcut: bool = True):
        super().__init__()
        if len(in_channels) != 4 or out_channels % 4:
            raise ValueError("RSEFPN needs 4 input widths and out_channels divisible by 4")
        self.out_channels = out_channels
        self.ins_conv = nn.ModuleList(RSELayer(c, out_channels, 1, shortcut) for c in in_channels)
        self.inp_conv = nn.ModuleList(RSELayer(out_channels, out_channels // 4, 3, shortcut)
                                      for _ in in_channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        c2, c3, c4, c5 = features
        in5 = self.ins_conv[3](c5)
        out4 = self.ins_conv[2](c4) + _up(in5, 2)
        out3 = self.ins_conv[1](c3) + _up(out4, 2)
        out2 = self.ins_conv[0](c2) + _up(out3, 2)
        p5 = _up(self.inp_conv[3](in5), 8)
        p4 = _up(self.inp_conv[2](out4), 4)
        p3 = _up(self.inp_conv[1](out3), 2)
        p2 = self.inp_conv[0](out2)
        return torch.cat([p5, p4, p3, p2], dim=1)
