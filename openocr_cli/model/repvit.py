"""RepViT backbone (OpenOCR's `RepSVTR_det`) and its inference-time re-parameterisation.

Module and child names mirror the released checkpoint's state_dict keys
(`features.<i>.token_mixer.0.conv.c.weight`, ...), so weights load with strict=True.
Training and checkpoints use the multi-branch form; `fuse()` collapses each Conv+BN and each
RepVGGDW into one conv for faster inference with numerically equivalent output.
"""

from __future__ import annotations

import torch
from torch import nn

# Block table for features[1:]: (output channels, squeeze-excite, stride). features[0] is the
# stride-4 patch embedding (3 -> 24 -> 48); every block's channel mixer widens by 2x.
BLOCKS: tuple[tuple[int, bool, int], ...] = (
    (48, True, 1), (48, False, 1),
    (96, False, 2), (96, True, 1), (96, False, 1),
    (192, False, 2), (192, True, 1), (192, False, 1), (192, True, 1), (192, False, 1),
    (384, False, 2), (384, True, 1), (384, False, 1),
)
OUT_INDICES = (2, 5, 10, 13)


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as y = x * scale + shift, per channel, computed in float64 for exact folding."""
    std = (bn.running_var.double() + bn.eps).sqrt()
    weight = bn.weight.double() if bn.weight is not None else torch.ones_like(std)
    bias = bn.bias.double() if bn.bias is not None else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean.double() * scale


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A biased Conv2d with `conv`'s geometry holding the given (float64) weight and bias."""
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    dilation=conv.dilation, groups=conv.groups, bias=True,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight.to(conv.weight.dtype))
        out.bias.copy_(bias.to(conv.weight.dtype))
    return out


class Conv2D_BN(nn.Sequential):
    """Bias-free conv followed by BN (children `c`, `bn`); folds into one biased conv."""

    def __init__(self, inp: int, oup: int, ks: int = 1, stride: int = 1, pad: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(inp, oup, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(oup))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        scale, shift = _bn_affine(self.bn)
        return _conv_like(self.c, self.c.weight.double() * scale.view(-1, 1, 1, 1), shift)


class SqueezeExcite(nn.Module):
    """Backbone SE: mean-pool, 1x1 reduce (bias), ReLU, 1x1 expand (bias), sigmoid gate."""

    def __init__(self, channels: int):
        super().__init__()
        reduced = max(8, int(channels / 4 + 4) // 8 * 8)  # C/4 rounded to a multiple of 8
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class RepVGGDW(nn.Module):
    """Depthwise bn(3x3 conv-bn + 1x1 conv + identity): three branches while training, one conv after fuse."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2D_BN(channels, channels, 3, 1, 1, groups=channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, groups=channels, bias=True)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x) + self.conv1(x) + x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        conv3 = self.conv.fuse()
        weight = conv3.weight.double().clone()
        bias = conv3.bias.double() + self.conv1.bias.double()
        weight[:, :, 1, 1] += self.conv1.weight.double()[:, :, 0, 0] + 1.0  # 1x1 branch + identity
        scale, shift = _bn_affine(self.bn)
        return _conv_like(conv3, weight * scale.view(-1, 1, 1, 1), bias * scale + shift)


class Residual(nn.Module):
    """x + m(x). Not fused itself: its Conv2D_BN children are fused by the tree walk."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class RepViTBlock(nn.Module):
    """Token mixer (depthwise spatial, optional SE, downsampling when stride 2) then residual 2x MLP."""

    def __init__(self, inp: int, oup: int, stride: int, use_se: bool):
        super().__init__()
        se = SqueezeExcite(inp) if use_se else nn.Identity()
        if stride == 1:
            if inp != oup:
                raise ValueError(f"stride-1 RepViTBlock needs inp == oup, got {inp} -> {oup}")
            self.token_mixer = nn.Sequential(RepVGGDW(inp), se)
        else:
            self.token_mixer = nn.Sequential(
                Conv2D_BN(inp, inp, 3, stride, 1, groups=inp), se, Conv2D_BN(inp, oup, 1))
        self.channel_mixer = Residual(nn.Sequential(
            Conv2D_BN(oup, 2 * oup), nn.GELU(), Conv2D_BN(2 * oup, oup, bn_weight_init=0.0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class RepViTBackbone(nn.Module):
    """OpenOCR's RepSVTR_det: returns 4 feature maps at strides 4/8/16/32 with 48/96/192/384 channels."""

    out_channels = [48, 96, 192, 384]

    def __init__(self, in_channels: int = 3):
        super().__init__()
        patch_embed = nn.Sequential(Conv2D_BN(in_channels, 24, 3, 2, 1), nn.GELU(),
                                    Conv2D_BN(24, 48, 3, 2, 1))
        layers: list[nn.Module] = [patch_embed]
        channels = 48
        for oup, use_se, stride in BLOCKS:
            layers.append(RepViTBlock(channels, oup, stride, use_se))
            channels = oup
        self.features = nn.ModuleList(layers)
        self.out_indices = OUT_INDICES

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


@torch.no_grad()
def reparameterize(module: nn.Module) -> nn.Module:
    """Fuse in place: children with fuse() are replaced by the result (then walked), leftover BNs dropped.

    This is OpenOCR's inference-time walk; applied to the backbone only, since the neck/head BNs
    sit after non-linearities or transposed convs and stay as they are.
    """
    for name, child in list(module.named_children()):
        fuse = getattr(child, "fuse", None)
        if callable(fuse):
            child = fuse()
            setattr(module, name, child)
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.Identity())
        else:
            reparameterize(child)
    return module


__all__ = ["Conv2D_BN", "SqueezeExcite", "RepVGGDW", "Residual", "RepViTBlock", "RepViTBackbone",
           "reparameterize", "OUT_INDICES"]
