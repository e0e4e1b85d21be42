"""Test-time preprocessing exactly as OpenOCR's DetResizeForTest + NormalizeImage + ToCHWImage.

The rounding rules (truncate, then half-to-even to multiples of 32, minimum 32) decide the
network input size and therefore the metric, so they are kept bit-for-bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from openocr_cli.config_schema import TRANSFORM_PARAMS
from openocr_cli.constants import IMAGENET_MEAN, IMAGENET_STD
from openocr_cli.errors import SettingError, UserError

LIMIT_TYPES = ("max", "min", "resize_long")
MAX_SIDE = 8192  # a network input side: 8192 x 8192 is 800 MB as the float32 input alone
# The DetResizeForTest parameters ResizeSpec.from_params reads (config checks accept exactly these).
RESIZE_PARAMS = TRANSFORM_PARAMS["DetResizeForTest"]


@dataclass(frozen=True)
class ResizeSpec:
    """Which DetResizeForTest mode to apply; built from the config's op parameters."""

    limit_side_len: int = 960
    limit_type: str = "max"
    resize_long: Optional[int] = None
    image_shape: Optional[tuple[int, int]] = None
    keep_ratio: bool = False

    @classmethod
    def from_params(cls, params: dict) -> ResizeSpec:
        """Mirror OpenOCR's mode selection: image_shape, then limit_side_len, then resize_long."""
        if params.get("image_shape"):
            h, w = params["image_shape"]
            return cls(image_shape=(int(h), int(w)), keep_ratio=bool(params.get("keep_ratio", False)))
        if "limit_side_len" in params:
            spec = cls(limit_side_len=int(params["limit_side_len"]), limit_type=str(params.get("limit_type", "min")))
        elif "resize_long" in params:
            spec = cls(resize_long=int(params["resize_long"]))
        else:
            spec = cls(limit_side_len=736, limit_type="min")
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.limit_type not in LIMIT_TYPES:
            raise SettingError(f"limit type '{self.limit_type}' is not supported; use one of "
                               f"{', '.join(LIMIT_TYPES)}.")
        for side in [self.limit_side_len] + ([self.resize_long] if self.resize_long is not None else []):
            if not 1 <= side <= MAX_SIDE:
                raise SettingError(f"the limit side length must be 1 to {MAX_SIDE} pixels, got {side}; for large "
                                   "images use --tile.")


def _round32(v: int) -> int:
    return max(int(round(v / 32) * 32), 32)


def target_size(h: int, w: int, spec: ResizeSpec) -> tuple[int, int]:
    """Network input (height, width) for an h x w image under `spec`."""
    if spec.image_shape is not None:
        th, tw = spec.image_shape
        if spec.keep_ratio:
            tw = int(math.ceil(w * th / h / 32) * 32)
        return th, tw
    if spec.resize_long is not None:
        ratio = spec.resize_long / max(h, w)
        rh, rw = int(h * ratio), int(w * ratio)
        return int(math.ceil(rh / 128) * 128), int(math.ceil(rw / 128) * 128)
    side = spec.limit_side_len
    if spec.limit_type == "max":
        ratio = side / max(h, w) if max(h, w) > side else 1.0
    elif spec.limit_type == "min":
        ratio = side / min(h, w) if min(h, w) < side else 1.0
    else:
        ratio = side / max(h, w)
    return _round32(int(h * ratio)), _round32(int(w * ratio))


def resize_for_test(image: np.ndarray, spec: ResizeSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize a BGR image for the network; returns it with the ORIGINAL (src_h, src_w).

    Images with h + w < 64 are zero-padded to at least 32 x 32 first while the recorded source size
    stays unpadded (OpenOCR's behaviour, kept for parity).
    """
    src_h, src_w = image.shape[:2]
    if src_h + src_w < 64:
        padded = np.zeros((max(32, src_h), max(32, src_w), image.shape[2]), dtype=image.dtype)
        padded[:src_h, :src_w] = image
        image = padded
    h, w = image.shape[:2]
    th, tw = target_size(h, w, spec)
    if (th, tw) != (h, w):
        image = cv2.resize(image, (tw, th))
    return image, (src_h, src_w)


class Normalizer:
    """(x * scale - mean) / std per channel, positionally on BGR data (openocr-compat: bgr-imagenet), in float32.

    Calling it turns an HWC image into the network's contiguous CHW input; `normalize` keeps the
    layout (the training op NormalizeImage uses it for HWC and CHW images). A uint8 image is looked
    up in a 256-entry table per channel holding that formula's float32 results, so the output is
    the formula's bit for bit at a fraction of the cost; other dtypes are computed.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 scale: float = 1.0 / 255.0):
        if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
            raise UserError("mean and std need three values each, and std must not contain 0.", exit_code=2)
        self.scale = np.float32(scale)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        table = self._formula(np.arange(256, dtype=np.uint8).reshape(256, 1, 1).repeat(3, axis=2), False)
        self.tables = [np.ascontiguousarray(table[:, 0, c]) for c in range(3)]

    def _formula(self, image: np.ndarray, channels_first: bool) -> np.ndarray:
        shape = (3, 1, 1) if channels_first else (3,)
        return (image.astype(np.float32) * self.scale - self.mean.reshape(shape)) / self.std.reshape(shape)

    def _planes(self, image: np.ndarray, channels_first: bool) -> np.ndarray:
        """Contiguous (3, H, W) float32 result of a uint8 image, one table lookup per channel."""
        planes = image if channels_first else cv2.split(np.ascontiguousarray(image))
        out = np.empty((3,) + planes[0].shape, np.float32)
        for c in range(3):
            cv2.LUT(np.ascontiguousarray(planes[c]), self.tables[c], dst=out[c])
        return out

    def _fast(self, image: np.ndarray, channels_first: bool) -> bool:
        channels = image.shape[0] if channels_first else image.shape[-1]
        return image.dtype == np.uint8 and image.ndim == 3 and channels == 3 and image.size > 0

    def normalize(self, image: np.ndarray, channels_first: bool = False) -> np.ndarray:
        """Normalised float32 copy of an HWC (or, with channels_first, CHW) image.

        An HWC result is a view of a CHW-contiguous buffer, so a following HWC -> CHW transpose is free.
        """
        if not self._fast(image, channels_first):
            return self._formula(image, channels_first)
        out = self._planes(image, channels_first)
        return out if channels_first else out.transpose(1, 2, 0)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if not self._fast(image, False):
            return np.ascontiguousarray(self._formula(image, False).transpose(2, 0, 1))
        return self._planes(image, False)
