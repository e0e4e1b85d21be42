"""The ICDAR Robust Reading submission (`rrc`): the format rules the official evaluation enforces, always; and the
official Challenge 4 task 4.1 script itself scoring our submit.zip when it is available.

The official script (script.py + rrc_evaluation_funcs_1_1.py, from the competition's site; it needs the
Polygon3 and numpy packages) is not on PyPI and not in this repository. Point OPENOCR_DET_RRC_SCRIPT at its
script.py (OPENOCR_DET_RRC_PYTHON at an interpreter that has Polygon3, default this one) to run that test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest

from openocr_cli import Detector
from openocr_cli.formats import rrc
from tests.conftest import label_line
from tests.test_api import page
from tests.test_onnx_backend import tiny_model

SCRIPT_ENV = "OPENOCR_DET_RRC_SCRIPT"
PYTHON_ENV = "OPENOCR_DET_RRC_PYTHON"
# Challenge 4 task 4.1 (incidental scene text, localisation) as published: IoU 0.5, quadrilaterals, no confidences
CH4_T1 = {"IOU_CONSTRAINT": 0.5, "AREA_PRECISION_CONSTRAINT": 0.5, "GT_SAMPLE_NAME_2_ID": "gt_img_([0-9]+).txt",
          "DET_SAMPLE_NAME_2_ID": "res_img_([0-9]+).txt", "LTRB": False, "CRLF": False, "CONFIDENCES": False,
          "PER_SAMPLE_RESULTS": True}
# The submission line rule of the task 4.1 script (8 integers, nothing else), restated here to test against.
SUBMISSION_LINE = re.compile(r"^\s*" + r"\s*,\s*".join([r"-?[0-9]+"] * 8) + r"\s*$")
GT_LINE = re.compile(r"^\s*" + r"\s*,\s*".join([r"-?[0-9]+"] * 8) + r"\s*,(.*)$")


def shoelace_edges(values: list[int]) -> int:
    """The official clockwise test: the sum over edges of (x2 - x1) * (y2 + y1) must not be positive."""
    pts = list(zip(values[0::2], values[1::2]))
    return sum((pts[(i + 1) % 4][0] - pts[i][0]) * (pts[(i + 1) % 4][1] + pts[i][1]) for i in range(4))


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """img_1..img_3 pages (named as ICDAR 2015 names its images) and the stand-in model."""
    root = tmp_path_factory.mktemp("rrc")
    images = root / "imgs"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"img_{i + 1}.png"), page(i))
    model = tiny_model(root / "tiny.onnx")
    return root, images, model


def run(cli, *args):
    code, out, err = cli(*args)
    assert code == 0, err
    return out


def test_submission_follows_the_official_format_rules(scored, tmp_path, cli):
    root, images, model = scored
    out = tmp_path / "out"
    run(cli, "predict", images, "--onnx-model", model, "--device", "cpu", "--no-vis", "--output", out,
        "--save-format", "rrc")
    with zipfile.ZipFile(out / "submit.zip") as archive:
        names = archive.namelist()
        assert names == ["res_img_1.txt", "res_img_2.txt", "res_img_3.txt"]  # flat, one per image, gt_ names match
        for name in names:
            assert re.match(CH4_T1["DET_SAMPLE_NAME_2_ID"], name)
            raw = archive.read(name)
            assert not raw.startswith(b"\xef\xbb\xbf") and b"\r" not in raw  # UTF-8 without BOM, LF
            lines = raw.decode("utf-8").splitlines()
            assert lines, name
            for line in lines:
                assert SUBMISSION_LINE.match(line), line  # 8 integers, no transcription, no trailing comma
                assert shoelace_edges([int(v) for v in line.split(",")]) <= 0, line
    det_lines = (out / "det_results.txt").read_text().splitlines()
    boxes = {Path(line.split("\t")[0]).stem: json.loads(line.split("\t")[1]) for line in det_lines}
    with zipfile.ZipFile(out / "submit.zip") as archive:
        for stem, found in boxes.items():
            text = archive.read(f"res_{stem}.txt").decode()
            written = [[int(v) for v in line.split(",")] for line in text.splitlines()]
            assert written == [[v for p in box["points"] for v in p] for box in found]  # same quads, TL TR BR BL


def test_convert_to_rrc_from_det_results_and_back(scored, tmp_path, cli):
    root, images, model = scored
    out = tmp_path / "out"
    run(cli, "predict", images, "--onnx-model", model, "--device", "cpu", "--no-vis", "--output", out,
        "--box-type", "poly")
    code, _, err = cli("convert", out / "det_results.txt", "--from", "ppocr", "--to", "rrc",
                       "--output", tmp_path / "s.zip")
    assert code == 1 and "quadrilaterals only" in err and "--min-rect" in err and not (tmp_path / "s.zip").exists()
    code, _, err = cli("convert", out / "det_results.txt", "--from", "ppocr", "--to", "rrc", "--min-rect",
                       "--output", tmp_path / "s.zip")
    assert code == 0, err
    with zipfile.ZipFile(tmp_path / "s.zip") as archive:
        for name in archive.namelist():
            for line in archive.read(name).decode().splitlines():
                assert SUBMISSION_LINE.match(line) and shoelace_edges([int(v) for v in line.split(",")]) <= 0
    code, _, err = cli("convert", tmp_path / "s.zip", "--from", "rrc", "--to", "ppocr", "--images-dir", images,
                       "--output", tmp_path / "back.txt")
    assert code == 0, err
    assert [line.split("\t")[0] for line in (tmp_path / "back.txt").read_text().splitlines()] == \
        ["img_1.png", "img_2.png", "img_3.png"]


def test_predict_rrc_with_polygons_needs_min_rect(scored, tmp_path, cli):
    root, images, model = scored
    code, _, err = cli("predict", images / "img_1.png", "--onnx-model", model, "--device", "cpu", "--no-vis",
                       "--output", tmp_path / "o", "--box-type", "poly", "--save-format", "rrc")
    assert code == 2 and "--min-rect" in err and "Traceback" not in err


def test_icdar2015_from_predictions_is_ground_truth_and_says_so(scored, tmp_path, cli):
    """gt_<stem>.txt keeps a (here empty) transcription field, which the official GT parser takes as a region to
    care about; the command points at --to rrc for a submission."""
    root, images, model = scored
    out = tmp_path / "out"
    run(cli, "predict", images, "--onnx-model", model, "--device", "cpu", "--no-vis", "--output", out)
    code, outs, err = cli("convert", out / "det_results.txt", "--from", "ppocr", "--to", "icdar2015",
                          "--output", tmp_path / "gt")
    assert code == 0, err
    assert "--to rrc" in " ".join((outs + err).split())
    for file in (tmp_path / "gt").iterdir():
        for line in file.read_text().splitlines():
            match = GT_LINE.match(line)
            assert match and match.group(1) == ""


def _zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, file.name)
    return target


DRIVER = r"""
import importlib.util, json, os, sys
script, gt, subm, params = sys.argv[1:5]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
spec = importlib.util.spec_from_file_location("rrc_script", script)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
res = mod.rrc_evaluation_funcs.main_evaluation({"g": gt, "s": subm, "p": json.loads(params)},
                                               mod.default_evaluation_params, mod.validate_data, mod.evaluate_method)
