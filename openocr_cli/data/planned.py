"""IaaAugment's pixel work, done later and only for the rows the crop after it keeps.

IaaAugment draws its random parameters and maps the points at once, but can hand on its image as a
PlannedImage: the source image plus the steps (flip, rotation, scale) that produce it.
EastRandomCropData reads `shape`, chooses its window from the points, and asks for the top-left
block down to the window's bottom-right corner, computed from the source rows that block comes
from. OpenCV computes every output row on its own - a flip row from its source row, a warp row from
the matrix and the source rows it maps back to, a resize row from two source rows at the given
scale - so the first r rows come out exactly as the full-size call gives them; columns too, away
from the right end of a row (COLUMN_MARGIN). tests/test_augment.py checks this on random cases.
On the default chain that block is about a third of the up to 3x scaled image (the crop window
itself about a sixth); the rest is never computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# Columns computed beyond the last one needed. OpenCV's vector loops finish a row with a shorter tail
# whose rounding may differ, so a needed column must be this far from the right end of both the
# partial and the full output (tails are under 64 px even for 4-channel AVX-512 loops).
COLUMN_MARGIN = 128


def _partial_width(cols: int, width: int) -> int:
    """Output width to compute so that the first `cols` columns equal the full-width call's."""
    return width if cols + COLUMN_MARGIN >= width else cols + COLUMN_MARGIN


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

    def source_window(self, rows: int, cols: int, shape: tuple) -> tuple[int, int]:
        if self.row_local:
            return rows, shape[1]
        width = _partial_width(cols, self.out_shape(shape)[1])
        return _warp_source_rows(self.params["matrix"], rows, width, shape[0]), shape[1]

    def run(self, image: np.ndarray, shape: tuple, rows: int, cols: int) -> np.ndarray:
        if self.row_local:  # mirrored: output columns [0, cols) are source columns [W - cols, W)
            return self.apply(self.transform, image[:rows, shape[1] - cols:], **self.params)
        params = dict(self.params)
        out_w = self.out_shape(shape)[1]
        if "output_shape" in params:
            params["output_shape"] = (rows, _partial_width(cols, out_w))
        # OpenCV's bilinear warp has a vector path for 4 channels but not for 3: the same values, faster.
        bgra = (image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
                and getattr(self.transform, "interpolation", None) == cv2.INTER_LINEAR)
        if bgra:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
        out = self.apply(self.transform, image, **params)[:rows, :cols]
        return cv2.cvtColor(out, cv2.COLOR_BGRA2BGR) if bgra else out


def _warp_source_rows(matrix: np.ndarray, rows: int, cols: int, height: int) -> int:
    """Source rows an affine warp (matrix: source -> output) reads for its top-left rows x cols output.

    The block's corners map back to the extremes of the source rows sampled; bilinear reads the row
    below too, and +3 covers OpenCV's fixed-point coordinates. Rows below only feed other outputs.
    """
    if rows <= 0 or cols <= 0:
        return min(height, 1)
    corners = np.array([[0, 0, 1], [cols - 1, 0, 1], [0, rows - 1, 1], [cols - 1, rows - 1, 1]], np.float64)
    lowest = (corners @ np.linalg.inv(np.asarray(matrix, np.float64)).T)[:, 1].max()
    return int(min(height, max(1, math.ceil(lowest) + 3)))


def _source_extent(count: int, size: int, out_size: int) -> int:
    """Source rows (or columns) from which a resize's first `count` outputs are computed exactly.

    Output y blends source floor((y + 0.5) * size / out_size - 0.5) and the next; +3 covers OpenCV's
    float rounding. The second term makes the partial call's own output at least `count` long.
    """
    if count >= out_size:
        return size
    scale = size / out_size
    return min(size, max(math.floor((count - 0.5) * scale) + 3, math.ceil((count + 0.5) * scale) + 1))


@dataclass
class Scale:
    """Bilinear resize to `size` = (width, height), as imgaug's Resize (RandomScale) does."""

    size: tuple[int, int]

    def out_shape(self, shape: tuple) -> tuple:
        return (self.size[1], self.size[0]) + tuple(shape[2:])

    def source_window(self, rows: int, cols: int, shape: tuple) -> tuple[int, int]:
        (height, width), (out_w, out_h) = shape[:2], self.size
        src_rows = _source_extent(rows, height, out_h)
        src_cols = _source_extent(_partial_width(cols, out_w), width, out_w)
        # OpenCV copies instead of resizing when the output size equals the input size (cvRound, half to even).
        if round(src_rows * (out_h / height)) == src_rows and round(src_cols * (out_w / width)) == src_cols:
            return height, width
        return src_rows, src_cols

    def run(self, image: np.ndarray, shape: tuple, rows: int, cols: int) -> np.ndarray:
        (out_w, out_h), (height, width) = self.size, shape[:2]
        if image.shape[:2] == (height, width):
            return cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)[:rows, :cols]
        # The same factors as the full call (OpenCV derives them as out/in), applied to the top-left part.
        out = cv2.resize(image, None, fx=out_w / width, fy=out_h / height, interpolation=cv2.INTER_LINEAR)
        if out.shape[0] < rows or out.shape[1] < cols:
            raise RuntimeError(f"partial resize gave {out.shape[:2]}, wanted at least {rows} x {cols}")
        return out[:rows, :cols]


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

    def window(self, rows: int, cols: int) -> np.ndarray:
        """The top-left `rows` x `cols` pixels, exactly as computing the whole image and slicing it."""
        wanted = [(max(0, min(int(rows), self.shape[0])), max(0, min(int(cols), self.shape[1])))]
        for step, shape in zip(self.steps[::-1], self.shapes[-2::-1]):  # what each step needs, last step first
            wanted.append(step.source_window(*wanted[-1], shape))
        image = self.source[:wanted[-1][0], :wanted[-1][1]]
        for step, shape, (r, c) in zip(self.steps, self.shapes, wanted[-2::-1]):
            image = step.run(image, shape, r, c)
        return image

    def rows(self, count: int) -> np.ndarray:
        return self.window(count, self.shape[1])

    def full(self) -> np.ndarray:
        return self.window(self.shape[0], self.shape[1])
