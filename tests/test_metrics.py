"""The IoU detection metric on small hand-made cases with numbers worked out by hand."""

import numpy as np
import pytest

from openocr_cli.evaluation.iou_metric import DetMetric, ImageRecord, evaluate_image, summarize
from openocr_cli.postprocess import Detection


def box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


SQUARE = box(0, 0, 10, 10)
BOWTIE = [[0, 0], [10, 10], [10, 0], [0, 10]]


def test_perfect_match():
    metric = DetMetric()
    assert metric.update([SQUARE, box(20, 0, 30, 10)], [False, False], [box(20, 0, 30, 10), SQUARE]) == \
        ImageRecord(gt_care=2, det_care=2, det_matched=2)
    assert metric.result() == {"precision": 1.0, "recall": 1.0, "hmean": 1.0}


def test_no_detections_and_no_gt():
    assert evaluate_image([SQUARE], [False], []) == ImageRecord(1, 0, 0)
    assert evaluate_image([], [], [SQUARE]) == ImageRecord(0, 1, 0)
    assert summarize([ImageRecord(1, 0, 0)]) == {"precision": 0.0, "recall": 0.0, "hmean": 0.0}
    assert summarize([]) == {"precision": 0.0, "recall": 0.0, "hmean": 0.0}


def test_dont_care_gt_hides_a_detection_it_covers():
    # det 2..12 x 0..10: 80 % inside the ### region -> neither counted nor matchable
    assert evaluate_image([SQUARE], [True], [box(2, 0, 12, 10)]) == ImageRecord(0, 0, 0)
    # and the don't-care GT does not swallow a detection of a neighbouring care GT
    rec = evaluate_image([SQUARE, box(20, 0, 30, 10)], [True, False], [box(1, 0, 11, 10), box(20, 0, 30, 10)])
    assert rec == ImageRecord(1, 1, 1)


def test_dont_care_cover_must_exceed_half():
    assert evaluate_image([SQUARE], [True], [box(5, 0, 15, 10)]) == ImageRecord(0, 1, 0)  # exactly 0.5
    assert evaluate_image([SQUARE], [True], [box(6, 0, 16, 10)]) == ImageRecord(0, 1, 0)  # 0.4
    assert evaluate_image([SQUARE], [True], [box(4.9, 0, 14.9, 10)]) == ImageRecord(0, 0, 0)  # 0.51


def test_iou_exactly_half_is_not_a_match():
    # contained: inter 50, union 100
    assert evaluate_image([SQUARE], [False], [box(0, 0, 10, 5)]).det_matched == 0
    assert evaluate_image([SQUARE], [False], [box(0, 0, 10, 5.5)]).det_matched == 1  # 0.55
    # overhanging: inter 100, union 200
    assert evaluate_image([SQUARE], [False], [box(0, 0, 20, 10)]).det_matched == 0
    assert evaluate_image([SQUARE], [False], [box(0, 0, 19.5, 10)]).det_matched == 1  # 100/195


def test_matching_is_one_to_one_and_greedy():
    # two detections on one GT: only one matches, the other counts against precision
    assert evaluate_image([SQUARE], [False], [box(0, 0, 10, 9), box(0, 0, 10, 10)]) == ImageRecord(1, 2, 1)
    # greedy, not optimal: GT 0 takes det 0 (IoU 0.7, first in det order) although det 1 fits it
    # too (0.833); GT 1 then only has det 1 at IoU exactly 0.5 -> one match where two were possible
    gts = [SQUARE, box(0, 0, 10, 6)]
    dets = [box(0, 0, 10, 7), box(0, 0, 10, 12)]
    assert evaluate_image(gts, [False, False], dets) == ImageRecord(2, 2, 1)
    assert evaluate_image(gts, [False, False], dets[::-1]) == ImageRecord(2, 2, 2)


def test_invalid_polygons_are_dropped():
    # self-intersecting GT disappears entirely (not a miss); the detection is then unmatched
    assert evaluate_image([BOWTIE], [False], [SQUARE]) == ImageRecord(0, 1, 0)
    assert evaluate_image([BOWTIE, SQUARE], [True, False], [SQUARE]) == ImageRecord(1, 1, 1)
    # an invalid detection is dropped too
    assert evaluate_image([SQUARE], [False], [BOWTIE]) == ImageRecord(1, 0, 0)


def test_accepts_arrays_floats_and_detections():
    det = Detection(np.array(SQUARE, np.int32), 0.9)
    gt = np.array(SQUARE, np.float64) + 0.25
    assert evaluate_image([gt], np.array([False]), [det]) == ImageRecord(1, 1, 1)
    with pytest.raises(ValueError):
        evaluate_image([[[0, 0], [1, 1]]], [False], [])
    with pytest.raises(ValueError):
        evaluate_image([SQUARE], [], [])


def test_micro_average_over_two_images():
    metric = DetMetric()
    # image 1: two GT, one correct detection
    assert metric.update([SQUARE, box(20, 0, 30, 10)], [False, False], [SQUARE]) == ImageRecord(2, 1, 1)
    # image 2: one GT, three detections of which one matches
    assert metric.update([SQUARE], [False], [SQUARE, box(40, 0, 50, 10), box(60, 0, 70, 10)]) == \
        ImageRecord(1, 3, 1)
    res = metric.result()
    # micro: recall 2/3, precision 2/4, hmean 2*(1/2)(2/3)/(1/2+2/3) = 4/7 (a per-image mean would differ)
    assert res["recall"] == pytest.approx(2 / 3)
    assert res["precision"] == pytest.approx(0.5)
    assert res["hmean"] == pytest.approx(4 / 7)
    assert len(metric.records) == 2
