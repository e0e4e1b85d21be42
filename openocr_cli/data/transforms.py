"""The training transform chain, built from the config's `Train.dataset.transforms` list.

Op names and parameters are OpenOCR's, so an OpenOCR YAML works unchanged, and a name or
parameter OpenOCR would not know is an error. Each op takes and returns a sample dict (`image`,
`polys`, `ignore_tags`, `texts`, ...); None drops the sample.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import cv2
import numpy as np

from openocr_cli.config_schema import validate_ops  # the list check lives with the other config checks
from openocr_cli.constants import IMAGENET_MEAN, IMAGENET_STD
from openocr_cli.data.augment import CopyPaste, EastRandomCropData, IaaAugment
from openocr_cli.data.resize import RESIZE_PARAMS, Normalizer
from openocr_cli.data.targets import MakeBorderMap, MakeShrinkMap
from openocr_cli.errors import UserError
from openocr_cli.geometry import pad_vertices


class DecodeImage:
    """Raw file bytes -> HWC uint8 BGR (3 channels, EXIF orientation applied).

    `image` may also hold the pixels `decode` already gave (from the decode cache, data.decode_cache):
    then only the colour mode and layout are applied.
    """

    def __init__(self, img_mode: str = "BGR", channel_first: bool = False, ignore_orientation: bool = False):
        if img_mode not in ("BGR", "RGB", "GRAY"):
            raise UserError(f"DecodeImage.img_mode '{img_mode}' is not supported; use BGR, RGB or GRAY.")
        self.img_mode, self.channel_first = img_mode, channel_first
        self.flags = cv2.IMREAD_COLOR | (cv2.IMREAD_IGNORE_ORIENTATION if ignore_orientation else 0)

    def decode(self, raw: bytes) -> Optional[np.ndarray]:
        """The file's pixels as OpenCV decodes them with this op's flags, None if they do not decode."""
        return cv2.imdecode(np.frombuffer(raw, np.uint8), self.flags)

    def __call__(self, data: dict) -> Optional[dict]:
        raw = data["image"]
        if isinstance(raw, np.ndarray):
            image = raw
        elif not isinstance(raw, (bytes, bytearray)) or not raw:
            return None
        else:
            image = self.decode(raw)
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
    An image with no region is a background image: (0, 4, 2) polys, trained with all-zero targets
    (OpenOCR drops it; openocr-compat: background-images).
    """

    def __call__(self, data: dict) -> dict:
        polys = data.pop("regions")
        width = max((len(p) for p in polys), default=4)
        padded = np.stack([pad_vertices(p, width) for p in polys]) if polys else np.zeros((0, width, 2))
        data["polys"] = padded.astype(np.float32)
        data["texts"] = list(data.pop("region_texts"))
        data["ignore_tags"] = np.array(data.pop("region_ignore"), dtype=bool)
        return data


class NormalizeImage:
    """(x * scale - mean) / std, positionally over the channels (BGR data, as OpenOCR does).

    `order` names the layout of the incoming image: hwc (after DecodeImage) or chw.
    """

    def __init__(self, scale: Any = 1.0 / 255.0, mean=None, std=None, order: str = "chw"):
        if isinstance(scale, str):
            scale = _parse_fraction(scale)
        if order not in ("chw", "hwc"):
            raise UserError(f"NormalizeImage.order '{order}' is not supported; use hwc or chw.")
        self.channels_first = order == "chw"
        self.normalizer = Normalizer(mean or IMAGENET_MEAN, std or IMAGENET_STD, scale)

    def __call__(self, data: dict) -> dict:
        data["image"] = self.normalizer.normalize(data["image"], self.channels_first)
        return data


def _parse_fraction(text: str) -> float:
    """'1./255.' -> 1/255 without eval()."""
    num, _, den = text.replace(" ", "").partition("/")
    try:
        return float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"NormalizeImage.scale '{text}' is not a number or a fraction like 1./255.") from None


class ToCHWImage:
    def __call__(self, data: dict) -> dict:
        data["image"] = np.ascontiguousarray(data["image"].transpose(2, 0, 1))
        return data


class KeepKeys:
    def __init__(self, keep_keys=()):
        self.keep_keys = list(keep_keys)

    def __call__(self, data: dict) -> list:
        return [data[k] for k in self.keep_keys]


_TRAIN_OPS: dict[str, type] = {cls.__name__: cls for cls in (
    DecodeImage, DetLabelEncode, CopyPaste, IaaAugment, EastRandomCropData, MakeBorderMap, MakeShrinkMap,
    NormalizeImage, ToCHWImage, KeepKeys)}

# Test-time ops: only their parameters are checked here (data.resize applies them).
_TEST_OPS = {"DetResizeForTest": RESIZE_PARAMS}


def op_parameters(name: str) -> tuple[str, ...]:
    """The parameter names transform `name` takes, sorted (a training op's from its signature).

    The config check (config_schema.TRANSFORM_PARAMS, which cannot import this layer) lists the same names.
    """
    if name in _TEST_OPS:
        return tuple(sorted(_TEST_OPS[name]))
    return tuple(sorted(inspect.signature(_TRAIN_OPS[name]).parameters))


def build_ops(op_configs: list, epoch: Optional[int] = None) -> list:
    """Validate, then instantiate each `{Name: params}` entry of `Train.dataset.transforms`.

    Each op gets exactly its own parameters, plus `epoch` for MakeBorderMap / MakeShrinkMap
    (Global keys never reach the ops: openocr-compat transform-params).
    """
    where = "Train.dataset.transforms"
    validate_ops(op_configs, where)
    ops = []
    for i, entry in enumerate(op_configs):
        (name, params), = entry.items()
        if name not in _TRAIN_OPS:
            raise UserError(f"{where}.{i}.{name} is a test-time transform; the training chain cannot use it.")
        kwargs = dict(params or {})
        if epoch is not None and name in ("MakeBorderMap", "MakeShrinkMap"):
            kwargs["epoch"] = epoch
        ops.append(_TRAIN_OPS[name](**kwargs))
    for op, following in zip(ops, ops[1:]):  # the crop computes only the augmented rows it keeps
        if isinstance(op, IaaAugment) and isinstance(following, EastRandomCropData):
            op.defer_pixels = True
    return ops
