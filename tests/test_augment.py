"""CopyPaste, IaaAugment and EastRandomCropData: geometry, randomness and OpenOCR's quirks."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from openocr_cli.data.augment import (
    CopyPaste,
    EastRandomCropData,
    IaaAugment,
    crop_area,
    rectified_crop,
    split_regions,
)
from openocr_cli.geometry import is_poly_outside_rect


def quad(x, y, w, h):
    return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]


def noise(h, w, seed=0, low=0):
    return np.random.default_rng(seed).integers(low, 256, size=(h, w, 3), dtype=np.uint8)


def sample(image, boxes, ignores=None, texts=None):
    k = len(boxes)
    polys = np.array(boxes, np.float32).reshape(k, -1, 2) if k else np.zeros((0, 4, 2), np.float32)
    return {"image": image, "polys": polys,
            "ignore_tags": np.array(ignores or [False] * k, bool), "texts": texts or [f"t{i}" for i in range(k)]}


def seed_all(value):
    random.seed(value)
    np.random.seed(value)


# ------------------------------------------------------------------------------------ CopyPaste

def ext_sample(ignored=False):
    boxes = [quad(10 + 60 * i, 10 + 25 * (i % 3), 40, 16) for i in range(8)]
    return sample(noise(120, 500, seed=7), boxes, ignores=[ignored] * 8, texts=[f"e{i}" for i in range(8)])


def base_sample():
    return sample(noise(240, 320, seed=1), [quad(20, 20, 60, 20), quad(200, 150, 80, 30)], ignores=[False, True])


def test_copypaste_adds_non_overlapping_boxes_inside_image():
    op = CopyPaste(objects_paste_ratio=0.5)
    for seed in range(5):
        seed_all(seed)
        data = base_sample()
        data["ext_data"] = [ext_sample()]
        out = op(data)
        polys, tags = out["polys"], out["ignore_tags"]
        assert polys.dtype == np.float64 and polys.shape[1:] == (4, 2)
        assert out["image"].shape == (240, 320, 3) and out["image"].dtype == np.uint8
        assert len(polys) == len(tags) == len(out["texts"]) and len(polys) > 2
        assert tags.dtype == bool and not tags[2:].any() and list(tags[:2]) == [False, True]
        assert all(t.startswith("e") for t in out["texts"][2:])
        assert (polys[..., 0] >= 0).all() and (polys[..., 0] <= 320).all()
        assert (polys[..., 1] >= 0).all() and (polys[..., 1] <= 240).all()
        for i in range(2, len(polys)):  # each paste avoided everything that existed before it
            (x0, y0), (x1, y1) = polys[i].min(0), polys[i].max(0)
            assert all(is_poly_outside_rect(polys[j], x0, y0, x1 - x0, y1 - y0) for j in range(i))


def test_copypaste_axis_aligned_paste_copies_source_pixels(monkeypatch):
    monkeypatch.setattr(np.random, "randint", lambda low, high=None, size=None: 0)  # angle 0
    random.seed(3)
    ext = sample(noise(100, 200, seed=5), [quad(30, 40, 50, 20)], texts=["word"])
    data = base_sample()
    before = data["image"].copy()
    data["ext_data"] = [ext]
    out = CopyPaste()(data)
    assert len(out["polys"]) == 3 and out["texts"][2] == "word"
    box = out["polys"][2]
    px, py = box[0].astype(int)
    np.testing.assert_array_equal(box, [[px, py], [px + 50, py], [px + 50, py + 20], [px, py + 20]])
    np.testing.assert_array_equal(out["image"][py:py + 20, px:px + 50], ext["image"][40:60, 30:80])
    outside = np.ones(before.shape[:2], bool)
    outside[py:py + 20, px:px + 50] = False
    np.testing.assert_array_equal(out["image"][outside], before[outside])


def test_rectified_crop_rotates_tall_regions():
    image = noise(100, 100, seed=2)
    tall = rectified_crop(image, np.float32(quad(10, 10, 10, 15)))  # 15/10 = 1.5 -> rot90 CCW
    assert tall.shape == (10, 15, 3)
    np.testing.assert_array_equal(tall, np.rot90(image[10:25, 10:20]))
    wide = rectified_crop(image, np.float32(quad(10, 10, 10, 14)))  # 1.4 -> unchanged
    np.testing.assert_array_equal(wide, image[10:24, 10:20])


def test_copypaste_with_all_ignored_ext_adds_nothing():
    seed_all(0)
    data = base_sample()
    polys = data["polys"].copy()
    image = data["image"].copy()
    data["ext_data"] = [ext_sample(ignored=True)]
    out = CopyPaste()(data)
    np.testing.assert_array_equal(out["polys"], polys)
    np.testing.assert_array_equal(out["image"], image)
    assert out["texts"] == ["t0", "t1"]


def test_copypaste_pads_to_point_count_and_is_deterministic():
    def run():
        seed_all(11)
        data = sample(noise(240, 320, seed=1), [quad(20, 20, 60, 20) + [[20, 40], [20, 40]]])
        data["ext_data"] = [ext_sample()]
        return CopyPaste(objects_paste_ratio=0.5)(data)

    a, b = run(), run()
    assert a["polys"].shape[1] == 6 and len(a["polys"]) > 1
    np.testing.assert_array_equal(a["polys"][1:, 4:], a["polys"][1:, 3:4].repeat(2, axis=1))
    np.testing.assert_array_equal(a["polys"], b["polys"])
    np.testing.assert_array_equal(a["image"], b["image"])


# ------------------------------------------------------------------------------------ IaaAugment

def test_iaa_flip_maps_x_to_w_minus_1_minus_x():
    aug = IaaAugment(augmenter_args=[{"type": "Fliplr", "args": {"p": 1.0}}])
    image = np.zeros((30, 50, 3), np.uint8)
    image[7, 12] = 255
    out = aug(sample(image, [[[12, 7], [0, 0], [49.5, 29], [60, -3]]]))
    np.testing.assert_allclose(out["polys"][0], [[37, 7], [49, 0], [-0.5, 29], [-11, -3]], atol=1e-5)
    assert out["polys"].dtype == np.float64
    assert out["image"][7, 37].all() and out["image"].sum() == 3 * 255


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iaa_rotation_keypoints_follow_image(seed):
    aug = IaaAugment(augmenter_args=[{"type": "Affine", "args": {"rotate": [-10, 10]}}])
    aug.reseed(seed)
    image = np.zeros((121, 161, 3), np.uint8)
    dots = [(20, 15), (140, 100), (80, 60), (30, 105)]
    for x, y in dots:
        image[y - 1:y + 2, x - 1:x + 2] = 255
    out = aug(sample(image, [dots]))
    assert out["image"].shape == image.shape
    moved = out["polys"][0]
    assert np.abs(moved - np.array(dots)).max() > 1  # it did rotate
    gray = out["image"][..., 0].astype(float)
    for (x, y) in moved:
        win = gray[int(y) - 5:int(y) + 6, int(x) - 5:int(x) + 6]
        ys, xs = np.mgrid[int(y) - 5:int(y) + 6, int(x) - 5:int(x) + 6]
        centroid = np.array([(xs * win).sum(), (ys * win).sum()]) / win.sum()
        assert np.abs(centroid - (x, y)).max() < 1.0


def test_iaa_scale_multiplies_points_by_exactly_s():
    aug = IaaAugment(augmenter_args=[{"type": "Resize", "args": {"size": [0.5, 3]}}])
    np.random.seed(4)
    s = np.random.uniform(0.5, 3)
    np.random.seed(4)
    polys = np.array([[[10.3, 7.1], [40.7, 7.9], [41.2, 20.5], [9.9, 21.1]]], np.float32)
    out = aug(sample(noise(37, 53), polys))
    assert out["image"].shape == (int(37 * s), int(53 * s), 3)
    np.testing.assert_array_equal(out["polys"], polys.astype(np.float64) * s)


def test_iaa_reseed_reproducible_and_distinct():
    def run(seed):
        aug = IaaAugment()
        aug.reseed(seed)
        np.random.seed(0)
        outs = [aug(sample(noise(60, 80, seed=i), [quad(10, 10, 30, 12)])) for i in range(4)]
        return np.concatenate([o["polys"].ravel() for o in outs]), [o["image"] for o in outs]

    (p1, i1), (p2, i2), (p3, _) = run(5), run(5), run(6)
    np.testing.assert_array_equal(p1, p2)
    assert all(np.array_equal(a, b) for a, b in zip(i1, i2))
    assert not np.array_equal(p1, p3)
    aug = IaaAugment()
    aug.reseed(5)
    flip, affine = aug.steps[0].transforms
    assert flip.py_random.random() != affine.py_random.random()  # not one shared stream


def test_iaa_handles_no_polygons():
    out = IaaAugment()(sample(noise(40, 60), []))
    assert out["polys"].shape == (0, 4, 2)


def test_iaa_rejects_unknown_type():
    from openocr_cli.errors import UserError

    with pytest.raises(UserError):
        IaaAugment(augmenter_args=[{"type": "Flipud", "args": {"p": 0.5}}])


# ------------------------------------------------------------------------------------ EastRandomCropData

def test_split_regions_drops_last_run():
    runs = split_regions(np.array([1, 2, 3, 7, 8, 10, 11]))
    assert [r.tolist() for r in runs] == [[1, 2, 3], [7, 8]]
    assert split_regions(np.arange(5, 9)) == []
    assert split_regions(np.array([], int)) == []


def multi_region_sample():
    boxes = [quad(100 + 300 * i, 80 + 200 * (i % 3), 120, 40) for i in range(4)]
    boxes.append(quad(600, 600, 100, 50))
    return sample(noise(720, 1280, seed=3, low=1), boxes, ignores=[False] * 4 + [True])


def content_box(image):
    nz = image.any(axis=2)
    h, w = int(nz.any(axis=1).sum()), int(nz.any(axis=0).sum())
    assert nz[:h, :w].all() and not nz[h:].any() and not nz[:, w:].any()
    return w, h


def test_crop_output_canvas_content_and_polygons():
    op = EastRandomCropData(size=[640, 640], max_tries=50, keep_ratio=True)
    for seed in range(20):  # several separated regions: the NumPy-2 crash case of OpenOCR
        np.random.seed(seed)
        out = op(multi_region_sample())
        assert out["image"].shape == (640, 640, 3)
        w, h = content_box(out["image"])
        assert w == 640 or h == 640
        polys = out["polys"]
        assert polys.dtype == np.float64 and polys.ndim == 3 and polys.shape[1:] == (4, 2)
        assert len(polys) >= 1 and len(polys) == len(out["ignore_tags"]) == len(out["texts"])
        assert out["ignore_tags"].dtype == bool and not out["ignore_tags"].all()
        assert all(not is_poly_outside_rect(p, 0, 0, w, h) for p in polys)


def test_crop_area_uses_regions_on_numpy2():
    data = multi_region_sample()
    w_free = np.flatnonzero(np.isin(np.arange(1280), np.r_[100:220, 400:520, 700:820, 1000:1120], invert=True))
    assert len(split_regions(w_free)) > 1
    np.random.seed(0)
    x, y, w, h = crop_area((720, 1280), list(data["polys"][:4]), 0.1, 50)
    assert w >= 128 and h >= 72 and x >= 0 and y >= 0 and x + w <= 1280 and y + h <= 720


def test_crop_all_ignored_returns_full_image_scaled():
    data = multi_region_sample()
    data["ignore_tags"][:] = True
    image, polys = data["image"].copy(), data["polys"].astype(np.float64)
    out = EastRandomCropData()(data)
    np.testing.assert_array_equal(out["image"][:360], cv2.resize(image, (640, 360)))
    assert not out["image"][360:].any()
    np.testing.assert_allclose(out["polys"], polys * 0.5)
    assert out["ignore_tags"].all() and len(out["texts"]) == 5


def test_crop_is_deterministic_under_numpy_seed():
    op = EastRandomCropData()
    np.random.seed(9)
    a = op(multi_region_sample())
    np.random.seed(9)
    b = op(multi_region_sample())
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["polys"], b["polys"])


def test_crop_without_polygons_keeps_consistent_empty_arrays():
    out = EastRandomCropData()(sample(noise(100, 200, low=1), []))
    assert out["polys"].shape == (0, 4, 2) and out["polys"].dtype == np.float64
    assert out["ignore_tags"].shape == (0,) and out["ignore_tags"].dtype == bool and out["texts"] == []
    assert content_box(out["image"]) == (640, 320)


def test_crop_negative_coordinates_do_not_wrap():
    # A box sticking out on the left marks columns 0..50 as text; wrap-around would mark none.
    np.random.seed(0)
    polys = [np.float64(quad(-20, 10, 70, 20))]
    for _ in range(20):
        x, y, w, h = crop_area((100, 400), polys, 0.1, 50)
        assert (x, w) == (0, 400) or x >= 50 or x + w <= 0


# ------------------------------------------------------------------------------------ deferred pixels

def smooth(h, w, seed=0):
    """Texture with detail at every scale a 0.2-3x resize keeps (blurred noise, stretched to 1..255)."""
    image = cv2.GaussianBlur(noise(h, w, seed=seed).astype(np.float32), (0, 0), 2.5)
    low, high = image.min(), image.max()
    return (1 + (image - low) * (254 / max(high - low, 1))).astype(np.uint8)


def test_resized_window_without_steps_is_cv2_resize_of_the_window():
    from openocr_cli.data.planned import PlannedImage

    rng = np.random.default_rng(0)
    for trial in range(30):
        h, w = (int(v) for v in rng.integers(20, 400, 2))
        image = smooth(h, w, seed=trial)
        left, top = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        cw, ch = int(rng.integers(1, w - left + 1)), int(rng.integers(1, h - top + 1))
        factor = rng.uniform(0.2, 3, 2) if trial % 3 else (1, 1)
        size = (max(1, round(cw * factor[0])), max(1, round(ch * factor[1])))
        ours = PlannedImage(image, []).resized_window(left, top, cw, ch, size)
        theirs = cv2.resize(image[top:top + ch, left:left + cw], size, interpolation=cv2.INTER_LINEAR)
        assert ours.shape == theirs.shape
        diff = np.abs(ours.astype(int) - theirs.astype(int))
        if size == (cw, ch):  # a plain crop: copied exactly
            assert diff.max() == 0
        else:  # the warp's 1/32-pixel positions against resize's finer weights; within 2 px of the
            inner = diff[2:-2, 2:-2]  # window's edge resize repeats its edge where the warp reads beyond it
            assert inner.size == 0 or (inner.mean() < 0.6 and inner.max() <= 4)


def _chain(ops, data, seed):
    ops[0].reseed(seed)
    np.random.seed(seed)
    out = dict(data, image=data["image"].copy(), polys=data["polys"].copy())
    for op in ops:
        out = op(out)
    return out


def _mean_diff(a, b, dx=0, dy=0):
    h, w = a.shape[:2]
    a = a[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)].astype(int)
    b = b[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)].astype(int)
    return np.abs(a - b).mean()


def test_the_one_warp_crop_matches_the_step_by_step_chain_and_is_aligned_with_it():
    """openocr-compat: crop-one-warp: the same flips, angles, scales, windows and polygons as computing each
    step in full (OpenOCR's way); the pixels differ only by interpolation, and no shift lines them up better."""
    from openocr_cli.data.transforms import build_ops

    chain = [{"IaaAugment": None}, {"EastRandomCropData": {"size": [160, 160]}}]
    deferred, eager = build_ops(chain), build_ops(chain)
    assert deferred[0].defer_pixels
    eager[0].defer_pixels = False
    data = multi_region_sample()
    data["image"] = smooth(720, 1280, seed=3)
    for seed in range(15):
        warped, stepwise = _chain(deferred, data, seed), _chain(eager, data, seed)
        np.testing.assert_array_equal(warped["polys"], stepwise["polys"])
        np.testing.assert_array_equal(warped["ignore_tags"], stepwise["ignore_tags"])
        assert warped["image"].shape == stepwise["image"].shape == (160, 160, 3)
        aligned = _mean_diff(warped["image"], stepwise["image"])
        assert aligned < 2.0
        shifted = min(_mean_diff(warped["image"], stepwise["image"], dx, dy)
                      for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)))
        assert aligned < shifted


