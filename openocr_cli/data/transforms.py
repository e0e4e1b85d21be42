"""The training transform chain, built from the config's `Train.dataset.transforms` list.

Op names and parameters are OpenOCR's, so an OpenOCR YAML works unchanged. Each op takes and
returns a sample dict (`image`, `polys`, `ignore_tags`, `texts`, ...); None drops the sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import cv2
import numpy as np

from openocr_cli.errors import UserError


class DecodeImage:
    """Raw file bytes -> HWC uint8 BGR (3 channels, EXIF orientation applied)."""

    def __init__(self, img_mode: str = "BGR", channel_first: bool = False, ignore_orientation: bool = False, **_: Any):
        if img_mode not in ("BGR", "RGB", "GRAY"):
            raise UserError(f"DecodeImage.img_mode '{img_mode}' is not supported; use BGR, RGB or GRAY.")
        self.img_mode, self.channel_first = img_mode, channel_first
        self.flags = cv2.IMREAD_COLOR | (cv2.IMREAD_IGNORE_ORIENTATION if ignore_orientation else 0)

    def __call__(self, data: dict) -> Optional[dict]:
        raw = data["image"]
        if not isinstance(raw, (bytes, bytearray)) or not raw:
            return None
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), self.flags)
        if image is None:
            return None
        if self.img_mode == "GRAY":
            image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        elif self.img_mode == "RGB":
            image = image[:, :, ::-1]
        data["image"] = image.transpose(2, 0, 1) if self.channel_first else image
        return data


class DetLabelEncode:
    """Parsed regions -> `polys` (K, P, 2) float32 padded by repeating last vertices, `ignore_tags`, `texts`.

    The do-not-care flags come from the label parser (data.labels), which decides them once.

    An image with no region at all yields None, as in OpenOCR (the sample is replaced).
    """

    def __init__(self, **_: Any):
        pass

    def __call__(self, data: dict) -> Optional[dict]:
        polys = data.pop("regions")
        if not polys:
            return None
        width = max(len(p) for p in polys)
        padded = np.stack([np.concatenate([p, np.repeat(p[-1:], width - len(p), axis=0)]) for p in polys])
        data["polys"] = padded.astype(np.float32)
        data["texts"] = list(data.pop("region_texts"))
        data["ignore_tags"] = np.array(data.pop("region_ignore"), dtype=bool)
        return data


class NormalizeImage:
    """(x * scale - mean) / std, positionally over the last axis (hwc) as OpenOCR does on BGR."""

    def __init__(self, scale: Any = 1.0 / 255.0, mean=None, std=None, order: str = "chw", **_: Any):
        if isinstance(scale, str):
            scale = _parse_fraction(scale)
        shape = (3, 1, 1) if order == "chw" else (1, 1, 3)
        self.scale = np.float32(scale)
        self.mean = np.array(mean or [0.485, 0.456, 0.406], np.float32).reshape(shape)
        self.std = np.array(std or [0.229, 0.224, 0.225], np.float32).reshape(shape)

    def __call__(self, data: dict) -> dict:
        data["image"] = (data["image"].astype(np.float32) * self.scale - self.mean) / self.std
        return data


def _parse_fraction(text: str) -> float:
    """'1./255.' -> 1/255 without eval()."""
    num, _, den = text.replace(" ", "").partition("/")
    try:
        return float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"NormalizeImage.scale '{text}' is not a number or a fraction like 1./255.") from None


class ToCHWImage:
    def __init__(self, **_: Any):
        pass

    def __call__(self, data: dict) -> dict:
        data["image"] = np.ascontiguousarray(data["image"].transpose(2, 0, 1))
        return data


class KeepKeys:
    def __init__(self, keep_keys=(), **_: Any):
        self.keep_keys = list(keep_keys)

    def __call__(self, data: dict) -> list:
        return [data[k] for k in self.keep_keys]


def _registry() -> dict[str, Callable]:
    from openocr_cli.data.augment import CopyPaste, EastRandomCropData, IaaAugment
    from openocr_cli.data.targets import MakeBorderMap, MakeShrinkMap

    return {cls.__name__: cls for cls in (DecodeImage, DetLabelEncode, CopyPaste, IaaAugment, EastRandomCropData,
                                          MakeBorderMap, MakeShrinkMap, NormalizeImage, ToCHWImage, KeepKeys)}


def build_ops(op_configs: list, global_cfg: Optional[dict] = None, epoch: Optional[int] = None) -> list:
    """Instantiate each `{Name: params}` entry; Global keys are passed to every op, as OpenOCR does."""
    registry = _registry()
    ops = []
    for entry in op_configs or []:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise UserError(f"each transform must be a mapping like '- Name: {{params}}', got {entry!r}.")
        (name, params), = entry.items()
        if name not in registry:
            raise UserError(f"transform '{name}' is not supported; openocr-det knows {', '.join(sorted(registry))}.")
        kwargs = dict(params or {})
        if epoch is not None and name in ("MakeBorderMap", "MakeShrinkMap"):
            kwargs["epoch"] = epoch
        kwargs.update(global_cfg or {})
        ops.append(registry[name](**kwargs))
    return ops
