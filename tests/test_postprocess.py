"""DBPostProcess on synthetic probability maps whose boxes can be worked out by hand."""

import dataclasses

import cv2
import numpy as np
import pytest

from openocr_cli.postprocess import DBPostProcess, Detection, mini_box


def rect_map(h=64, w=96, box=(10, 30, 20, 60), value=0.9, background=0.0):
    """Map with one axis-aligned filled rectangle rows y0:y1, cols x0:x1."""
    m = np.full((h, w), background, np.float32)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = value
    return m


def unclip_distance(long_side, short_side, ratio=1.5):
    return long_side * short_side * ratio / (2 * (long_side + short_side))


def side_lengths(points):
    p = points.astype(np.float64)
    return np.linalg.norm(p[1] - p[0]), np.linalg.norm(p[3] - p[0])


def test_axis_aligned_rectangle_expands_by_unclip_distance():
    dets = DBPostProcess()(rect_map(), 64, 96)
    assert len(dets) == 1
    det = dets[0]
    assert isinstance(det, Detection)
    assert det.points.dtype == np.int32 and det.points.shape == (4, 2)
    # The contour runs through pixel centres: cols 20..59, rows 10..29 -> a 39 x 19 rectangle.
    d = unclip_distance(39, 19)
    (x0, y0), (x1, y1) = det.points.min(0), det.points.max(0)
    assert abs(x0 - (20 - d)) <= 1 and abs(x1 - (59 + d)) <= 1
    assert abs(y0 - (10 - d)) <= 1 and abs(y1 - (29 + d)) <= 1
    # TL, TR, BR, BL
    assert det.points.tolist() == [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_rotated_rectangle_quad_size_order_and_score():
    m = np.zeros((100, 120), np.float32)
    corners = cv2.boxPoints(((60, 50), (40, 20), 30))
    cv2.fillPoly(m, [np.round(corners).astype(np.int32)], 0.8)
    dets = DBPostProcess()(m, 100, 120)
    assert len(dets) == 1
    pts = dets[0].points
    assert dets[0].score == pytest.approx(0.8)

    contours, _ = cv2.findContours((m > 0.3).astype(np.uint8) * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    (cx, cy), (rw, rh), _ = cv2.minAreaRect(contours[0])
    long_side, short_side = max(rw, rh), min(rw, rh)
    d = unclip_distance(long_side, short_side)
    assert 9 < d < 11  # ~ A*1.5/L of the nominal 40 x 20 rectangle (= 10)
    sides = sorted(side_lengths(pts))
    assert sides[0] == pytest.approx(short_side + 2 * d, abs=2.0)
    assert sides[1] == pytest.approx(long_side + 2 * d, abs=2.0)
    assert pts.mean(0) == pytest.approx([cx, cy], abs=1.0)

    # TL/BL are the two left-most corners (TL above BL), TR/BR the two right-most (TR above BR).
    tl, tr, br, bl = pts
    assert max(tl[0], bl[0]) <= min(tr[0], br[0])
    assert tl[1] < bl[1] and tr[1] < br[1]
    # and the order goes clockwise on screen (positive shoelace area with y pointing down)
    x, y = pts[:, 0].astype(float), pts[:, 1].astype(float)
    assert np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) > 0


def test_mini_box_sorts_corners():
    contour = np.array([[10, 10], [50, 10], [50, 30], [10, 30]], np.int32).reshape(-1, 1, 2)
    box, sside = mini_box(contour)
    assert box.tolist() == [[10, 10], [50, 10], [50, 30], [10, 30]]
    assert sside == 20


def test_scaling_to_source_size_and_clipping():
    m = rect_map()
    same = DBPostProcess()(m, 64, 96)[0].points
    double = DBPostProcess()(m, 128, 192)[0].points
    assert np.array_equal(double, same * 2)

    # A blob touching the right/bottom edges: the box is clipped to [0, src] (inclusive upper bound).
    edge = rect_map(box=(40, 64, 60, 96))
    pts = DBPostProcess()(edge, 128, 192)[0].points
    assert pts[:, 0].max() == 192 and pts[:, 1].max() == 128
    assert pts.min() >= 0


def test_box_thresh_drops_below_and_keeps_equal():
    m = rect_map(value=0.5)  # exactly representable, so the score is exactly 0.5
    assert len(DBPostProcess(box_thresh=0.5)(m, 64, 96)) == 1
    assert DBPostProcess(box_thresh=0.5)(m, 64, 96)[0].score == 0.5
    assert DBPostProcess(box_thresh=0.5000001)(m, 64, 96) == []
    assert DBPostProcess()(rect_map(value=0.59), 64, 96) == []


def test_bitmap_threshold_is_strict():
    m = rect_map(value=0.3)  # float32(0.3) is not > 0.3 when compared in float32
    assert DBPostProcess(thresh=0.3, box_thresh=0.0)(m, 64, 96) == []
    assert DBPostProcess(thresh=np.float64(0.3), box_thresh=0.0)(m, 64, 96) == []
    assert len(DBPostProcess(thresh=0.29, box_thresh=0.0)(m, 64, 96)) == 1


def test_thin_blobs_are_dropped():
    pp = DBPostProcess()
    assert pp(rect_map(box=(10, 13, 10, 60)), 64, 96) == []  # 3 px thick -> sside 2
    assert len(pp(rect_map(box=(10, 14, 10, 60)), 64, 96)) == 1  # 4 px thick -> sside 3


def test_slow_score_is_region_mean_and_fast_uses_the_min_area_box():
    # Horizontal gradient inside a rectangle: both modes average exactly the rectangle.
    m = np.zeros((64, 96), np.float32)
    m[10:30, 20:60] = np.linspace(0.5, 1.0, 40, dtype=np.float32)[None, :]
    region_mean = float(m[10:30, 20:60].mean())
    assert DBPostProcess(score_mode="slow")(m, 64, 96)[0].score == pytest.approx(region_mean, abs=1e-6)
    assert DBPostProcess(score_mode="fast")(m, 64, 96)[0].score == pytest.approx(region_mean, abs=1e-6)

    # Disk on a low (sub-threshold) background: the fast box also averages the low corners.
    disk = np.full((80, 80), 0.2, np.float32)
    cv2.circle(disk, (40, 40), 15, 0.9, -1)
    slow = DBPostProcess(score_mode="slow")(disk, 80, 80)[0].score
    fast = DBPostProcess(score_mode="fast", box_thresh=0.5)(disk, 80, 80)[0].score
    assert slow == pytest.approx(0.9)
    expected_fast = 0.2 + 0.7 * np.pi / 4  # disk / enclosing square area
    assert fast == pytest.approx(expected_fast, abs=0.04)
    assert fast < slow
    assert DBPostProcess(score_mode="fast", box_thresh=0.8)(disk, 80, 80) == []
    assert len(DBPostProcess(score_mode="slow", box_thresh=0.8)(disk, 80, 80)) == 1


def test_poly_mode_returns_a_polygon_for_an_l_shape():
    m = np.zeros((80, 80), np.float32)
    m[10:60, 10:25] = 0.9
    m[45:60, 10:60] = 0.9
    dets = DBPostProcess(box_type="poly")(m, 80, 80)
    assert len(dets) == 1
    pts = dets[0].points
    assert pts.dtype == np.int32 and pts.ndim == 2 and pts.shape[1] == 2 and len(pts) >= 4
    assert dets[0].score == pytest.approx(0.9)
    assert pts.min() >= 0 and pts.max() <= 80
    # the expanded L still leaves its inner corner region uncovered
    assert cv2.pointPolygonTest(pts.reshape(-1, 1, 2), (55, 15), False) < 0


def test_max_candidates_keeps_the_first_contours_in_opencv_order():
    m = np.zeros((60, 100), np.float32)
    for i in range(5):
        m[5 + i * 11:13 + i * 11, 10 + i * 15:30 + i * 15] = 0.9
    all_dets = DBPostProcess()(m, 60, 100)
    assert len(all_dets) == 5
    tops = [int(d.points[:, 1].min()) for d in all_dets]
    assert tops == sorted(tops, reverse=True)  # OpenCV lists lower blobs first
    two = DBPostProcess(max_candidates=2)(m, 60, 100)
    assert [d.points.tolist() for d in two] == [d.points.tolist() for d in all_dets[:2]]


def test_the_candidate_cap_grows_with_the_map_beyond_one_network_input():
    """openocr-compat: candidate-cap. OpenOCR's 1000 contours up to 960 x 960 (parity); a larger map keeps 1000
    per 960 x 960, so a full-resolution 1920 x 1920 map with 3600 words boxes them all, not its first 1000."""
    assert DBPostProcess().candidate_cap(960 * 960) == DBPostProcess().candidate_cap(640 * 480) == 1000
    m = np.zeros((1920, 1920), np.float32)
    for y in range(0, 1920, 32):
        for x in range(0, 1920, 32):
            m[y + 8:y + 20, x + 4:x + 28] = 0.9
    assert len(DBPostProcess()(m, 1920, 1920)) == 3600
    assert len(DBPostProcess()(m[:960, :960], 960, 960)) == 900  # under the cap either way
    two = DBPostProcess(max_candidates=200)
    assert len(two(m[:960, :960], 960, 960)) == 200 and len(two(m, 1920, 1920)) == 800


def test_dilation_joins_a_one_pixel_gap():
    m = np.zeros((40, 60), np.float32)
    m[10:20, 5:25] = 0.9
    m[10:20, 26:50] = 0.9
    assert len(DBPostProcess()(m, 40, 60)) == 2
    assert len(DBPostProcess(use_dilation=True)(m, 40, 60)) == 1


def test_empty_map_gives_no_detections():
    assert DBPostProcess()(np.zeros((32, 32), np.float32), 32, 32) == []
    assert DBPostProcess(box_type="poly")(np.zeros((32, 32), np.float32), 32, 32) == []


@pytest.mark.parametrize("kwargs", [
    {"score_mode": "medium"},
    {"box_type": "rect"},
    {"thresh": -0.1},
    {"thresh": 1.5},
    {"box_thresh": 2},
    {"unclip_ratio": 0},
    {"unclip_ratio": -1.0},
    {"unclip_ratio": float("inf")},
    {"max_candidates": 0},
    {"max_candidates": 2.5},
    {"use_dilation": "yes"},
])
def test_bad_settings_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        DBPostProcess(**kwargs)


def test_settings_are_immutable():
    pp = DBPostProcess()
    with pytest.raises(dataclasses.FrozenInstanceError):
        pp.thresh = 0.5
