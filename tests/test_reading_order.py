"""Reading order (postprocess.reading_order, --reading-order): lines top to bottom, left to right in a line."""

import json

import cv2
import numpy as np
import pytest

from openocr_cli import Detector
from openocr_cli.postprocess import Detection, reading_order
from tests.test_onnx_backend import tiny_model
from tests.test_tiling import bars_image


def box(x0, y0, x1, y1, tilt=0):
    return Detection(np.array([[x0, y0], [x1, y0 + tilt], [x1, y1 + tilt], [x0, y1]], np.int32), 0.9)


def left_tops(detections):
    return [tuple(d.points[0]) for d in detections]


def test_lines_come_top_to_bottom_and_boxes_left_to_right_whatever_the_input_order():
    # two lines of three words, the second line's words a little tilted and uneven; given bottom line first
    words = [box(300, 100, 360, 120, tilt=3), box(10, 98, 80, 121), box(150, 101, 260, 119, tilt=-2),
             box(200, 20, 280, 40), box(20, 22, 120, 41), box(130, 18, 190, 39)]
    ordered = reading_order(words)
    assert left_tops(ordered) == [(20, 22), (130, 18), (200, 20), (10, 98), (150, 101), (300, 100)]
    assert reading_order([]) == []
    rng = np.random.default_rng(0)
    for _ in range(5):  # the order does not depend on the input's
        shuffled = [words[i] for i in rng.permutation(len(words))]
        assert left_tops(reading_order(shuffled)) == left_tops(ordered)


def test_a_tall_box_beside_two_lines_keeps_the_lines_in_order():
    tall = box(0, 0, 40, 100)  # a stamp or a drop capital spanning both lines
    lines = [box(60, 5, 200, 30), box(60, 60, 200, 85)]
    # the first line, then the tall box's span (its centre is below the first line), holding the second line
    assert left_tops(reading_order([lines[1], tall, lines[0]])) == [(60, 5), (0, 0), (60, 60)]


@pytest.fixture(scope="module")
def bright(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "bright.onnx")


def test_detector_and_predict_give_reading_order_when_asked(cli, tmp_path, bright):
    bars = [(40, 200, 200, 230), (260, 200, 420, 230), (40, 60, 200, 90), (260, 60, 420, 90)]
    image = bars_image(320, 480, bars)
    default = Detector(bright).predict(image)[0].detections
    ordered = Detector(bright, reading_order=True).predict(image)[0].detections
    assert len(default) == len(ordered) == 4
    top_left = [tuple(d.points.min(axis=0) // 10) for d in ordered]
    assert [y for _, y in top_left] == sorted(y for _, y in top_left)  # top line first
    assert top_left[0][0] < top_left[1][0] and top_left[2][0] < top_left[3][0]  # left to right in each line
    assert sorted(left_tops(default)) == sorted(left_tops(ordered))  # the same boxes, only reordered

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "page.png"), image)
    code, _, err = cli("predict", folder, "--onnx-model", bright, "--reading-order", "--output", tmp_path / "out",
                       "--no-vis")
    assert code == 0, err
    name, text = (tmp_path / "out" / "det_results.txt").read_text().strip().split("\t")
    written = [tuple(item["points"][0]) for item in json.loads(text)]
    assert written == [tuple(p) for p in left_tops(ordered)]
