"""IaaAugment's pixel work, done later: the crop after it warps its window straight from the source.

IaaAugment draws its random parameters and maps the points at once, but can hand on its image as a
PlannedImage: the source image plus the steps (flip, rotation, scale) that produce it. Each step is
an affine map of pixel coordinates, and so are EastRandomCropData's crop and resize, so the crop
asks for its window at its output size and gets it from one bilinear warp of the source rows and
columns that window comes from (openocr-compat: crop-one-warp). OpenOCR computes the whole flipped,
rotated and up to 3x scaled image, then crops a part and resizes it again: three interpolations, of
which the crop keeps about a sixth. `full()` still runs the steps one by one, as OpenOCR does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


def _via_bgra(warp: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """`warp(image)`, run on 4 channels for a BGR uint8 image: OpenCV's bilinear warp has a vector path for
    4 channels but not for 3 (the same values, faster)."""
    if not (image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        return warp(image)
    return cv2.cvtColor(warp(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)), cv2.COLOR_BGRA2BGR)


@dataclass
class AlbuStep:
    """One albumentations transform's image function with the parameters it drew.

    `flip`: a horizontal flip (output row i is source row i mirrored); otherwise an affine warp
    whose `params["matrix"]` maps source to output pixel coordinates, as cv2.warpAffine takes it.
    """

    apply: Callable[..., np.ndarray]  # the albumentations class's own `apply`, called unbound
    transform: Any
    params: dict
    flip: bool

    def out_shape(self, shape: tuple) -> tuple:
        if "output_shape" not in self.params:
            return shape
        height, width = self.params["output_shape"][:2]
        return (int(np.round(height)), int(np.round(width))) + tuple(shape[2:])

    def affine(self, shape: tuple) -> np.ndarray:
        """The 3x3 map from this step's input pixel coordinates (of an image of `shape`) to its output's."""
        if self.flip:
            return np.array([[-1.0, 0.0, shape[1] - 1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        return np.asarray(self.params["matrix"], np.float64)

    def run(self, image: np.ndarray) -> np.ndarray:
        if self.flip or getattr(self.transform, "interpolation", None) != cv2.INTER_LINEAR:
            return self.apply(self.transform, image, **self.params)
        return _via_bgra(lambda pixels: self.apply(self.transform, pixels, **self.params), image)


@dataclass
class Scale:
    """Bilinear resize to `size` = (width, height), as imgaug's Resize (RandomScale) does."""

    size: tuple[int, int]

    def out_shape(self, shape: tuple) -> tuple:
        return (self.size[1], self.size[0]) + tuple(shape[2:])

    def affine(self, shape: tuple) -> np.ndarray:
        """cv2.resize's map: pixel centres stay centres, x' = (x + 0.5) * out_w / in_w - 0.5."""
        return _resize_affine(self.size[0] / shape[1], self.size[1] / shape[0])

    def run(self, image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)


def _resize_affine(fx: float, fy: float, left: float = 0.0, top: float = 0.0) -> np.ndarray:
    """Crop at (left, top), then resize by (fx, fy) with cv2.resize's pixel-centre convention."""
    return np.array([[fx, 0.0, (0.5 - left) * fx - 0.5], [0.0, fy, (0.5 - top) * fy - 0.5], [0.0, 0.0, 1.0]])


class PlannedImage:
    """An image given as a source and the steps that produce it: `shape` and `dtype` without any pixels."""

    def __init__(self, source: np.ndarray, steps: list):
        self.source, self.steps = source, list(steps)
        self.shapes = [tuple(source.shape)]
        for step in self.steps:
            self.shapes.append(step.out_shape(self.shapes[-1]))
        self.dtype = source.dtype

    @property
    def shape(self) -> tuple:
        return self.shapes[-1]

    def full(self) -> np.ndarray:
        """Every step in turn on the whole image, as OpenOCR computes it."""
        image = self.source
        for step in self.steps:
            image = step.run(image)
        return image

    def resized_window(self, left: int, top: int, width: int, height: int, size: tuple[int, int]) -> np.ndarray:
        """The window [left, left + width) x [top, top + height) of the planned image, resized to `size`
        = (w, h) as cv2.resize does, in one bilinear warp of the source (constant black outside it)."""
        out_w, out_h = size
        matrix = np.eye(3)
        for step, shape in zip(self.steps, self.shapes):
            matrix = step.affine(shape) @ matrix
        matrix = _resize_affine(out_w / width, out_h / height, left, top) @ matrix
        # Only the source block the window maps back to (bilinear reads one pixel beyond) is read.
        corners = np.array([[-1, -1, 1], [out_w, -1, 1], [-1, out_h, 1], [out_w, out_h, 1]], np.float64)
        back = corners @ np.linalg.inv(matrix)[:2].T
        rows, cols = self.source.shape[:2]
        x0, y0 = (max(0, math.floor(v) - 1) for v in back.min(axis=0))
        x1, y1 = min(cols, math.ceil(back[:, 0].max()) + 2), min(rows, math.ceil(back[:, 1].max()) + 2)
        out_shape = (out_h, out_w) + self.source.shape[2:]
        if x0 >= x1 or y0 >= y1:
            return np.zeros(out_shape, self.dtype)
        block = self.source[y0:y1, x0:x1]
        matrix = matrix @ np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])  # block -> source coordinates
        out = _via_bgra(lambda pixels: cv2.warpAffine(pixels, matrix[:2], (out_w, out_h), flags=cv2.INTER_LINEAR,
                                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0), block)
        return out.reshape(out_shape)
