"""In-memory images (a BGR ndarray as OpenCV gives, or a PIL image, which is RGB) as the BGR uint8 array
decoding a file gives, so that the same picture gives the same boxes either way."""

from __future__ import annotations

import sys
from typing import Any

import cv2
import numpy as np

from openocr_cli.errors import ImageReadError


def is_pil_image(obj: Any) -> bool:
    pil = sys.modules.get("PIL.Image")  # never import PIL just to ask
    return pil is not None and isinstance(obj, pil.Image)


def as_bgr(pixels: Any, name: str) -> np.ndarray:
    """A 3-channel BGR uint8 array: grey is expanded and alpha dropped, as cv2.imdecode(IMREAD_COLOR) does.

    An ndarray is taken as BGR (OpenCV's order) and not copied when it is already HxWx3 uint8; a PIL image
    is converted from RGB. Anything else is an ImageReadError naming `name`.
    """
    if is_pil_image(pixels):
        if pixels.width == 0 or pixels.height == 0:
            raise ImageReadError(f"{name} is an empty PIL image")
        rgb = np.asarray(pixels.convert("RGB"))
        return np.ascontiguousarray(rgb[..., ::-1])
    if not isinstance(pixels, np.ndarray):
        raise ImageReadError(f"{name} is a {type(pixels).__name__}; pass an image file path, a BGR uint8 numpy "
                             "array or a PIL image")
    if pixels.dtype != np.uint8:
        raise ImageReadError(f"{name} is a {pixels.dtype} array; pass uint8 pixels (0-255), e.g. "
                             "array.astype(np.uint8)")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = np.ascontiguousarray(pixels[..., :3])
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageReadError(f"{name} has shape {pixels.shape}; pass an H x W x 3 BGR (or H x W grey) array")
    return pixels
