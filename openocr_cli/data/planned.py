"""IaaAugment's pixel work, done later and only for the rows the crop after it keeps.

IaaAugment draws its random parameters and maps the points at once, but can hand on its image as a
PlannedImage: the source image plus the steps (flip, rotation, scale) that produce it.
EastRandomCropData reads `shape`, chooses its window from the points, and asks for the first rows
it needs (full width). OpenCV computes every output row on its own - a flip row from its source
row, a warp row from the matrix and the whole source, a resize row from two source rows at the
given scale - so the first r rows come out exactly as the full-size call gives them
(tests/test_augment.py checks this on random cases). On the default chain the crop window ends on
average well above the bottom of the up to 3x scaled image; rows below it are never computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass
class AlbuStep:
    """One albumentations transform's image function with the parameters it drew.

    `row_local`: output row i depends on source row i only (a horizontal flip); otherwise every
    source row is needed (a rotation).
    """

    apply: Callable[..., np.ndarray]  # the albumentations class's own `apply`, called unbound
    transform: Any
    params: dict
    row_local: bool

    def out_shape(self, shape: tuple) -> tuple:
        if "output_shape" not in self.params:
            return shape
        height, width = self.params["output_shape"][:2]
        return (int(np.round(height)), int(np.round(width))) + tuple(shape[2:])

    def source_rows(self, rows: int, shape: tuple) -> int:
        return rows if self.row_local else shape[0]

    def run(self, image: np.ndarray, shape: tuple, rows: int) -> np.ndarray:
        if self.row_local:
            return self.apply(self.transform, image[:rows], **self.params)
        params = dict(self.params)
        if "output_shape" in params:
            params["output_shape"] = (rows, self.out_shape(shape)[1])
        # OpenCV's bilinear warp has a vector path for 4 channels but not for 3: the same values, faster.
        bgra = (image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
                and getattr(self.transform, "interpolation", None) == cv2.INTER_LINEAR)
        if bgra:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
        out = self.apply(self.transform, image, **params)[:rows]
        return cv2.cvtColor(out, cv2.COLOR_BGRA2BGR) if bgra else out


@dataclass
class Scale:
    """Bilinear resize to `size` = (width, height), as imgaug's Resize (RandomScale) does."""

    size: tuple[int, int]

    def out_shape(self, shape: tuple) -> tuple:
        return (self.size[1], self.size[0]) + tuple(shape[2:])

    def source_rows(self, rows: int, shape: tuple) -> int:
        height, out_h = shape[0], self.size[1]
        if rows >= out_h:
            return height
        # Output row y blends source rows floor((y + 0.5) * height / out_h - 0.5) and the next; +3 covers
        # OpenCV's float rounding. The second term makes the prefix's own output at least `rows` high.
        scale = height / out_h
        rows = min(height, max(math.floor((rows - 0.5) * scale) + 3, math.ceil((rows + 0.5) * scale) + 1))
        # OpenCV copies instead of resizing when the output size equals the input size (cvRound, half to even).
        same_size = self.size[0] == shape[1] and round(rows * (out_h / height)) == rows
        return height if same_size else rows

    def run(self, image: np.ndarray, shape: tuple, rows: int) -> np.ndarray:
        (out_w, out_h), (height, width) = self.size, shape[:2]
        if image.shape[0] == height:
            return cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)[:rows]
        # The same factors as the full call (OpenCV derives them as out/in), applied to the first rows.
        out = cv2.resize(image, None, fx=out_w / width, fy=out_h / height, interpolation=cv2.INTER_LINEAR)
        if out.shape[1] != out_w or out.shape[0] < rows:
            raise RuntimeError(f"partial resize gave {out.shape[:2]}, wanted {rows} rows of width {out_w}")
        return out[:rows]


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

    def rows(self, count: int) -> np.ndarray:
        """The first `count` rows, full width, exactly as computing the whole image and slicing it."""
        count = max(0, min(int(count), self.shape[0]))
        wanted = [count]  # rows each step must output, last step first
        for step, shape in zip(self.steps[::-1], self.shapes[-2::-1]):
            wanted.append(step.source_rows(wanted[-1], shape))
        image = self.source[:wanted[-1]]
        for step, shape, rows in zip(self.steps, self.shapes, wanted[-2::-1]):
            image = step.run(image, shape, rows)
        return image

    def full(self) -> np.ndarray:
        return self.rows(self.shape[0])
