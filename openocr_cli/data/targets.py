"""DB training targets: threshold (border) map and shrink (probability) map.

Both follow OpenOCR's MakeBorderMap / MakeShrinkMap number for number (openocr-compat: border-distance, shrink-retries),
including the DB "pseudo distance" and the shrink retry ratios, because the released weights
were trained on exactly these labels. The border map is vectorised over edges x pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from shapely.geometry import Polygon

from openocr_cli.geometry import as_poly_list, offset_polygon


def _scheduled_ratio(shrink_ratio: float, epoch: Any, total_epoch: Any) -> float:
    """OpenOCR's (dead, epoch is always 0) shrink-ratio schedule, kept for config parity."""
    if epoch is None or total_epoch is None or epoch == "None":
        return float(shrink_ratio)
    return shrink_ratio + 0.2 * float(epoch) / float(total_epoch)


_CHUNK = 1 << 15  # edges x pixels per work buffer: bounded memory, stays in cache


class _Workspace:
    """Scratch buffers reused across polygons and row chunks (fresh big arrays cost page faults)."""

    def __init__(self) -> None:
        self.f64 = np.empty((4, 0))
        self.mask = np.empty(0, dtype=bool)

    def views(self, shape: tuple[int, int, int]) -> list[np.ndarray]:
        size = shape[0] * shape[1] * shape[2]
        if size > self.f64.shape[1]:
            self.f64 = np.empty((4, size))
            self.mask = np.empty(size, dtype=bool)
        return [buf[:size].reshape(shape) for buf in self.f64] + [self.mask[:size].reshape(shape)]


