"""DB training targets: threshold (border) map and shrink (probability) map.

Both follow OpenOCR's MakeBorderMap / MakeShrinkMap number for number (spec sections 2.6, 2.7),
including the DB "pseudo distance" and the shrink retry ratios, because the released weights
were trained on exactly these labels. The border map is vectorised over edges x pixels.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import pyclipper
from shapely.geometry import Polygon


def _as_poly_list(polys) -> list[np.ndarray]:
    """Normalise (K, P, 2) arrays, empty arrays and lists of (P, 2) arrays to float64 copies."""
    if polys is None:
        return []
    if isinstance(polys, np.ndarray):
        if polys.size == 0:
            return []
        return [np.array(p, dtype=np.float64).reshape(-1, 2) for p in polys]
    return [np.array(p, dtype=np.float64).reshape(-1, 2) for p in polys]


def _offset(poly: np.ndarray, delta: float) -> list:
    """Round-joined pyclipper offset; vertices are truncated toward zero as pyclipper does."""
    pco = pyclipper.PyclipperOffset()
    pco.AddPath(np.trunc(poly).astype(np.int64).tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return pco.Execute(delta)


def _scheduled_ratio(shrink_ratio: float, kwargs: dict) -> float:
    """OpenOCR's (dead, epoch is always 0) shrink-ratio schedule, kept for config parity."""
    epoch, total = kwargs.get("epoch"), kwargs.get("total_epoch")
    if epoch is None or total is None or epoch == "None":
        return float(shrink_ratio)
    return shrink_ratio + 0.2 * float(epoch) / float(total)


