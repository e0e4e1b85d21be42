"""`export --format openvino`: an IR that describes itself and computes what PyTorch computes, and NNCF int8."""

import json

import numpy as np
import pytest

from openocr_cli.export.int8.nncf_quantize import fake_quantize_count
from openocr_cli.export.openvino_export import read_ir_metadata
from openocr_cli.inference.backends.openvino_backend import OpenVinoBackend
from tests.test_export_int8 import SIZE, constant_ckpt_09, int8_rows, labelled  # noqa: F401 (fixtures)

pytestmark = pytest.mark.openvino  # see pyproject.toml: run in a process of their own

def test_ir_export_is_verified_against_pytorch_and_runs_like_the_onnx_file(cli, tmp_path, random_ckpt):
    xml = tmp_path / "det.xml"
    code, out, err = cli("export", "-w", random_ckpt, "--format", "openvino", "--output", xml, *SIZE)
    assert code == 0, err
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert out[out.index("OpenVINO vs PyTorch"):].count("yes │") == 2  # both static cases within tolerance
    assert "OpenVINO IR" in out
    meta = read_ir_metadata(xml)
    assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406]) and meta["precision"] == "float32"
    assert meta["channel_order"] == "BGR" and json.loads(meta["postprocess"])["box_thresh"] == 0.6

    code, _, err = cli("export", "-w", random_ckpt, "--output", tmp_path / "det.onnx", *SIZE)
    assert code == 0, err
    from openocr_cli.inference.backends.onnx_backend import OnnxBackend

    batch = np.random.default_rng(0).standard_normal((2, 3, 128, 160)).astype(np.float32)
    ir, onnx = OpenVinoBackend.load(xml, "cpu", threads=1), OnnxBackend.load(tmp_path / "det.onnx", "cpu", 1)
    assert ir.info.fixed_hw == (128, 160)
    assert np.abs(ir(batch) - onnx(batch)).max() < 1e-4


def test_ir_export_refuses_an_onnx_output_name(cli, tmp_path, random_ckpt):
    code, _, err = cli("export", "-w", random_ckpt, "--format", "openvino", "--output", tmp_path / "m.onnx")
    assert code == 2 and "name it m.xml" in " ".join(err.split())


def test_nncf_int8_ir_keeps_accuracy_and_describes_itself(cli, tmp_path, labelled, constant_ckpt_09):  # noqa: F811
    xml = tmp_path / "int8.xml"
    code, out, err = cli("export", "-w", constant_ckpt_09, "--format", "openvino", "--int8", "--calib-data",
                         labelled / "label.txt", "--data-dir", labelled, "--output", xml, *SIZE)
    assert code == 0, err
    assert "INFO:nncf" not in out and "No CUDA runtime" not in err  # NNCF's own output is not shown
    rows = int8_rows(out)
    assert rows["int8"][1] == "1.0000" and rows["int8"][6] == "pass"
    assert fake_quantize_count(xml) > 0
    meta = read_ir_metadata(xml)
    calibration = json.loads(meta["calibration"])
    assert meta["precision"] == "int8" and calibration["method"].startswith("NNCF")
    assert calibration["hmean_int8"] == 1.0

    code, _, err = cli("eval", "--backend", "openvino", "--openvino-model", xml, "--label-file",
                       labelled / "label.txt", "--data-dir", labelled, "--json", tmp_path / "m.json", "--device", "cpu")
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["hmean"] == 1.0
