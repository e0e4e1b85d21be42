"""The Python API: Detector results equal the CLI's, for every input kind; errors are public types; crops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from openocr_cli import Detector, ImageReadError, MissingFileError, Result, UserError
from openocr_cli.inference.resolve import Setting
from openocr_cli.postprocess import Detection
from tests.conftest import REPO, label_line
from tests.test_onnx_backend import tiny_model

# Bright "words" on a dark page: the stand-in ONNX model's map is sigmoid(channel mean of the normalised
# input), so bright pixels are text and the boxes follow the drawing.
WORDS = [((40, 30), (70, 18), 0), ((150, 60), (90, 20), 20), ((80, 120), (60, 16), -35), ((200, 130), (40, 14), 70)]


def page(seed: int, h: int = 180, w: int = 260) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
    for (cx, cy), (bw, bh), angle in WORDS:
        quad = cv2.boxPoints(((cx + seed * 3, cy), (bw, bh), angle)).astype(np.int32)
        cv2.fillPoly(image, [quad], (230, 240, 250))
    return image


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pages")
    for i in range(3):
        cv2.imwrite(str(folder / f"p{i}.png"), page(i))
    cv2.imwrite(str(folder / "p3.jpg"), page(3, 150, 300), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


@pytest.fixture(scope="module")
def bright_onnx(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "bright.onnx")


@pytest.fixture(scope="module")
def det(bright_onnx) -> Detector:
    return Detector(bright_onnx, device="cpu")


def cli_lines(cli, out: Path, *args) -> list[str]:
    code, _, err = cli("predict", *args, "--output", out, "--device", "cpu", "--no-vis")
    assert code == 0, err
    return (out / "det_results.txt").read_text().splitlines(keepends=True)


def test_predict_equals_cli_for_files_folders_globs_and_lists(cli, tmp_path, pages, bright_onnx, det):
    lines = cli_lines(cli, tmp_path / "cli", pages, "--onnx-model", bright_onnx)
    assert len(lines) == 4 and all(json.loads(line.split("\t")[1]) for line in lines)  # every page has boxes
    assert [r.to_line() for r in det.predict(str(pages))] == lines
    assert [r.to_line() for r in det.predict(pages)] == lines  # a Path
    assert [r.to_line() for r in det.predict(str(pages / "p*.png"))] == lines[:3]  # a glob
    files = sorted(str(p) for p in pages.iterdir())
    assert [r.to_line() for r in det.predict(files, batch_size=3)] == lines
    assert [r.to_line() for r in det.stream(iter(files))] == lines
    one = det.predict(files[1])
    assert len(one) == 1 and one[0].to_line() == lines[1] and one[0].path == files[1]
    assert [p.tolist() for p in one[0].polygons] == [b["points"] for b in json.loads(lines[1].split("\t")[1])]
    assert one[0].scores == pytest.approx([b["score"] for b in json.loads(lines[1].split("\t")[1])], abs=1e-6)


def test_ndarray_and_pil_inputs_give_the_files_boxes(pages, det):
    files = sorted(str(p) for p in pages.iterdir())
    expected = [r.to_json() for r in det.predict(files)]
    bgr = [cv2.imread(f) for f in files]
    assert [r.to_json() for r in det.predict(bgr)] == expected
    pil = [Image.open(f) for f in files]  # RGB (the JPEG decodes to the same pixels with both libraries)
    assert [r.to_json() for r in det.predict(pil)] == expected
    mixed = det.predict([files[0], bgr[1], pil[2], Path(files[3])], batch_size=4)
    assert [r.to_json() for r in mixed] == expected
    assert mixed[0].path == files[0] and mixed[1].path is None and mixed[1].name == "image1"
    assert mixed[0].name == Path(files[0]).name and mixed[0].source == files[0]  # name: no folders
    assert mixed[1].to_line().startswith("image1\t")
    grey = cv2.cvtColor(bgr[0], cv2.COLOR_BGR2GRAY)
    assert [r.to_json() for r in det.predict(grey)] == [r.to_json() for r in det.predict(cv2.cvtColor(grey, 8))]


def test_torch_detector_equals_cli(cli, tmp_path, pages, random_ckpt):
    args = ["--thresh", "0.58", "--box-thresh", "0"]  # the random model's map cut into blobs
    lines = cli_lines(cli, tmp_path / "cli", pages, "-w", random_ckpt, *args)
    det = Detector(random_ckpt, device="cpu", thresh=0.58, box_thresh=0)
    assert det.backend == "torch"
    assert [r.to_line() for r in det.predict(pages)] == lines
    assert det.settings["thresh"] == Setting(0.58, "argument")
    assert det.settings["unclip_ratio"] == Setting(1.5, "config")


def test_plot_equals_the_cli_vis_image_and_maps(cli, tmp_path, pages, bright_onnx, det):
    code, _, err = cli("predict", pages / "p0.png", "--onnx-model", bright_onnx, "--output", tmp_path / "o",
                       "--device", "cpu")
    assert code == 0, err
    vis = cv2.imread(str(tmp_path / "o" / "vis" / "p0.png"))
    (result,) = det.predict(pages / "p0.png", return_maps=True)
    assert np.array_equal(result.plot(), vis)  # the file is read again: the image was not kept
    assert result.image is None and result.prob_map is not None
    assert result.prob_map.shape == (192, 256) and result.src_hw == (180, 260)  # network input, multiple of 32
    assert det.predict(pages / "p0.png")[0].prob_map is None


def test_evaluate_equals_eval(cli, tmp_path, pages, bright_onnx, det):
    labels = tmp_path / "labels.txt"
    with open(labels, "w") as f:  # the labels: the model's own boxes but the first (a false positive), plus a miss
        for i, result in enumerate(det.predict([pages / f"p{i}.png" for i in range(3)])):
            regions = [{"transcription": "w", "points": p.tolist()} for p in result.polygons[1:]]
            regions.append({"transcription": "w", "points": [[5, 160], [60, 160], [60, 175], [5, 175]]})
            f.write(label_line(f"p{i}.png", regions))
    out = tmp_path / "m.json"
    code, _, err = cli("eval", "--onnx-model", bright_onnx, "--data-dir", pages, "--label-file", labels,
                       "--device", "cpu", "--json", out)
    assert code == 0, err
    expected = json.loads(out.read_text())
    metrics = det.evaluate(labels, data_dir=pages)
    got = json.loads(json.dumps(metrics.as_dict()))
    for key in ("fps",):
        expected.pop(key), got.pop(key)
    assert got == expected
    assert 0 < metrics.precision < 1 and 0 < metrics.recall < 1 and metrics.by_height is not None


def test_onnx_detector_imports_no_torch_and_prints_nothing(tmp_path, pages, bright_onnx):
    script = f"""