def _blend_border(canvas: np.ndarray, poly: np.ndarray, origin: tuple[int, int],
                  window: tuple[int, int, int, int], dist: float, ws: _Workspace) -> None:
    """canvas[window] = fmax(canvas, 1 - clip(pseudo_distance / dist, 0, 1)), all edges at once.

    The float64 steps mirror the reference formula one by one (labels are compared to 1e-5 and
    rounding decides the rare NaN pixels). Taking the min over edges of the squared distance
    before sqrt / scale / clip / float32 is exact because those are monotone; NaN propagates
    through np.minimum, and a negative square (1 - t^2 < 0 by rounding) becomes NaN at the sqrt,
    which fmax then ignores, as in OpenOCR.
    """
    x0, y0, x1, y1 = window
    local = poly - np.array(origin, dtype=np.float64)
    n = len(local)
    us = np.arange(x0 - origin[0], x1 - origin[0] + 1, dtype=np.float64)
    vs = np.arange(y0 - origin[1], y1 - origin[1] + 1, dtype=np.float64)
    dx2 = us[None, :] - local[:, 0:1]
    dx2 *= dx2
    dy2 = vs[None, :] - local[:, 1:2]
    dy2 *= dy2
    seg = local - np.roll(local, -1, axis=0)
    c = (seg[:, 0] * seg[:, 0] + seg[:, 1] * seg[:, 1])[:, None, None]
    # t = 0/0 only on a pixel that is exactly a vertex (a*b == 0); nan_to_num makes s^2 = 0 there.
    exact = local[np.all(local == np.floor(local), axis=1)].astype(np.int64)
    vert_cols, vert_rows = exact[:, 0] - x0 + origin[0], exact[:, 1] - y0 + origin[1]
    rows_per_chunk = max(1, _CHUNK // (n * len(us)))
    for r0 in range(0, len(vs), rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, len(vs))
        a, b, num, ab, endpoint = ws.views((n, r1 - r0, len(us)))
        np.add(dy2[:, r0:r1, None], dx2[:, None, :], out=a)      # |X - p_i|^2
        b[:-1] = a[1:]                                           # |X - p_j|^2, j = i + 1
        b[-1] = a[0]
        np.subtract(c, a, out=num)
        num -= b
        np.multiply(a, b, out=ab)
        np.fmin(a, b, out=a)                                     # endpoint distance^2
        t = b
        np.sqrt(ab, out=t)
        t *= 2.0
        np.divide(num, t, out=t)                                 # t = -cos(angle at X)
        np.multiply(t, t, out=t)
        np.subtract(1.0, t, out=t)                               # s^2 = 1 - t^2
        inside = (vert_rows >= r0) & (vert_rows < r1) & (vert_cols >= 0) & (vert_cols < len(us))
        if inside.any():
            rr, cc = vert_rows[inside] - r0, vert_cols[inside]
            t[:, rr, cc] = np.where(ab[:, rr, cc] == 0, 0.0, t[:, rr, cc])
        t *= ab
        t /= c                                                   # perpendicular distance^2
        np.less(num, 0, out=endpoint)                            # acute angle at X
        np.copyto(t, a, where=endpoint)
        d = t[0]
        for i in range(1, n):
            np.minimum(d, t[i], out=d)
        np.sqrt(d, out=d)
        d /= dist
        e = np.clip(d, 0, 1).astype(np.float32)
        target = canvas[y0 + r0:y0 + r1, x0:x1 + 1]
        np.fmax(target, 1 - e, out=target)


def make_border_map(polys, ignore: Sequence[bool], shape, shrink_ratio: float = 0.4,
                    thresh_min: float = 0.3, thresh_max: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Threshold map and mask (float32, `shape`) from the unclipped polygons (OpenOCR's MakeBorderMap)."""
    h, w = int(shape[0]), int(shape[1])
    canvas = np.zeros((h, w), dtype=np.float32)
    mask = np.zeros((h, w), dtype=np.float32)
    ws = _Workspace()
    for poly, ign in zip(as_poly_list(polys), ignore):
        if ign:
            continue
        shp = Polygon(poly)
        if shp.area <= 0:
            continue
        dist = shp.area * (1 - np.power(shrink_ratio, 2)) / shp.length
        expanded = offset_polygon(poly, dist)
        if not expanded:  # openocr-compat: border-map-skip
            continue
        q = np.array(expanded[0], dtype=np.int32)
        xmin, ymin = (int(v) for v in q.min(axis=0))
        xmax, ymax = (int(v) for v in q.max(axis=0))
        if xmin > w - 1 or ymin > h - 1 or xmax < 0 or ymax < 0:
            continue  # the window would wrap around (openocr-compat: border-map-skip)
        cv2.fillPoly(mask, [q], 1.0)
        # Only the part of the bbox grid that lands on the canvas is ever used.
        window = (max(xmin, 0), max(ymin, 0), min(xmax, w - 1), min(ymax, h - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            _blend_border(canvas, poly, (xmin, ymin), window, dist, ws)
    return canvas * (thresh_max - thresh_min) + thresh_min, mask


def _signed_area(poly: np.ndarray) -> float:
    """S = 1/2 sum_k (x_k y_{k-1} - y_k x_{k-1}); negative for screen-clockwise quads."""
    x, y = poly[:, 0], poly[:, 1]
    return float(np.sum(x * np.roll(y, 1) - y * np.roll(x, 1)) / 2.0)


def make_shrink_map(polys, ignore: Sequence[bool], shape, shrink_ratio: float = 0.4, min_text_size: int = 8):
    """Shrink map and mask (float32, `shape`), plus the clipped/reoriented polygons and flags (OpenOCR's MakeShrinkMap).

    The caller's arrays are not modified; a (K, P, 2) ndarray input gives a (K, P, 2) output.
    """
    h, w = int(shape[0]), int(shape[1])
    gt = np.zeros((h, w), dtype=np.float32)
    mask = np.ones((h, w), dtype=np.float32)
    plist = as_poly_list(polys)
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
            shrunk = offset_polygon(poly, -dist)
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
    """Transform op adding `threshold_map` / `threshold_mask`."""

    def __init__(self, shrink_ratio: float = 0.4, thresh_min: float = 0.3, thresh_max: float = 0.7,
                 epoch: Any = None, total_epoch: Any = None):
        self.shrink_ratio = _scheduled_ratio(shrink_ratio, epoch, total_epoch)
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

    def __init__(self, min_text_size: int = 8, shrink_ratio: float = 0.4, epoch: Any = None, total_epoch: Any = None):
        self.shrink_ratio = _scheduled_ratio(shrink_ratio, epoch, total_epoch)
        self.min_text_size = min_text_size

    def __call__(self, data: dict) -> dict:
        gt, mask, polys, flags = make_shrink_map(data["polys"], data["ignore_tags"], data["image"].shape[:2],
                                                 self.shrink_ratio, self.min_text_size)
        data["shrink_map"] = gt
        data["shrink_mask"] = mask
        data["polys"] = polys
        data["ignore_tags"] = flags
        return data
