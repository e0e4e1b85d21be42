"""predict --save-format labelme|ppocrlabel|labelstudio|rrc: each file as its tool reads it, and each read back
through `convert` as the very polygons of det_results.txt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import pytest

from openocr_cli.formats.preannotate import Preannotator
from tests.conftest import run_cli
from tests.test_api import page
from tests.test_onnx_backend import tiny_model


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """Four pages predicted once with every save format."""
    root = tmp_path_factory.mktemp("pre")
    images = root / "imgs"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"p{i}.png"), page(i))
    cv2.imwrite(str(images / "p3.jpg"), page(3, 150, 300))
    model = tiny_model(root / "tiny.onnx")
    out = root / "out"
    done = run_cli("predict", str(images), "--onnx-model", str(model), "--device", "cpu", "--no-vis",
                   "--output", str(out), "--save-format", "labelme", "--save-format", "ppocrlabel,labelstudio",
                   "--save-format", "rrc", cwd=root)
    assert done.returncode == 0, done.stderr
    boxes = {}
    for line in (out / "det_results.txt").read_text().splitlines():
        path, found = line.split("\t")
        boxes[Path(path).name] = [box["points"] for box in json.loads(found)]
    assert sum(len(b) for b in boxes.values()) >= 8
    return root, images, model, out, boxes


def read_back(cli, tmp_path: Path, source: Path, fmt: str, *extra: str) -> dict[str, list]:
    target = tmp_path / f"back_{fmt}.txt"
    code, _, err = cli("convert", source, "--from", fmt, "--to", "ppocr", "--output", target, *extra)
    assert code == 0, err
    out = {}
    for line in target.read_text().splitlines():
        path, regions = line.split("\t")
        out[Path(path).name] = [r["points"] for r in json.loads(regions)]
    return out


@pytest.mark.parametrize("fmt, where", [("labelme", "labelme"), ("ppocrlabel", "ppocrlabel/imgs"),
                                         ("labelstudio", "labelstudio.json"), ("rrc", "submit.zip")])
def test_each_save_format_reads_back_as_the_same_polygons(predicted, cli, tmp_path, fmt, where):
    root, images, model, out, boxes = predicted
    extra = ("--images-dir", str(images)) if fmt == "rrc" else ()
    assert read_back(cli, tmp_path, out / where, fmt, *extra) == boxes


def test_labelme_files_open_next_to_the_images(predicted):
    root, images, model, out, boxes = predicted
    data = json.loads((out / "labelme" / "imgs" / "p3.json").read_text())
    assert set(data) == {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"}
    assert data["imageData"] is None and (data["imageHeight"], data["imageWidth"]) == (150, 300)
    assert not os.path.isabs(data["imagePath"])
    assert (out / "labelme" / "imgs" / data["imagePath"]).resolve() == (images / "p3.jpg").resolve()
    for shape in data["shapes"]:
        assert shape["shape_type"] == "polygon" and shape["label"] == "" and shape["group_id"] is None
        assert shape["flags"] == {}
    assert [s["points"] for s in data["shapes"]] == boxes["p3.jpg"]


def test_ppocrlabel_folder_opens_with_every_image_unchecked(predicted):
    root, images, model, out, boxes = predicted
    folder = out / "ppocrlabel" / "imgs"
    assert (folder / "fileState.txt").read_text() == ""  # PPOCRLabel takes any listed image as checked
    assert sorted(p.name for p in folder.glob("p*")) == ["p0.png", "p1.png", "p2.png", "p3.jpg"]
    assert cv2.imread(str(folder / "p0.png")) is not None  # the image is there to open
    for line in (folder / "Label.txt").read_text(encoding="utf-8").splitlines():
        key, label = line.split("\t")  # PPOCRLabel's own parsing: one TAB, folder/file, JSON
        assert key.startswith("imgs/")
        entries = json.loads(label)
        assert all(set(e) == {"transcription", "points", "difficult"} and e["difficult"] is False for e in entries)
        assert [e["points"] for e in entries] == boxes[key.split("/")[1]]


def test_labelstudio_tasks_hold_predictions_in_percent(predicted):
    root, images, model, out, boxes = predicted
    tasks = json.loads((out / "labelstudio.json").read_text())
    assert [Path(t["data"]["image"]).name for t in tasks] == ["p0.png", "p1.png", "p2.png", "p3.jpg"]
    for t in tasks:
        (prediction,) = t["predictions"]
        assert prediction["model_version"].startswith("openocr-det") and 0 < prediction["score"] <= 1
        for result in prediction["result"]:
            assert result["type"] == "polygonlabels" and result["from_name"] == "label"
            assert result["to_name"] == "image" and result["value"]["polygonlabels"] == ["Text"]
            assert 0 < result["score"] <= 1
            assert all(0 <= v <= 100 for p in result["value"]["points"] for v in p)
    p3 = next(t for t in tasks if t["data"]["image"].endswith("p3.jpg"))["predictions"][0]["result"][0]
    assert (p3["original_width"], p3["original_height"]) == (300, 150)


def test_rrc_zip_has_one_file_per_image(predicted):
    root, images, model, out, boxes = predicted
    with zipfile.ZipFile(out / "submit.zip") as archive:
        assert archive.namelist() == ["res_p0.txt", "res_p1.txt", "res_p2.txt", "res_p3.txt"]


def test_reviewed_ppocrlabel_work_is_never_overwritten(predicted, cli, tmp_path):
    root, images, model, out, boxes = predicted
    again = tmp_path / "again"
    args = ("predict", images / "p0.png", "--onnx-model", model, "--device", "cpu", "--no-vis",
            "--output", again, "--save-format", "ppocrlabel")
    assert cli(*args)[0] == 0
    folder = again / "ppocrlabel" / "imgs"
    human = "imgs/p0.png\t[{\"transcription\": \"fixed\", \"points\": [[1, 1], [9, 1], [9, 9], [1, 9]], " \
            "\"difficult\": false}]\n"
    (folder / "Label.txt").write_text(human)
    (folder / "fileState.txt").write_text(f"{folder / 'p0.png'}\t1\n")
    code, outs, err = cli(*args)
    assert code == 0, err
    assert (folder / "Label.txt").read_text() == human
    assert (folder / "Label.predicted.txt").read_text().startswith("imgs/p0.png\t")
    assert "Label.predicted.txt" in " ".join((outs + err).split())


def test_bad_flags_are_usage_errors(predicted, cli, tmp_path):
    root, images, model, out, boxes = predicted
    base = ("predict", images / "p0.png", "--onnx-model", model, "--device", "cpu", "--no-vis", "--output",
            tmp_path / "o")
    code, _, err = cli(*base, "--save-format", "labelmee")
    assert code == 2 and "labelme" in err and "Traceback" not in err
    code, _, err = cli(*base, "--min-rect")
    assert code == 2 and "--save-format rrc" in err


class _Result:
    def __init__(self, name, polygons, hw):
        import numpy as np

        self.path = self.source = name
        self.polygons = [np.array(p, dtype=np.int32) for p in polygons]
        self.scores = [0.9] * len(polygons)
        self.src_hw = hw


def test_an_interrupted_run_leaves_no_half_file(tmp_path):
    image = tmp_path / "imgs" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), page(0))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with Preannotator(out, ["ppocrlabel", "labelstudio", "rrc"]) as writer:
            writer.add(_Result(str(image), [[[1, 1], [20, 1], [20, 9], [1, 9]]], (180, 260)))
            raise KeyboardInterrupt
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert not any(name.endswith((".part", "Label.txt", "submit.zip", "labelstudio.json")) for name in left), left


# ------------------------------------------ the command, interrupted or failing: no .part file stays (issue 30)
def _many_pages(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        cv2.imwrite(str(folder / f"p{i:03d}.png"), page(i % 7))
    return folder


def _save_formats(images: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "openocr_cli", "predict", str(images), "--onnx-model", str(model), "--device",
            "cpu", "--workers", "1", "--output", str(out), "--save-format", "ppocrlabel,labelstudio,rrc"]


def _unfinished(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.part"))


def test_predict_interrupted_by_sigint_leaves_no_part_file(tmp_path):
    """A real Ctrl-C in the middle of the images: the console script ends with os._exit (no atexit), so the
    unfinished Label.txt, labelstudio.json and submit.zip must go while the interrupt unwinds."""
    images = _many_pages(tmp_path / "imgs", 150)
    model = tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "out"
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", OPENOCR_DET_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_save_formats(images, model, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    results = out / "det_results.txt"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:  # a few images written, Label.txt.part open
        if results.exists() and results.stat().st_size > 2000 and _unfinished(out):
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert _unfinished(out) == []
    assert not any((out / name).exists() for name in ("labelstudio.json", "submit.zip", "ppocrlabel/imgs/Label.txt"))


def test_predict_failing_mid_run_leaves_no_part_file(tmp_path):
    """A file that cannot be written half way (a folder sits where an image's labelme JSON goes): a clear error
    naming it, and the other formats' unfinished files removed."""
    images = _many_pages(tmp_path / "imgs", 6)
    model = tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "out"
    (out / "labelme" / "imgs" / "p003.json").mkdir(parents=True)
    done = subprocess.run([*_save_formats(images, model, out), "--save-format", "labelme"], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OPENOCR_DET_OFFLINE="1"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "p003.json" in " ".join(done.stderr.split())
    assert _unfinished(out) == []
    assert not any((out / name).exists() for name in ("labelstudio.json", "submit.zip", "ppocrlabel/imgs/Label.txt"))
