"""Settings resolved in one pass: the config file and the post-processing file are read once per resolve, and
every value's source comes from one lookup over the named layers (inference/layers.py)."""

import json

import pytest

from openocr_cli import Detector, Setting
from openocr_cli import config as cfgmod
from openocr_cli.inference import postprocess_sources as ppfile
from openocr_cli.inference.layers import layered
from tests.test_onnx_backend import tiny_model


@pytest.fixture(scope="module")
def bright(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "bright.onnx")


def counting(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def test_the_config_and_the_postprocess_file_are_read_once(bright, tmp_path, monkeypatch):
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"tuned": {"thresh": 0.4, "box_thresh": 0.55, "unclip_ratio": 1.7}}))
    configs = counting(monkeypatch, cfgmod, "load_config")
    files = counting(monkeypatch, ppfile, "read_postprocess_file")
    det = Detector(bright, device="cpu", postprocess=tuned, overrides=["PostProcess.box_thresh=0.5"],
                   unclip_ratio=1.9, limit_side_len=640)
    assert len(configs) == 1 and len(files) == 1
    s = det.settings
    assert s["thresh"] == Setting(0.4, f"postprocess={tuned}") and s["box_thresh"] == Setting(0.5, "-o")
    assert s["unclip_ratio"] == Setting(1.9, "argument") and s["max_candidates"] == Setting(1000, "config")
    assert s["limit_side_len"] == Setting(640, "argument") and s["limit_type"] == Setting("max", "config")
    assert det.describe()["box_thresh"] == {"value": 0.5, "source": "-o"}


def test_eval_reads_the_config_once(cli, bright, tmp_path, monkeypatch):
    import cv2
    import numpy as np

    image = np.zeros((64, 96, 3), np.uint8)
    image[20:40, 10:80] = 255
    cv2.imwrite(str(tmp_path / "a.png"), image)
    (tmp_path / "labels.txt").write_text('a.png\t[{"transcription": "x", "points": [[10, 20], [80, 20], [80, 40], '
                                         '[10, 40]]}]\n')
    configs = counting(monkeypatch, cfgmod, "load_config")
    code, out, _ = cli("eval", "--onnx-model", bright, "--data-dir", tmp_path, "--label-file", tmp_path / "labels.txt",
                       "--device", "cpu", "--sizes", "64,96", "--report", tmp_path / "report")
    assert code == 0 and "hmean" in out and len(configs) == 1
    assert "(config)" in (tmp_path / "report" / "index.html").read_text()  # the report names each value's source


def test_one_lookup_gives_value_and_source():
    chain = layered(("flag", {"box_thresh": 0.7}), ("-o", {"thresh": 0.2}), ("config", {"thresh": 0.3,
                                                                                       "box_thresh": 0.6}))
    assert chain["box_thresh"] == Setting(0.7, "flag") and chain["thresh"] == Setting(0.2, "-o")
