"""DB targets: the vectorised maps against a slow, literal reading of OpenOCR's formulas."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pyclipper
import pytest
from shapely.geometry import Polygon

from openocr_cli.data.targets import MakeBorderMap, MakeShrinkMap, make_border_map, make_shrink_map

NAN = float("nan")


# ----------------------------------------------------------------------------------------------
# Plain reference (pixel and edge loops, Python floats, pyclipper fed the raw float tuples)


def ref_pseudo_distance(x: float, y: float, p: tuple, q: tuple) -> float:
    """Spec 2.6 step 6 with IEEE/NumPy semantics for 0/0, x/0 and sqrt of a negative."""
    a = (x - p[0]) * (x - p[0]) + (y - p[1]) * (y - p[1])
    b = (x - q[0]) * (x - q[0]) + (y - q[1]) * (y - q[1])
    c = (p[0] - q[0]) * (p[0] - q[0]) + (p[1] - q[1]) * (p[1] - q[1])
    num = c - a - b
    den = 2 * math.sqrt(a * b)
    if den == 0:
        t = NAN if num == 0 else math.copysign(math.inf, num)
    else:
        t = num / den
    if t < 0:
        return math.sqrt(min(a, b))
    s2 = 1 - t * t
    if math.isnan(s2):
        s2 = 0.0
    top = a * b * s2
    if c == 0:
        val = NAN if top == 0 else math.copysign(math.inf, top)
    else:
        val = top / c
    if math.isnan(val) or val < 0:
        return NAN
    return math.sqrt(val)


def ref_border_map(polys, ignore, shape, r=0.4, tmin=0.3, tmax=0.7):
    h, w = shape
    canvas = np.zeros((h, w), np.float32)
    mask = np.zeros((h, w), np.float32)
    for poly, ign in zip(polys, ignore):
        if ign:
            continue
        poly = np.asarray(poly, dtype=np.float64)
        shp = Polygon(poly)
        if shp.area <= 0:
            continue
        dist = shp.area * (1 - r * r) / shp.length
        pco = pyclipper.PyclipperOffset()
        pco.AddPath([tuple(p) for p in poly], pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
        out = pco.Execute(dist)
        if not out:
            continue
        q = np.array(out[0])
        xmin, xmax = int(q[:, 0].min()), int(q[:, 0].max())
        ymin, ymax = int(q[:, 1].min()), int(q[:, 1].max())
        if xmin > w - 1 or ymin > h - 1 or xmax < 0 or ymax < 0:
            continue
        cv2.fillPoly(mask, [q.astype(np.int32)], 1.0)
        local = [(float(px) - xmin, float(py) - ymin) for px, py in poly]
        n = len(local)
        bw, bh = xmax - xmin + 1, ymax - ymin + 1
        e = np.zeros((bh, bw), np.float32)
        for v in range(bh):
            for u in range(bw):
                per_edge = []
                for i in range(n):
                    d = ref_pseudo_distance(float(u), float(v), local[i], local[(i + 1) % n])
                    per_edge.append(NAN if math.isnan(d) else np.float32(min(max(d / dist, 0.0), 1.0)))
                # a NaN on any edge survives the min (np.min semantics)
                e[v, u] = NAN if any(math.isnan(x) for x in per_edge) else min(per_edge)
        xv0, xv1 = min(max(xmin, 0), w - 1), min(max(xmax, 0), w - 1)
        yv0, yv1 = min(max(ymin, 0), h - 1), min(max(ymax, 0), h - 1)
        for row in range(yv0, yv1 + 1):
            for col in range(xv0, xv1 + 1):
                val = e[row - ymin, col - xmin]
                if not np.isnan(val):
                    canvas[row, col] = max(canvas[row, col], np.float32(1) - val)
    return canvas * (tmax - tmin) + tmin, mask


def ref_shrink_map(polys, ignore, shape, r=0.4, min_size=8):
    h, w = shape
    polys = [np.array(p, dtype=np.float64) for p in polys]
    ignore = [bool(v) for v in ignore]
    for i, poly in enumerate(polys):
        for k in range(len(poly)):
            poly[k, 0] = min(max(poly[k, 0], 0), w - 1)
            poly[k, 1] = min(max(poly[k, 1], 0), h - 1)
        s = 0.0
        for k in range(len(poly)):
            s += poly[k, 0] * poly[k - 1, 1] - poly[k, 1] * poly[k - 1, 0]
        s /= 2
        if abs(s) < 1:
            ignore[i] = True
        if s > 0:
            polys[i] = poly[::-1].copy()
    gt = np.zeros((h, w), np.float32)
    mask = np.ones((h, w), np.float32)
    for i, poly in enumerate(polys):
        ph = poly[:, 1].max() - poly[:, 1].min()
        pw = poly[:, 0].max() - poly[:, 0].min()
        if ignore[i] or min(ph, pw) < min_size:
            cv2.fillPoly(mask, [poly.astype(np.int32)], 0)
            ignore[i] = True
            continue
        shp = Polygon(poly)
        result = []
        for ratio in (0.4, 0.8):
            pco = pyclipper.PyclipperOffset()
            pco.AddPath([tuple(p) for p in poly], pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
            result = pco.Execute(-(shp.area * (1 - ratio * ratio) / shp.length))
            if len(result) == 1:
                break
        if not result:
            cv2.fillPoly(mask, [poly.astype(np.int32)], 0)
            ignore[i] = True
            continue
        for path in result:
            cv2.fillPoly(gt, [np.array(path).astype(np.int32)], 1)
    return gt, mask, polys, ignore


# ----------------------------------------------------------------------------------------------
# Random polygons


def _rand_poly(rng, kind: str, h: int, w: int) -> np.ndarray:
    cx, cy = rng.uniform(-5, w + 5), rng.uniform(-5, h + 5)
    if kind == "quad":
        pts = np.array([[cx, cy]]) + rng.uniform(-14, 14, size=(4, 2))
    elif kind == "rect":
        hw, hh, ang = rng.uniform(6, 18), rng.uniform(3, 9), rng.uniform(0, np.pi)
        base = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        pts = base @ rot.T + [cx, cy]
    elif kind == "poly":
        n = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(5, 15, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    elif kind == "outside":
        cx, cy = rng.choice([-6.0, w + 4.0]), rng.uniform(0, h)
        pts = np.array([[cx, cy]]) + rng.uniform(-16, 16, size=(4, 2))
    elif kind == "tiny":
        pts = np.array([[cx, cy]]) + rng.uniform(-3.5, 3.5, size=(4, 2))
    elif kind == "intquad":  # integer vertices: exercises vertex hits and exact-line pixels
        pts = np.round(np.array([[cx, cy]]) + rng.uniform(-14, 14, size=(4, 2)))
    elif kind == "dumbbell":  # concave: the shrink splits into two pieces at one or both ratios
        s, bar = rng.uniform(12, 16), rng.uniform(1.5, 5)
        top, bot = (s - bar) / 2, (s + bar) / 2
        pts = np.array([[0, 0], [s, 0], [s, top], [s + 8, top], [s + 8, 0], [2 * s + 8, 0], [2 * s + 8, s],
                        [s + 8, s], [s + 8, bot], [s, bot], [s, s], [0, s]]) + [cx - s, cy - s / 2]
    else:  # self-intersecting (bow-tie) quad with unequal lobes
        s = rng.uniform(8, 14)
        pts = np.array([[0, 0], [s, s * 1.6], [s, 0], [0, s * 0.7]]) + [cx, cy]
    return pts.astype(np.float64)


def _pad(pts: np.ndarray, size: int) -> np.ndarray:
    """Repeat the last vertex, as the label loader does for shorter polygons."""
    return np.concatenate([pts, np.repeat(pts[-1:], size - len(pts), axis=0)])


KINDS = ["quad", "rect", "poly", "outside", "tiny", "intquad", "dumbbell", "bowtie"]


def _cases():
    rng = np.random.default_rng(2024)
    cases = []
    for n in range(40):
        shape = (64, 64) if n % 2 else (96, 80)
        k = int(rng.integers(1, 4))
        pts = [_rand_poly(rng, KINDS[(n + j) % len(KINDS)], *shape) for j in range(k)]
        size = max(len(p) for p in pts) + (1 if n % 3 == 0 else 0)
        polys = np.stack([_pad(p, size) for p in pts])
        ignore = rng.random(k) < 0.2
        cases.append((polys, ignore, shape))
    return cases


CASES = _cases()


@pytest.mark.parametrize("idx", range(len(CASES)))
def test_border_map_matches_reference(idx):
    polys, ignore, shape = CASES[idx]
    tmap, tmask = make_border_map(polys, ignore, shape)
    rmap, rmask = ref_border_map(polys, ignore, shape)
    assert tmap.dtype == np.float32 and tmask.dtype == np.float32
    assert tmap.shape == shape and tmask.shape == shape
    assert np.abs(tmap - rmap).max() <= 1e-5
    assert np.array_equal(tmask, rmask)


@pytest.mark.parametrize("idx", range(len(CASES)))
def test_shrink_map_matches_reference(idx):
    polys, ignore, shape = CASES[idx]
    gt, mask, out, flags = make_shrink_map(polys, ignore, shape)
    rgt, rmask, rpolys, rflags = ref_shrink_map(polys, ignore, shape)
    assert gt.dtype == np.float32 and mask.dtype == np.float32
    assert np.abs(gt - rgt).max() <= 1e-5
    assert np.abs(mask - rmask).max() <= 1e-5
    assert np.array_equal(out, np.stack(rpolys))
    assert flags.dtype == bool and flags.tolist() == rflags


def test_zero_length_edge_on_pixel_leaves_one_pixel_hole():
    # Integer duplicate vertex: the pixel on it gets NaN distance, so fmax keeps the old 0.
    poly = np.array([[10, 10], [30, 10], [30, 20], [10, 20], [10, 20]], dtype=np.float64)
    tmap, _ = make_border_map([poly], [False], (40, 40))
    rmap, _ = ref_border_map([poly], [False], (40, 40))
    assert np.abs(tmap - rmap).max() <= 1e-5
    assert tmap[20, 10] == pytest.approx(0.3)
    assert tmap[10, 10] == pytest.approx(0.7)


# ----------------------------------------------------------------------------------------------
# Direct checks


def _rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def test_threshold_values_on_edge_and_far_away():
    tmap, tmask = make_border_map(_rect(20, 20, 60, 40)[None], [False], (96, 96))
    assert tmap[20, 40] == pytest.approx(0.7, abs=1e-6)   # on the top edge
    assert tmap[30, 20] == pytest.approx(0.7, abs=1e-6)   # on the left edge
    assert tmap[90, 90] == pytest.approx(0.3, abs=1e-6)
    assert tmap[30, 40] == pytest.approx(0.3, abs=1e-6)   # centre is farther than D = 5.6
    assert tmask[30, 40] == 1 and tmask[90, 90] == 0
    assert tmask[20 - 5, 40] == 1  # expanded by D = 5.6 outward


def test_shrink_of_axis_aligned_rectangle():
    gt, mask, _, flags = make_shrink_map(_rect(10, 10, 50, 30)[None], [False], (64, 64))
    d = 800 * (1 - 0.16) / 120  # A (1 - r^2) / L = 5.6
    rows, cols = np.nonzero(gt)
    assert abs(rows.min() - (10 + d)) <= 1 and abs(rows.max() - (30 - d)) <= 1
    assert abs(cols.min() - (10 + d)) <= 1 and abs(cols.max() - (50 - d)) <= 1
    # fillPoly includes the boundary pixels, so allow about one perimeter's worth of extra.
    assert abs(gt.sum() - (40 - 2 * d) * (20 - 2 * d)) <= 40
    assert mask.min() == 1 and flags.tolist() == [False]


def test_ignored_polygon():
    poly = _rect(10, 10, 50, 30)[None]
    tmap, tmask = make_border_map(poly, [True], (64, 64))
    assert np.all(tmap == np.float32(0.3)) and not tmask.any()
    gt, mask, _, flags = make_shrink_map(poly, [True], (64, 64))
    assert not gt.any() and flags.tolist() == [True]
    assert mask[20, 30] == 0 and mask[10, 10] == 0 and mask[60, 60] == 1


def test_small_polygon_is_ignored_by_shrink_only():
    poly = _rect(10, 10, 50, 16)[None]  # 6 px high < min_text_size
    _, tmask = make_border_map(poly, [False], (64, 64))
    assert tmask.any()
    gt, mask, _, flags = make_shrink_map(poly, [False], (64, 64))
    assert flags.tolist() == [True] and not gt.any() and mask[12, 20] == 0


def test_signed_area_reversal():
    cw = _rect(10, 10, 40, 30)          # TL, TR, BR, BL on screen: S < 0, kept
    ccw = cw[::-1].copy()               # S > 0: reversed
    _, _, out, flags = make_shrink_map(np.stack([cw, ccw]), [False, False], (64, 64))
    assert np.array_equal(out[0], cw)
    assert np.array_equal(out[1], cw)
    assert flags.tolist() == [False, False]
    flat = np.array([[5, 5], [30, 5], [30, 5.02], [5, 5.02]])  # |S| < 1
    _, _, _, flags = make_shrink_map(flat[None], [False], (64, 64))
    assert flags.tolist() == [True]


def test_border_map_skips_do_not_raise():
    speck = np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]])  # truncates to one point
    right = _rect(70, 10, 90, 30)    # expanded box starts beyond the last column
    below = _rect(10, 70, 30, 90)
    left = _rect(-40, 10, -20, 30)   # expanded box ends before column 0
    polys = np.stack([speck, right, below, left])
    tmap, tmask = make_border_map(polys, [False] * 4, (64, 64))
    assert np.all(tmap == np.float32(0.3)) and not tmask.any()


@pytest.mark.parametrize("empty", [np.zeros((0,)), np.zeros((0, 4, 2)), []])
def test_no_polygons(empty):
    tmap, tmask = make_border_map(empty, [], (32, 48))
    assert tmap.shape == (32, 48) and np.all(tmap == np.float32(0.3)) and not tmask.any()
    gt, mask, out, flags = make_shrink_map(empty, [], (32, 48))
    assert not gt.any() and np.all(mask == 1) and len(out) == 0 and flags.shape == (0,)
    data = {"image": np.zeros((32, 48, 3), np.uint8), "polys": empty, "ignore_tags": []}
    data = MakeShrinkMap()(MakeBorderMap()(data))
    assert data["threshold_map"].shape == data["shrink_mask"].shape == (32, 48)


def test_shrink_does_not_mutate_inputs():
    polys = np.stack([_rect(-10, 5, 40, 30), _rect(30, 30, 70, 50)[::-1]])
    ignore = np.array([False, False])
    before, ign_before = polys.copy(), ignore.copy()
    _, _, out, flags = make_shrink_map(polys, ignore, (48, 64))
    assert np.array_equal(polys, before) and np.array_equal(ignore, ign_before)
    assert out.min() >= 0 and out[..., 0].max() <= 63 and out[..., 1].max() <= 47
    make_border_map(polys, ignore, (48, 64))
    assert np.array_equal(polys, before)


def test_ops_schedule_and_keys():
    assert MakeBorderMap(total_epoch=500, epoch=0).shrink_ratio == pytest.approx(0.4)
    assert MakeShrinkMap(total_epoch=500, epoch="None").shrink_ratio == pytest.approx(0.4)
    assert MakeShrinkMap(total_epoch=500, epoch=250).shrink_ratio == pytest.approx(0.5)
    with pytest.raises(TypeError):  # only its own parameters; Global keys no longer reach the ops
        MakeBorderMap(shrink_ratio=0.4, use_gpu=True)
    polys = np.stack([_rect(-5, 10, 40, 30), _rect(20, 35, 50, 60)])
    data = {"image": np.zeros((64, 48, 3), np.uint8), "polys": polys, "ignore_tags": [False, True]}
    data = MakeShrinkMap(epoch=0, total_epoch=500)(MakeBorderMap(epoch=0, total_epoch=500)(data))
    for key in ("threshold_map", "threshold_mask", "shrink_map", "shrink_mask"):
        assert data[key].shape == (64, 48) and data[key].dtype == np.float32
    assert data["ignore_tags"].dtype == bool and data["ignore_tags"].tolist() == [False, True]
    assert data["polys"][..., 0].min() == 0 and data["polys"][..., 0].max() == 47


@pytest.mark.parametrize("idx", [0, 5, 13, 22])
def test_border_map_row_chunking_is_seamless(idx, monkeypatch):
    import openocr_cli.data.targets as targets

    polys, ignore, shape = CASES[idx]
    whole = make_border_map(polys, ignore, shape)[0]
    monkeypatch.setattr(targets, "_CHUNK", 64)  # one or two rows per chunk
    assert np.array_equal(make_border_map(polys, ignore, shape)[0], whole)
