"""predict --select-uncertain N: a deterministic ranking (ties by path) from what post-processing sees."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from openocr_cli.evaluation.uncertainty import UncertainSelection, image_uncertainty, rank
from openocr_cli.postprocess import DBPostProcess
from tests.test_api import page
from tests.test_onnx_backend import tiny_model

PP = DBPostProcess()


def blocks(value_in: float, value_out: float = 0.0, blur: int = 0) -> np.ndarray:
    pred = np.full((96, 128), value_out, np.float32)
    pred[20:40, 10:70] = value_in
    pred[60:80, 30:110] = value_in
    if blur:
        pred = cv2.GaussianBlur(pred, (0, 0), blur)
    return pred


def test_a_sure_map_scores_lower_than_an_unsure_one():
    sure = image_uncertainty(blocks(0.98), PP)
    faint = image_uncertainty(blocks(0.62), PP)  # boxes kept just above box_thresh 0.6
    blurred = image_uncertainty(blocks(0.95, blur=6), PP)
    empty = image_uncertainty(np.zeros((96, 128), np.float32), PP)
    rejected = image_uncertainty(blocks(0.45), PP)  # text seen at thresh, every box refused by box_thresh
    assert sure.score < faint.score and sure.score < blurred.score and sure.score < rejected.score
    assert empty.score == 0.0 and rejected.low_box_score == 1.0
    assert faint.borderline == 1.0 and sure.borderline == 0.0
    assert blurred.map_ambiguity > sure.map_ambiguity
    assert all(0.0 <= v <= 1.0 for u in (sure, faint, blurred, empty, rejected)
               for v in (u.score, u.low_box_score, u.borderline, u.map_ambiguity))


def test_ranking_keeps_the_top_n_with_ties_broken_by_path():
    rng = np.random.default_rng(0)
    items = [(f"img{i:03d}.png", float(rng.choice([0.1, 0.5, 0.5, 0.9]))) for i in range(200)]
    expected = sorted(items, key=lambda item: (-item[1], item[0]))[:17]
    assert rank(items, 17) == expected
    assert rank(list(reversed(items)), 17) == expected  # input order does not matter
    selection = UncertainSelection(3)
    for path in ("c", "a", "b", "d"):
        selection.add(path, 0.25)
    assert selection.ranked() == [("a", 0.25), ("b", 0.25), ("c", 0.25)]
    with pytest.raises(ValueError):
        UncertainSelection(0)


def test_predict_writes_the_same_selection_every_time(cli, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(4):
        cv2.imwrite(str(images / f"p{i}.png"), page(i))
    shutil.copy(images / "p1.png", images / "p1_copy.png")  # the same image twice: a tie, broken by path
    blurred = cv2.GaussianBlur(page(5), (0, 0), 4)
    cv2.imwrite(str(images / "z_blurred.png"), blurred)
    model = tiny_model(tmp_path / "tiny.onnx")
    lists = []
    for run in ("a", "b"):
        code, out, err = cli("predict", images, "--onnx-model", model, "--device", "cpu", "--no-vis",
                             "--output", tmp_path / run, "--select-uncertain", "6", "--batch-size", "2")
        assert code == 0, err
        assert "uncertain: 6 of 6 images" in out
        lists.append((tmp_path / run / "uncertain.txt").read_text())
    assert lists[0] == lists[1]
    rows = [line.split("\t") for line in lists[0].splitlines()]
    scores = [float(s) for _, s in rows]
    assert scores == sorted(scores, reverse=True) and len(rows) == 6
    names = [p.rsplit("/", 1)[-1] for p, _ in rows]
    assert names.index("p1.png") == names.index("p1_copy.png") - 1  # equal scores: path order
    assert names[0] == "z_blurred.png"  # the blurred page is the one the model is least sure about
    code, _, err = cli("predict", images, "--onnx-model", model, "--device", "cpu", "--no-vis",
                       "--output", tmp_path / "c", "--select-uncertain", "0")
    assert code == 2 and "Traceback" not in err
