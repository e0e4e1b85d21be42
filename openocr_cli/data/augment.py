"""Geometric training augmentations: CopyPaste, IaaAugment and EastRandomCropData.

They reproduce OpenOCR's ops (docs/openocr-compat.md), including the random-number usage that shapes
the crop/paste distribution, with the fixes crop-regions, numpy2-crop and augment-seeds. Every op takes and returns a
sample dict with `image` (HWC uint8 BGR), `polys` (K, P, 2), `ignore_tags` (K,) bool and `texts`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

import cv2
import numpy as np
from PIL import Image

from openocr_cli.data.planned import PlannedImage, Scale
from openocr_cli.errors import UserError
from openocr_cli.geometry import as_poly_array, is_poly_outside_rect, pad_vertices

if TYPE_CHECKING:  # imported where used: albumentations loads torch, and config checks import this module
    import albumentations as A

# --------------------------------------------------------------------------------------------
# CopyPaste
# --------------------------------------------------------------------------------------------

def rectified_crop(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Warp a 4-point region to an upright rectangle; tall crops (h/w >= 1.5) are turned 90° CCW."""
    quad = np.asarray(quad, np.float32)
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    if width < 1 or height < 1:  # OpenCV would treat a zero size as "same as the source image"
        return np.zeros((0, 0) + image.shape[2:], image.dtype)
    target = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    matrix = cv2.getPerspectiveTransform(quad, target)
    crop = cv2.warpPerspective(image, matrix, (width, height), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)
    return np.rot90(crop) if height / width >= 1.5 else crop


def rotated_box(angle: int, width: int, height: int) -> np.ndarray:
    """Corners of a (width x height) box after rotating it by `angle`° CCW inside its expanded canvas."""
    rad = np.deg2rad(angle)
    new_w = abs(np.sin(rad)) * height + abs(np.cos(rad)) * width
    new_h = abs(np.cos(rad)) * height + abs(np.sin(rad)) * width
    matrix = cv2.getRotationMatrix2D((new_w * 0.5, new_h * 0.5), float(angle), 1.0)
    matrix[:, 2] += matrix @ np.array([(new_w - width) * 0.5, (new_h - height) * 0.5, 0.0])
    corners = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], np.float64)
    return (corners @ matrix.T).astype(np.float32)