def test_recorded_steps_match_albumentations_doing_the_pixels():
    """The recorded flip and rotation (run later, rotation via 4 channels) equal albumentations' own pixels."""
    import albumentations as A

    args = [{"type": "Fliplr", "args": {"p": 0.5}}, {"type": "Affine", "args": {"rotate": [-10, 10]}}]
    ours = IaaAugment(augmenter_args=args)
    theirs = A.Compose([A.HorizontalFlip(p=0.5), A.Affine(rotate=(-10, 10), p=1.0, fit_output=False,
                                                          interpolation=cv2.INTER_LINEAR,
                                                          border_mode=cv2.BORDER_CONSTANT, fill=0)],
                       keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    for seed in range(12):
        image = noise(91 + seed * 7, 173 - seed * 5, seed=seed)
        ours.reseed(seed)
        _copy_seeds(theirs, seed)
        a = ours(sample(image.copy(), [quad(10, 10, 30, 12)]))
        b = theirs(image=image.copy(), keypoints=np.array(quad(10, 10, 30, 12), np.float64))
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_allclose(a["polys"].reshape(-1, 2), b["keypoints"])


def _copy_seeds(theirs, seed):
    """Give albumentations' plain transforms the same per-transform seeds IaaAugment.reseed gives ours."""
    from openocr_cli.data.augment import _derive_seed

    theirs.set_random_seed(_derive_seed(seed, 0, 0))
    for j, transform in enumerate(theirs.transforms):
        transform.set_random_seed(_derive_seed(seed, 0, j + 1))