import json, sys
from openocr_cli import Detector
det = Detector({str(bright_onnx)!r}, device="cpu", box_thresh=0.5)
results = det.predict({str(pages)!r}, progress=lambda done, total: None)
crops = results[0].crops()
det.predict({str(pages / "p0.png")!r}, on_error="skip")
open({str(tmp_path / "out.json")!r}, "w").write(json.dumps({{
    "torch": "torch" in sys.modules, "rich": "rich" in sys.modules, "typer": "typer" in sys.modules,
    "boxes": [len(r.polygons) for r in results], "crops": len(crops)}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    seen = json.loads((tmp_path / "out.json").read_text())
    assert seen["torch"] is False and seen["rich"] is False and seen["typer"] is False
    assert all(seen["boxes"]) and seen["crops"] == seen["boxes"][0]


def test_errors_are_public_types(cli, tmp_path, pages, bright_onnx, det):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        Detector(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="missing.png"):  # checked before any image is run
        det.predict([pages / "p0.png", tmp_path / "missing.png"])
    assert issubclass(MissingFileError, UserError)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="bad.png") as info:
        det.predict([pages / "p0.png", bad])
    assert isinstance(info.value, ImageReadError)
    skipped = det.predict([pages / "p0.png", bad, pages / "p1.png"], on_error="skip")
    assert [r.error is None for r in skipped] == [True, False, True] and "bad.png" in skipped[1].error
    streamed = list(det.stream([pages / "p0.png", tmp_path / "gone.png"], on_error="skip"))  # deleted mid-run
    assert streamed[0].error is None and "gone.png" in streamed[1].error
    with pytest.raises(FileNotFoundError, match="gone.png"):
        list(det.stream([pages / "p0.png", tmp_path / "gone.png"]))
    with pytest.raises(ImageReadError, match="float64"):
        det.predict(np.zeros((8, 8, 3)))
    with pytest.raises(UserError, match="thresh"):
        Detector(bright_onnx, thresh=2.0)
    with pytest.raises(ValueError, match="on_error"):
        det.predict(pages / "p0.png", on_error="ignore")
    # a wrong checkpoint: the same message the CLI prints
    wrong = tmp_path / "wrong.pth"
    import torch

    torch.save({"state_dict": {"backbone.nothing": torch.zeros(1)}}, wrong)
    with pytest.raises(UserError) as info:
        Detector(wrong, device="cpu")
    code, _, err = cli("predict", pages / "p0.png", "-w", wrong, "--device", "cpu", "--output", tmp_path / "o")
    assert code == 1 and " ".join(str(info.value).split()) in " ".join(err.split())


def test_settings_record_every_value_and_its_source(bright_onnx):
    det = Detector(bright_onnx, device="cpu", box_thresh=0.5, postprocess={"unclip_ratio": 1.8},
                   overrides={"PostProcess.thresh": 0.35}, limit_side_len=640)
    s = det.settings
    assert s["box_thresh"] == Setting(0.5, "argument") and s["unclip_ratio"] == Setting(1.8, "postprocess=")
    assert s["thresh"] == Setting(0.35, "-o") and s["score_mode"].source == "config"
    assert s["limit_side_len"] == Setting(640, "argument") and s["limit_type"] == Setting("max", "config")
    assert s["mean"].source == "config" and s["backend"] == Setting("onnx", "default")
    assert det.describe()["mean"]["value"] == [0.485, 0.456, 0.406]


def test_a_pickled_detector_loads_again_with_the_same_settings(pages, det):
    import pickle

    copy = pickle.loads(pickle.dumps(det))  # what Spark, Ray or multiprocessing do to send it to a worker
    assert copy is not det and copy.settings == det.settings
    assert [r.to_line() for r in copy.predict(pages)] == [r.to_line() for r in det.predict(pages)]


@pytest.mark.openvino
def test_openvino_detectors_from_an_ir_or_an_onnx_file_pickle_as_their_options(tmp_path, pages, bright_onnx, det):
    import pickle

    import openvino as ov

    xml = tmp_path / "bright.xml"
    ov.save_model(ov.convert_model(str(bright_onnx)), str(xml), compress_to_fp16=False)
    for ov_det in (Detector(xml, device="cpu"), Detector(bright_onnx, backend="openvino", device="cpu")):
        assert ov_det.backend == "openvino" and ov_det.settings["backend"].value == "openvino"
        copy = pickle.loads(pickle.dumps(ov_det))
        assert copy.backend == "openvino" and copy.options == ov_det.options
        assert len(copy.predict(pages / "p0.png")[0].detections) == len(det.predict(pages / "p0.png")[0].detections)
    assert Detector(xml, device="cpu").options.openvino_model == str(xml)
    assert repr(Detector(xml, device="cpu")) == f"Detector({str(xml)!r}, backend='openvino')"


def test_stream_reads_lazily_in_input_order(pages, det):
    files = sorted(str(p) for p in pages.iterdir()) * 10
    pulled = []

    def source():
        for f in files:
            pulled.append(f)
            yield f

    stream = det.stream(source())
    first = next(stream)
    assert first.path == files[0] and len(pulled) <= 6  # a few images ahead, never the whole list
    rest = list(stream)
    assert [r.path for r in [first, *rest]] == files


def quad_result(image: np.ndarray, quads: list[np.ndarray]) -> Result:
    return Result(0, None, [Detection(q.astype(np.int32), 1.0) for q in quads], image)


@pytest.mark.parametrize("angle", [0, 15, 40, -30, 75])
def test_crops_rectify_rotated_quads(angle):
    """A patch rotated into a page comes back upright from its quad (TL, TR, BR, BL order)."""
    patch = np.zeros((40, 120, 3), np.uint8)
    patch[:, :60] = (255, 0, 0)  # left half blue, right half red: a flip or a turn would show
    patch[:, 60:] = (0, 0, 255)
    patch[:8] = (0, 255, 0)  # a green top band
    canvas = np.zeros((400, 400, 3), np.uint8)
    centre = np.array([200.0, 200.0])
    matrix = cv2.getRotationMatrix2D((60.0, 20.0), angle, 1.0)
    matrix[:, 2] += centre - (60.0, 20.0)
    cv2.warpAffine(patch, matrix, (400, 400), dst=canvas, flags=cv2.INTER_NEAREST)
    corners = np.array([[0, 0], [120, 0], [120, 40], [0, 40]], np.float64)
    quad = np.rint(corners @ matrix[:, :2].T + matrix[:, 2])
    (crop,) = quad_result(canvas, [quad]).crops()
    assert abs(crop.shape[1] - 120) <= 2 and abs(crop.shape[0] - 40) <= 2
    crop = cv2.resize(crop, (120, 40), interpolation=cv2.INTER_NEAREST)
    inner = (slice(10, 36), slice(4, 116))
    diff = np.abs(crop[inner].astype(int) - patch[inner].astype(int)).mean()
    assert diff < 12, diff
    assert crop[2:6, 10:110, 1].mean() > 200  # the green band is on top


def test_crops_of_vertical_text_and_polygons_run_left_to_right():
    canvas = np.zeros((200, 200, 3), np.uint8)
    canvas[20:180, 90:110] = 255  # a tall, narrow region
    tall = np.array([[90, 20], [110, 20], [110, 180], [90, 180]])
    poly = np.array([[90, 20], [100, 18], [110, 20], [110, 180], [100, 182], [90, 180]])
    crops = quad_result(canvas, [tall, poly]).crops()
    assert crops[0].shape[:2] == (20, 160)  # turned to read horizontally
    assert crops[1].shape[1] > crops[1].shape[0] and crops[1].mean() > 200