def rotate_like_pil(crop: np.ndarray, angle: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL rotate(angle, expand=True), nearest, transparent fill -> (pixels, binary paste mask)."""
    rgba = np.dstack([crop, np.full(crop.shape[:2], 255, np.uint8)])
    rotated = np.asarray(Image.fromarray(np.ascontiguousarray(rgba)).rotate(angle, expand=True))
    return rotated[:, :, :3], rotated[:, :, 3] > 0


class CopyPaste:
    """Paste non-ignored text crops of one other training image at free spots of this one.

    Python `random` shuffles and places, NumPy's global RNG draws the angle, in OpenOCR's order.
    """

    ext_data_num = 1

    def __init__(self, objects_paste_ratio: float = 0.2, limit_paste: bool = True):
        self.ratio = objects_paste_ratio
        self.limit_paste = limit_paste

    def __call__(self, data: dict) -> Optional[dict]:
        ext_list = data.get("ext_data") or []
        if not ext_list:
            return data
        ext = ext_list[0]
        image = np.array(data["image"], np.uint8, copy=True)
        height, width = image.shape[:2]
        polys = as_poly_array(data["polys"])
        # A 4-point pasted box cannot be padded down: widen everything to >= 4 vertices.
        point_num = max(polys.shape[1], 4)
        polys_out = [pad_vertices(p, point_num) for p in polys]
        texts = list(data["texts"])
        ignores = [bool(t) for t in data["ignore_tags"]]

        ext_polys, ext_ignores = np.asarray(ext["polys"]), list(ext["ignore_tags"])
        candidates = [i for i, tag in enumerate(ext_ignores) if not tag]
        select_num = max(1, min(int(self.ratio * len(ext_polys)), 30))
        random.shuffle(candidates)
        chosen = candidates[:select_num]
        ext_image = ext["image"]
        for idx in chosen:
            box = self._paste(image, rectified_crop(ext_image, ext_polys[idx]), polys_out)
            if box is not None:
                polys_out.append(pad_vertices(box.astype(np.float64), point_num))
                texts.append(ext["texts"][idx])
                ignores.append(bool(ext_ignores[idx]))

        out = np.array(polys_out, np.float64).reshape(-1, point_num, 2)
        out[:, :, 0] = np.clip(out[:, :, 0], 0, width)
        out[:, :, 1] = np.clip(out[:, :, 1], 0, height)
        data.update(image=image, polys=out, texts=texts, ignore_tags=np.array(ignores, bool))
        return data

    def _paste(self, image: np.ndarray, crop: np.ndarray, polys: list) -> Optional[np.ndarray]:
        """Rotate the crop randomly and paste it in place; returns its corners in image coords or None."""
        angle = np.random.randint(0, 360)
        if crop.size == 0:
            return None
        box = rotated_box(angle, crop.shape[1], crop.shape[0])
        pixels, mask = rotate_like_pil(crop, int(angle))
        box_h, box_w = mask.shape
        height, width = image.shape[:2]
        if box_w > width or box_h > height:
            return None
        spot = self._place(box, polys, width - box_w, height - box_h)
        if spot is None:
            return None
        px, py = spot
        region = image[py:py + box_h, px:px + box_w]
        region[mask] = pixels[mask]
        return box + np.float32([px, py])

    def _place(self, box: np.ndarray, polys: list, max_x: int, max_y: int) -> Optional[tuple[int, int]]:
        """Up to 50 random spots; the first whose box bounds overlap no existing polygon wins."""
        if not self.limit_paste:
            return random.randint(0, max_x), random.randint(0, max_y)
        (x0, y0), (x1, y1) = box.min(axis=0), box.max(axis=0)
        for _ in range(50):
            px, py = random.randint(0, max_x), random.randint(0, max_y)
            if all(is_poly_outside_rect(p, x0 + px, y0 + py, x1 - x0, y1 - y0) for p in polys):
                return px, py
        return None


# --------------------------------------------------------------------------------------------
# IaaAugment
# --------------------------------------------------------------------------------------------

DEFAULT_IAA_ARGS = [
    {"type": "Fliplr", "args": {"p": 0.5}},
    {"type": "Affine", "args": {"rotate": [-10, 10]}},
    {"type": "Resize", "args": {"size": [0.5, 3]}},
]


class RandomScale:
    """imgaug-style Resize: one factor s ~ U(a, b) from NumPy's global RNG for both axes.

    The image becomes (int(H*s), int(W*s)) bilinear while points are multiplied by exactly s, as in
    OpenOCR (so a sub-pixel mismatch with the realised size ratio is inherent).
    """

    def __init__(self, size: Any):
        low, high = (size, size) if np.isscalar(size) else tuple(size)
        self.low, self.high = float(low), float(high)

    def draw(self, shape: tuple, points: np.ndarray) -> tuple[Scale, np.ndarray]:
        """The resize step for an image of `shape`, and the points it moves."""
        s = np.random.uniform(self.low, self.high)
        height, width = shape[:2]
        return Scale((int(width * s), int(height * s))), points * s


def _albu_step(kind: str, args: dict) -> A.BasicTransform:
    """Map one imgaug-named config entry to the equivalent albumentations 2.x transform (recording variant)."""
    from openocr_cli.data.albu_steps import RecordingAffine, RecordingHorizontalFlip

    args = dict(args)
    if kind == "Fliplr":
        return RecordingHorizontalFlip(p=float(args.pop("p", 0.5)), **args)
    rotate = args.pop("rotate", 0.0)
    if args:
        raise UserError(f"IaaAugment Affine: only 'rotate' is supported, got {sorted(args)}.")
    rotate = (float(rotate[0]), float(rotate[1])) if isinstance(rotate, (list, tuple)) else float(rotate)
    # Always applied (imgaug semantics); albumentations rotates about ((W-1)/2, (H-1)/2).
    return RecordingAffine(rotate=rotate, p=1.0, fit_output=False, interpolation=cv2.INTER_LINEAR,
                           border_mode=cv2.BORDER_CONSTANT, fill=0)


class IaaAugment:
    """Flip / rotate / scale image and polygon vertices together.

    Consecutive flip/affine entries form one albumentations Compose (own generators, see `reseed`);
    Resize is a plain step on NumPy's global RNG. Polygons come back as float64 (K, P, 2).
    The transforms record their pixel work (data.albu_steps) and it runs after all parameters are
    drawn; with `defer_pixels` (set by build_ops when EastRandomCropData follows) the image is
    handed on as a PlannedImage, of which the crop computes only its window, at its output size.
    """

    def __init__(self, augmenter_args: Optional[Sequence[dict]] = None):
        self.steps: list = []
        self.defer_pixels = False
        self._recorder: list = []
        pending: list = []
        for entry in DEFAULT_IAA_ARGS if augmenter_args is None else augmenter_args:
            kind, args = entry.get("type"), entry.get("args") or {}
            if kind in ("Fliplr", "Affine"):
                pending.append(_albu_step(kind, args))
                continue
            if kind != "Resize":
                raise UserError(f"IaaAugment type '{kind}' is not supported; use Fliplr, Affine or Resize.")
            self._flush(pending)
            self.steps.append(RandomScale(args.get("size", 1.0)))
        self._flush(pending)

    def _flush(self, pending: list) -> None:
        if pending:
            import albumentations as A

            for transform in pending:
                transform.recorder = self._recorder
            keypoints = A.KeypointParams(format="xy", remove_invisible=False)
            self.steps.append(A.Compose(list(pending), keypoint_params=keypoints))
            pending.clear()

    def reseed(self, seed: int) -> None:
        """openocr-compat: augment-seeds: give every albumentations transform its own reproducible stream.

        Compose.set_random_seed would hand all transforms the same seed (flip and angle would then
        be drawn from identical streams), so each gets a seed derived from (seed, position).
        """
        for i, step in enumerate(s for s in self.steps if not isinstance(s, RandomScale)):
            step.set_random_seed(_derive_seed(seed, i, 0))
            for j, transform in enumerate(step.transforms):
                transform.set_random_seed(_derive_seed(seed, i, j + 1))

    def __call__(self, data: dict) -> Optional[dict]:
        planned = PlannedImage(np.asarray(data["image"]), [])
        polys = as_poly_array(data["polys"])
        points = polys.reshape(-1, 2)
        for step in self.steps:
            if isinstance(step, RandomScale):
                scale, points = step.draw(planned.shape, points)
                planned = PlannedImage(planned.source, [*planned.steps, scale])
                continue
            if planned.shape != planned.source.shape:  # albumentations reads the size from the image it gets
                planned = PlannedImage(planned.full(), [])
            self._recorder.clear()
            out = step(image=planned.source, keypoints=points)
            points = np.asarray(out["keypoints"], np.float64).reshape(-1, 2)
            planned = PlannedImage(planned.source, [*planned.steps, *self._recorder])
        self._recorder.clear()
        data["image"] = planned if self.defer_pixels else planned.full()
        data["polys"] = points.reshape(polys.shape)
        return data


def _derive_seed(seed: int, *path: int) -> int:
    return int(np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, *path]).generate_state(1)[0])


# --------------------------------------------------------------------------------------------
# EastRandomCropData
# --------------------------------------------------------------------------------------------

def split_regions(axis: np.ndarray) -> list[np.ndarray]:
    """Runs of consecutive integers in a sorted axis, WITHOUT the last run (openocr-compat: crop-regions)."""
    if len(axis) == 0:
        return []
    breaks = np.flatnonzero(np.diff(axis) != 1) + 1
    return np.split(axis, breaks)[:-1]


def _random_span(free: np.ndarray, regions: list[np.ndarray], size: int) -> tuple[int, int]:
    """Two free coordinates, ordered; with >1 region each comes from a randomly drawn region."""
    if len(regions) > 1:
        picks = np.random.choice(len(regions), 2)
        values = [int(np.random.choice(regions[k], size=1)[0]) for k in picks]  # openocr-compat: numpy2-crop
        return min(values), max(values)
    values = np.random.choice(free, size=2)
    return int(np.clip(values.min(), 0, size - 1)), int(np.clip(values.max(), 0, size - 1))


def crop_area(shape: tuple, care_polys: list, min_side_ratio: float, max_tries: int) -> tuple[int, int, int, int]:
    """OpenOCR's crop search: a window whose borders cut no care text and that holds at least one."""
    height, width = shape[:2]
    h_occ, w_occ = np.zeros(height, np.int32), np.zeros(width, np.int32)
    for poly in care_polys:
        pts = np.round(poly).astype(np.int32)
        # Clamped at 0 instead of Python's wrap-around for negative coordinates (openocr-compat: crop-regions).
        (x0, y0), (x1, y1) = np.maximum(pts.min(axis=0), 0), np.maximum(pts.max(axis=0), 0)
        w_occ[x0:x1] = 1
        h_occ[y0:y1] = 1
    h_free, w_free = np.flatnonzero(h_occ == 0), np.flatnonzero(w_occ == 0)
    if len(h_free) == 0 or len(w_free) == 0:
        return 0, 0, width, height
    w_regions, h_regions = split_regions(w_free), split_regions(h_free)
    for _ in range(max_tries):
        xmin, xmax = _random_span(w_free, w_regions, width)
        ymin, ymax = _random_span(h_free, h_regions, height)
        if xmax - xmin < min_side_ratio * width or ymax - ymin < min_side_ratio * height:
            continue
        if any(not is_poly_outside_rect(p, xmin, ymin, xmax - xmin, ymax - ymin) for p in care_polys):
            return xmin, ymin, xmax - xmin, ymax - ymin
    return 0, 0, width, height


class EastRandomCropData:
    """Random text-aware crop scaled into a `size` = (width, height) canvas.

    `image` may be a PlannedImage (IaaAugment with defer_pixels): the window is then warped at its
    output size straight from the source (data.planned).

    With keep_ratio the crop keeps its aspect ratio at the top-left of a black canvas. Polygons
    (care and ignored) are kept iff they touch the content area. When none survive, `polys` is an
    empty (0, P, 2) float64 array and `ignore_tags` an empty bool array (OpenOCR: 1-D [] and list).
    """

    def __init__(self, size: Sequence[int] = (640, 640), max_tries: int = 50, min_crop_side_ratio: float = 0.1,
                 keep_ratio: bool = True):
        self.size = (int(size[0]), int(size[1]))
        self.max_tries = max_tries
        self.keep_ratio = keep_ratio
        self.min_crop_side_ratio = min_crop_side_ratio

    def __call__(self, data: dict) -> Optional[dict]:
        image = data["image"]
        polys = as_poly_array(data["polys"])
        ignores = np.asarray(data["ignore_tags"], bool).reshape(-1)
        care = [p for p, tag in zip(polys, ignores) if not tag]
        cx, cy, cw, ch = crop_area(image.shape, care, self.min_crop_side_ratio, self.max_tries)
        out_w, out_h = self.size
        scale_x, scale_y = out_w / cw, out_h / ch
        if self.keep_ratio:
            scale_x = scale_y = min(scale_x, scale_y)
            w, h = max(int(cw * scale_x), 1), max(int(ch * scale_y), 1)
        else:  # stretched; polygons follow the per-axis scale (OpenOCR used the min scale here)
            w, h = out_w, out_h
        if isinstance(image, PlannedImage):  # one warp from the source (openocr-compat: crop-one-warp)
            resized = image.resized_window(cx, cy, cw, ch, (w, h))
        else:
            resized = cv2.resize(image[cy:cy + ch, cx:cx + cw], (w, h)).reshape((h, w) + image.shape[2:])
        if (w, h) == (out_w, out_h):
            canvas = resized
        else:
            canvas = np.zeros((out_h, out_w) + image.shape[2:], image.dtype)
            canvas[:h, :w] = resized
        mapped = (polys - (cx, cy)) * (scale_x, scale_y)
        keep = np.array([not is_poly_outside_rect(p, 0, 0, w, h) for p in mapped], bool)
        data["image"] = canvas
        data["polys"] = mapped[keep]
        data["ignore_tags"] = ignores[keep]
        data["texts"] = [t for t, k in zip(data["texts"], keep) if k]
        return data