def _min_sq_pseudo_distance(poly: np.ndarray, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
    """Per pixel, the minimum over edges of the squared DB pseudo distance, shape (len(vs), len(us)).

    The float64 operations mirror the reference formula exactly (labels are compared to 1e-5).
    Taking the min of squares first is equivalent to OpenOCR's min of clipped distances because
    sqrt / scale / clip / float32 are monotone; NaN propagates (np.min) and a negative square
    (rounding when 1 - t^2 < 0) turns into NaN at the sqrt, just as in the original.
    """
    nxt = np.roll(np.arange(len(poly)), -1)
    dx = us[None, :] - poly[:, 0:1]                      # (n, bw)
    dy = vs[None, :] - poly[:, 1:2]                      # (n, bh)
    a = (dy * dy)[:, :, None] + (dx * dx)[:, None, :]    # |X - p_i|^2, (n, bh, bw)
    b = a[nxt]                                           # |X - p_j|^2
    seg = poly - poly[nxt]
    c = (seg[:, 0] * seg[:, 0] + seg[:, 1] * seg[:, 1])[:, None, None]
    num = c - a
    num -= b
    ab = a * b
    t = np.sqrt(ab)
    t *= 2.0
    np.divide(num, t, out=t)                             # t = -cos(angle at X)
    np.multiply(t, t, out=t)
    np.subtract(1.0, t, out=t)                           # s^2 = 1 - t^2
    np.nan_to_num(t, copy=False)
    np.multiply(ab, t, out=t)
    np.divide(t, c, out=t)                               # perpendicular distance^2
    endpoint = num < 0                                   # acute angle: nearer endpoint instead
    np.copyto(t, np.fmin(a, b), where=endpoint)
    return t.min(axis=0)


def make_border_map(polys, ignore: Sequence[bool], shape, shrink_ratio: float = 0.4,
                    thresh_min: float = 0.3, thresh_max: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Threshold map and mask (float32, `shape`) from the unclipped polygons (spec 2.6)."""
    h, w = int(shape[0]), int(shape[1])
    canvas = np.zeros((h, w), dtype=np.float32)
    mask = np.zeros((h, w), dtype=np.float32)
    for poly, ign in zip(_as_poly_list(polys), ignore):
        if ign:
            continue
        shp = Polygon(poly)
        if shp.area <= 0:
            continue
        dist = shp.area * (1 - np.power(shrink_ratio, 2)) / shp.length
        expanded = _offset(poly, dist)
        if not expanded:  # quirk 26: OpenOCR raises and resamples; we skip the polygon
            continue
        q = np.array(expanded[0], dtype=np.int32)
        xmin, ymin = (int(v) for v in q.min(axis=0))
        xmax, ymax = (int(v) for v in q.max(axis=0))
        if xmin > w - 1 or ymin > h - 1 or xmax < 0 or ymax < 0:
            continue  # quirk 26: the canvas window would wrap around
        cv2.fillPoly(mask, [q], 1.0)
        x0, x1 = max(xmin, 0), min(xmax, w - 1)
        y0, y1 = max(ymin, 0), min(ymax, h - 1)
        # Only the part of the bbox grid that lands on the canvas is ever used.
        us = np.arange(x0 - xmin, x1 - xmin + 1, dtype=np.float64)
        vs = np.arange(y0 - ymin, y1 - ymin + 1, dtype=np.float64)
        local = poly - np.array([xmin, ymin], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            sq = _min_sq_pseudo_distance(local, us, vs)
            np.sqrt(sq, out=sq)
            sq /= dist
        e = np.clip(sq, 0, 1).astype(np.float32)
        window = canvas[y0:y1 + 1, x0:x1 + 1]
        np.fmax(window, 1 - e, out=window)
    return canvas * (thresh_max - thresh_min) + thresh_min, mask


def _signed_area(poly: np.ndarray) -> float:
    """S = 1/2 sum_k (x_k y_{k-1} - y_k x_{k-1}); negative for screen-clockwise quads."""
    x, y = poly[:, 0], poly[:, 1]
    return float(np.sum(x * np.roll(y, 1) - y * np.roll(x, 1)) / 2.0)


def make_shrink_map(polys, ignore: Sequence[bool], shape, shrink_ratio: float = 0.4, min_text_size: int = 8):
    """Shrink map and mask (float32, `shape`), plus the clipped/reoriented polygons and flags (spec 2.7).

    The caller's arrays are not modified; a (K, P, 2) ndarray input gives a (K, P, 2) output.
    """
    h, w = int(shape[0]), int(shape[1])
    gt = np.zeros((h, w), dtype=np.float32)
    mask = np.ones((h, w), dtype=np.float32)
    plist = _as_poly_list(polys)
    flags = np.array([bool(v) for v in ignore], dtype=bool)[:len(plist)]
    for i, poly in enumerate(plist):
        np.clip(poly[:, 0], 0, w - 1, out=poly[:, 0])
        np.clip(poly[:, 1], 0, h - 1, out=poly[:, 1])
        area = _signed_area(poly)
        if abs(area) < 1:
            flags[i] = True
        if area > 0:
            plist[i] = poly[::-1].copy()
    ratios = np.arange(shrink_ratio, 1, shrink_ratio)
    for i, poly in enumerate(plist):
        ph = poly[:, 1].max() - poly[:, 1].min()
        pw = poly[:, 0].max() - poly[:, 0].min()
        if flags[i] or min(ph, pw) < min_text_size:
            cv2.fillPoly(mask, [poly.astype(np.int32)], 0)
            flags[i] = True
            continue
        shp = Polygon(poly)
        shrunk = []
        for ratio in ratios:
            dist = shp.area * (1 - np.power(ratio, 2)) / shp.length
            shrunk = _offset(poly, -dist)
            if len(shrunk) == 1:
                break
        if not shrunk:
            cv2.fillPoly(mask, [poly.astype(np.int32)], 0)
            flags[i] = True
            continue
        for path in shrunk:  # separate calls: overlapping pieces must not cancel out
            cv2.fillPoly(gt, [np.array(path, dtype=np.int32).reshape(-1, 2)], 1)
    if isinstance(polys, np.ndarray) and polys.ndim == 3:
        out = np.stack(plist) if plist else polys.astype(np.float64, copy=True)
    elif isinstance(polys, np.ndarray):
        out = polys.astype(np.float64, copy=True)
    else:
        out = plist
    return gt, mask, out, flags


class MakeBorderMap:
    """Transform op adding `threshold_map` / `threshold_mask`; extra config keys are ignored."""

    def __init__(self, shrink_ratio: float = 0.4, thresh_min: float = 0.3, thresh_max: float = 0.7, **kwargs: Any):
        self.shrink_ratio = _scheduled_ratio(shrink_ratio, kwargs)
        self.thresh_min = thresh_min
        self.thresh_max = thresh_max

    def __call__(self, data: dict) -> dict:
        polys = data["polys"]
        ignore = data["ignore_tags"]
        tmap, tmask = make_border_map(polys, ignore, data["image"].shape[:2], self.shrink_ratio,
                                      self.thresh_min, self.thresh_max)
        data["threshold_map"] = tmap
        data["threshold_mask"] = tmask
        return data


class MakeShrinkMap:
    """Transform op adding `shrink_map` / `shrink_mask` and replacing `polys` / `ignore_tags`."""

    def __init__(self, shrink_ratio: float = 0.4, min_text_size: int = 8, **kwargs: Any):
        self.shrink_ratio = _scheduled_ratio(shrink_ratio, kwargs)
        self.min_text_size = min_text_size

    def __call__(self, data: dict) -> dict:
        gt, mask, polys, flags = make_shrink_map(data["polys"], data["ignore_tags"], data["image"].shape[:2],
                                                 self.shrink_ratio, self.min_text_size)
        data["shrink_map"] = gt
        data["shrink_mask"] = mask
        data["polys"] = polys
        data["ignore_tags"] = flags
        return data
