"""DB head: a shrink-probability map P and, in training, a threshold map T and soft binary map B."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DBMapHead(nn.Module):
    """3x3 conv-BN-ReLU, then two stride-2 transposed convs back to input resolution, sigmoid."""

    def __init__(self, in_channels: int):
        super().__init__()
        mid = in_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 3, padding=1, bias=False)
        self.conv_bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.ConvTranspose2d(mid, mid, 2, stride=2)
        self.conv_bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.ConvTranspose2d(mid, 1, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv_bn1(self.conv1(x)))
        x = F.relu(self.conv_bn2(self.conv2(x)))
        return torch.sigmoid(self.conv3(x))


class DBHead(nn.Module):
    """Eval: P (N,1,H,W) only, so inference skips the threshold branch. Train: cat[P, T, B] (N,3,H,W)."""

    def __init__(self, in_channels: int = 96, k: float = 50):
        super().__init__()
        self.k = k
        self.binarize = DBMapHead(in_channels)
        self.thresh = DBMapHead(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shrink = self.binarize(x)
        if not self.training:
            return shrink
        thresh = self.thresh(x)
        # Differentiable binarisation written as the original does (exp overflow -> B = 0).
        binary = torch.reciprocal(1 + torch.exp(-self.k * (shrink - thresh)))
        return torch.cat([shrink, thresh, binary], dim=1)
