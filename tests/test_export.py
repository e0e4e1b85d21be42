import dataclasses
import json
from pathlib import Path

import onnx
import pytest
import torch

from openocr_cli._version import __version__
from openocr_cli.checkpoint import load_weights
from openocr_cli.data.resize import IMAGENET_MEAN, IMAGENET_STD, Normalizer
from openocr_cli.export.onnx_export import DYNAMIC_CASES, ExportOptions, export_and_verify
from openocr_cli.export.run import default_output
from openocr_cli.hub import sha256_file
from openocr_cli.inference.backends.onnx_metadata import build_metadata, normalization, read_metadata
from openocr_cli.model import build_detector
from openocr_cli.postprocess import DBPostProcess


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def dynamic_export(random_ckpt, tmp_path_factory):
    """The random checkpoint exported (fused, dynamic, opset 17) and verified at every default size."""
    model = build_detector()
    load_weights(model, random_ckpt)
    model.eval().fuse()
    metadata = build_metadata(mean=IMAGENET_MEAN, std=IMAGENET_STD, postprocess=dataclasses.asdict(DBPostProcess()),
                              resize={"limit_side_len": 960, "limit_type": "max"}, source_name=random_ckpt.name,
                              source_sha256=sha256_file(random_ckpt), version=__version__, fused=True, fp16=False)
    path = tmp_path_factory.mktemp("export") / "det_model.onnx"
    report = export_and_verify(model, path, ExportOptions(), metadata, Normalizer())
    return report


def test_dynamic_export_passes_verification_at_all_sizes(dynamic_export):
    report = dynamic_export
    assert report.ok and report.exporter == "torchscript" and report.opset == 17
    assert [(r.batch, r.height, r.width) for r in report.rows] == list(DYNAMIC_CASES)
    assert report.max_abs <= 1e-4
    model = onnx.load(str(report.path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    [inp], [out] = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "output")
    assert dims(inp) == ["batch", 3, "height", "width"]
    assert dims(out) == ["batch", 1, "height", "width"]


def test_metadata_round_trips(dynamic_export, random_ckpt):
    meta = read_metadata(dynamic_export.path)
    assert meta["channel_order"] == "BGR" and meta["stride"] == "32" and meta["input_layout"] == "NCHW"
    assert json.loads(meta["mean"]) == list(IMAGENET_MEAN) and json.loads(meta["std"]) == list(IMAGENET_STD)
    assert json.loads(meta["postprocess"]) == dataclasses.asdict(DBPostProcess())
    assert json.loads(meta["resize"]) == {"limit_side_len": 960, "limit_type": "max"}
    assert meta["source_sha256"] == sha256_file(random_ckpt)
    assert meta["openocr_det_version"] == __version__
    assert (meta["opset"], meta["exporter"], meta["fused"]) == ("17", "torchscript", "true")
    assert "RepViT-DB" in meta["model_name"]
    assert normalization(meta) == (IMAGENET_MEAN, IMAGENET_STD, "BGR")


def test_cli_static_export_defaults_next_to_the_run(cli, tmp_path, random_ckpt):
    run = tmp_path / "run"
    run.mkdir()
    weights = run / "best.pth"
    weights.write_bytes(random_ckpt.read_bytes())
    code, out, err = cli("export", "-w", weights, "--static", "--size", "64x96", "--no-fuse")
    assert code == 0, err
    path = run / "export_det" / "det_model.onnx"
    assert path.is_file() and f"Exported and verified: {path}" in " ".join(out.split())
    assert "1x3x64x96" in out and "2x3x64x96" in out
    model = onnx.load(str(path))
    assert dims(model.graph.input[0]) == ["batch", 3, 64, 96]
    assert read_metadata(path)["fused"] == "false"


def test_default_output_for_a_model_name():
    assert default_output("repvit") == Path("output/export_det/det_model.onnx")


def test_verification_failure_exits_1_and_keeps_the_file(cli, tmp_path, random_ckpt):
    path = tmp_path / "half.onnx"
    code, out, err = cli("export", "-w", random_ckpt, "--output", path, "--static", "--size", "64x64", "--fp16",
                         "--tolerance", "1e-9")
    assert code == 1
    message = " ".join(err.split())
    assert "verification failed" in message and str(path) in message and "Traceback" not in err
    assert path.is_file() and "NO" in out
    assert read_metadata(path)["precision"].startswith("float16")


@pytest.mark.parametrize("args, message", [
    (["--size", "100x100"], "multiples of 32"),
    (["--size", "big"], "HEIGHTxWIDTH"),
    (["--exporter", "dynamo", "--opset", "17"], "opset 18 or newer"),
    (["--exporter", "torchscript", "--opset", "21"], "opset 20 at most"),
])
def test_bad_export_options_are_usage_errors(cli, tmp_path, random_ckpt, args, message):
    code, out, err = cli("export", "-w", random_ckpt, "--output", tmp_path / "m.onnx", *args)
    assert code == 2, err
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_onnx_and_bad_weights(cli, tmp_path, random_ckpt):
    code, _, err = cli("export", "-w", "repvit-onnx", "--output", tmp_path / "m.onnx")
    assert code == 1 and "already an ONNX model" in " ".join(err.split())
    bad = tmp_path / "partial.pth"
    sd = torch.load(random_ckpt, weights_only=True)
    sd.pop("head.thresh.conv3.bias")
    torch.save(sd, bad)
    code, _, err = cli("export", "-w", bad, "--output", tmp_path / "m.onnx")
    assert code == 1 and "--non-strict" in " ".join(err.split()) and not (tmp_path / "m.onnx").exists()