sys.stdout.write("\nRESULT " + json.dumps({"calculated": res["calculated"], "Message": res["Message"],
                                           "method": res["method"]}) + "\n")
sys.stdout.flush()
os._exit(0)  # Polygon3 can crash while the interpreter finalises; the result is out by then
"""


def official(gt_zip: Path, submit_zip: Path) -> dict:
    script = os.environ[SCRIPT_ENV]
    python = os.environ.get(PYTHON_ENV, sys.executable)
    done = subprocess.run([python, "-c", DRIVER, script, str(gt_zip), str(submit_zip), json.dumps(CH4_T1)],
                          capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.abspath(script)))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the official script printed no result:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.skipif(not os.environ.get(SCRIPT_ENV), reason=f"the official ICDAR 2015 task 4.1 evaluation script is "
                    f"not on PyPI nor in this repository: set {SCRIPT_ENV}=/path/to/script.py (with "
                    f"rrc_evaluation_funcs_1_1.py beside it; {PYTHON_ENV}=python with Polygon3 + numpy) to run this")
def test_official_script_scores_our_submission_as_eval_does(scored, tmp_path, cli):
    root, images, model = scored
    out = tmp_path / "out"
    run(cli, "predict", images, "--onnx-model", model, "--device", "cpu", "--no-vis", "--output", out,
        "--save-format", "rrc")
    # ground truth that disagrees with the predictions in every way the metric counts: the first box of each image
    # is not in it (a false positive), the second is "do not care", and one more word was missed
    lines = []
    for line in (out / "det_results.txt").read_text().splitlines():
        path, boxes = line.split("\t")
        boxes = json.loads(boxes)
        regions = [{"transcription": "###" if n == 1 else f"w{n}", "points": box["points"]}
                   for n, box in enumerate(boxes) if n > 0]
        regions.append({"transcription": "missed", "points": [[2, 2], [30, 2], [30, 12], [2, 12]]})
        lines.append(label_line(Path(path).name, regions))
    (images / "gt.txt").write_text("".join(lines))
    code, _, err = cli("convert", images / "gt.txt", "--from", "ppocr", "--to", "icdar2015", "--output",
                       tmp_path / "gt")
    assert code == 0, err
    gt_zip = _zip_folder(tmp_path / "gt", tmp_path / "gt.zip")
    result = official(gt_zip, out / "submit.zip")
    assert result["calculated"], result["Message"]
    ours = Detector(model, device="cpu").evaluate(images / "gt.txt", data_dir=images)
    assert 0.3 < ours.precision < 1 and 0.3 < ours.recall < 1  # a score that can disagree
    assert result["method"]["precision"] == pytest.approx(ours.precision, abs=1e-9)
    assert result["method"]["recall"] == pytest.approx(ours.recall, abs=1e-9)
    assert result["method"]["hmean"] == pytest.approx(ours.hmean, abs=1e-9)

    # predictions scored against themselves: every box matches (and icdar2015 written from predictions is a valid GT)
    code, _, err = cli("convert", out / "det_results.txt", "--from", "ppocr", "--to", "icdar2015",
                       "--output", tmp_path / "self")
    assert code == 0, err
    same = official(_zip_folder(tmp_path / "self", tmp_path / "self.zip"), out / "submit.zip")
    assert same["calculated"] and same["method"]["hmean"] == 1.0

    # and the script refuses what `convert --to icdar2015` used to be mistaken for: gt_ files with a trailing field
    refused = official(gt_zip, _zip_folder(tmp_path / "self", tmp_path / "wrong.zip"))
    assert not refused["calculated"]


def test_corner_order_is_the_official_clockwise_and_integers():
    ccw = [[10, 10], [10, 30], [50, 30], [50, 10]]  # TL, BL, BR, TR: counter-clockwise on screen
    fixed = rrc.clockwise(ccw)
    assert fixed == [[10, 10], [50, 10], [50, 30], [10, 30]]
    assert shoelace_edges([v for p in fixed for v in p]) <= 0
    assert rrc.clockwise([[1.4, 2.6], [9.5, 2.0], [9.0, 8.0], [1.0, 8.0]]) == [[1, 3], [10, 2], [9, 8], [1, 8]]
    assert rrc.box_line([[0, 0], [4, 0], [6, 3], [4, 6], [0, 6]], min_rect=False) is None
    assert SUBMISSION_LINE.match(rrc.box_line([[0, 0], [4, 0], [6, 3], [4, 6], [0, 6]], min_rect=True))
