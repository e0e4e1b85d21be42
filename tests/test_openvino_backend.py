"""The openvino backend: the same boxes as onnxruntime from an IR or an ONNX file, fp32 that is fp32, int8
detection, and clear errors for bad files, flags and devices."""

from __future__ import annotations

import shutil
import subprocess
import sys

import cv2
import numpy as np
import onnx
import openvino as ov
import pytest
from onnx import TensorProto, helper
from shapely.geometry import Polygon

from openocr_cli import Detector, MissingFileError, UserError
from openocr_cli.inference.backends.onnx_backend import OnnxBackend
from openocr_cli.inference.backends.onnx_metadata import write_metadata
from openocr_cli.inference.backends.openvino_backend import OpenVinoBackend
from openocr_cli.inference.options import InferenceOptions
from openocr_cli.inference.resolve import IR_METADATA_SOURCE, Setting, resolve
from tests.test_api import page
from tests.test_onnx_backend import tiny_model

pytestmark = pytest.mark.openvino  # see pyproject.toml: run in a process of their own

def to_ir(onnx_path, xml_path=None):
    """The ONNX file converted to an OpenVINO IR pair (.xml + .bin), weights kept in float32."""
    xml_path = xml_path or onnx_path.with_suffix(".xml")
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def quantised_tiny_model(path):
    """tiny_model behind a QuantizeLinear / DequantizeLinear pair: what OpenVINO reads as a FakeQuantize."""
    nodes = [helper.make_node("QuantizeLinear", ["x0", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("ReduceMean", ["d"], ["m"], axes=[1], keepdims=0),
             helper.make_node("Sigmoid", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "H", "W"])],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [0.02]),
                               helper.make_tensor("z", TensorProto.INT8, [], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ov")
    onnx_path = tiny_model(folder / "bright.onnx")
    return onnx_path, to_ir(onnx_path)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ov_pages")
    for i in range(3):
        cv2.imwrite(str(folder / f"p{i}.png"), page(i, 120 + 20 * i, 260))
    return folder


def iou(a, b) -> float:
    pa, pb = Polygon(a), Polygon(b)
    return pa.intersection(pb).area / pa.union(pb).area


def test_ir_and_onnx_files_give_onnxruntimes_boxes(models, pages):
    onnx_path, xml_path = models
    reference = Detector(onnx_path, device="cpu").predict(pages)
    assert sum(len(r.detections) for r in reference) >= 9  # the pages' words are found
    for det in (Detector(xml_path, device="cpu"), Detector(onnx_path, backend="openvino", device="cpu")):
        assert det.backend == "openvino" and det.settings["device"] == Setting("OpenVINO CPU", "argument")
        for got, want in zip(det.predict(pages), reference):
            assert len(got.polygons) == len(want.polygons), got.path
            for a, b in zip(got.polygons, want.polygons):
                assert iou(a, b) >= 0.95, got.path


def test_fp32_hint_gives_fp32_maps_and_threads_are_set(models):
    onnx_path, xml_path = models
    batch = np.random.default_rng(0).normal(size=(2, 3, 32, 48)).astype(np.float32)
    want = OnnxBackend.load(onnx_path, "cpu", threads=1)(batch)
    for path in models:
        backend = OpenVinoBackend.load(path, "cpu", threads=1, precision="fp32")
        got = backend(batch)
        (compiled,) = backend.variants.values()
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
        assert got.shape == want.shape == (2, 1, 32, 48) and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-4, path
    assert backend.with_precision("fp32") is backend


def test_int8_from_metadata_or_fake_quantize_ops(tmp_path, models):
    onnx_path, xml_path = models
    assert not OpenVinoBackend.load(xml_path, "cpu").is_int8()
    quantised = quantised_tiny_model(tmp_path / "q.onnx")
    assert OpenVinoBackend.load(to_ir(quantised), "cpu").is_int8()
    assert OpenVinoBackend.load(quantised, "cpu").is_int8()  # a QDQ .onnx read by OpenVINO
    stated = tmp_path / "stated.onnx"
    shutil.copy(onnx_path, stated)
    write_metadata(stated, {"precision": "int8"})
    assert OpenVinoBackend.load(stated, "cpu").is_int8()  # the metadata is believed first
    write_metadata(quantised, {"precision": "float32"})
    assert not OpenVinoBackend.load(quantised, "cpu").is_int8()


def test_missing_bin_and_unreadable_files_are_clear_errors(cli, tmp_path, models, pages):
    _, xml_path = models
    alone = tmp_path / "alone.xml"
    shutil.copy(xml_path, alone)
    with pytest.raises(MissingFileError, match="alone.bin"):
        Detector(alone, device="cpu")
    garbage = tmp_path / "garbage.xml"
    garbage.write_text("<net>not really</net>")
    garbage.with_suffix(".bin").write_bytes(b"\0" * 16)
    with pytest.raises(UserError, match="is not a model OpenVINO"):
        Detector(garbage, device="cpu")
    for model, message in ((alone, "alone.bin beside it"), (garbage, "is not a model OpenVINO"),
                           (tmp_path / "none.xml", "does not exist")):
        code, out, err = cli("predict", pages, "--openvino-model", model, "--output", tmp_path / "o")
        assert code == 1 and message in " ".join(err.split()) and "Traceback" not in out + err


def test_cuda_and_flag_conflicts_are_usage_errors(cli, tmp_path, models, pages):
    onnx_path, xml_path = models
    code, out, err = cli("predict", pages, "--openvino-model", xml_path, "--device", "cuda", "--output", tmp_path)
    message = " ".join(err.split())
    assert code == 2 and "not an OpenVINO device" in message and "not CUDA" in message
    for args, message in ((["--backend", "torch", "--openvino-model", xml_path], "--backend openvino"),
                          (["--backend", "onnx", "--openvino-model", xml_path], "--backend openvino"),
                          (["--backend", "openvino", "--onnx-model", onnx_path], "as --openvino-model"),
                          (["--onnx-model", onnx_path, "--openvino-model", xml_path], "pass one"),
                          (["--backend", "torch", "-w", xml_path], "--openvino-model"),
                          (["--openvino-model", xml_path, "--threads", "0"], "--threads")):
        code, out, err = cli("predict", pages, *args, "--output", tmp_path / "o")
        assert code == 2 and message in " ".join(err.split()), (args, err)
        assert "Traceback" not in out + err


def test_cli_predict_runs_an_onnx_file_on_openvino(cli, tmp_path, models, pages):
    onnx_path, xml_path = models
    lines = {}
    for name, args in (("onnx", ["--onnx-model", onnx_path]),
                       ("openvino", ["--backend", "openvino", "--openvino-model", onnx_path])):
        code, _, err = cli("predict", pages, *args, "--output", tmp_path / name, "--no-vis", "--threads", "1")
        assert code == 0, err
        lines[name] = (tmp_path / name / "det_results.txt").read_text()
    assert "openvino backend:" in err and "OpenVINO CPU" in err
    assert lines["openvino"].count("points") == lines["onnx"].count("points") > 0


def test_resolver_picks_openvino_and_reads_the_irs_metadata(tmp_path, models):
    onnx_path, _ = models
    options = InferenceOptions(openvino_model="m.xml")
    assert options.backend_name() == "openvino" and options.model_name() == "m.xml"
    assert InferenceOptions(backend="openvino").model_name() == "repvit-onnx"  # the released ONNX file
    model = ov.convert_model(str(onnx_path))
    for key, value in (("mean", "[0.5, 0.5, 0.5]"), ("std", "[0.25, 0.25, 0.25]"),
                       ("postprocess", '{"box_thresh": 0.55}')):
        model.set_rt_info(value, ["openocr_det", key])
    xml = tmp_path / "meta.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    s = resolve(InferenceOptions(openvino_model=str(xml), device="cpu", threads=1)).settings
    assert s["mean"] == Setting((0.5, 0.5, 0.5), IR_METADATA_SOURCE) and s["backend"] == Setting("openvino", "default")
    assert s["box_thresh"] == Setting(0.55, IR_METADATA_SOURCE)
    assert s["model"] == Setting(str(xml), "flag") and s["device"] == Setting("OpenVINO CPU", "flag")


def test_the_first_shape_is_compiled_static_others_dynamic_until_they_recur(models, monkeypatch):
    import openocr_cli.inference.backends.openvino_backend as ovb

    monkeypatch.setattr(ovb, "SPECIALIZE_AFTER", 3)
    onnx_path, xml_path = models
    backend = OpenVinoBackend.load(xml_path, "cpu", threads=1)
    assert backend.variants == {}  # nothing compiled before the first batch
    rng = np.random.default_rng(0)
    first, second = (rng.normal(size=(1, 3, 32, 48)).astype(np.float32),
                     rng.normal(size=(1, 3, 64, 32)).astype(np.float32))
    want = OnnxBackend.load(onnx_path, "cpu", threads=1)
    assert np.abs(backend(first) - want(first)).max() < 1e-4
    assert set(backend.variants) == {(1, 3, 32, 48)}
    for _ in range(2):
        assert np.abs(backend(second) - want(second)).max() < 1e-4
    assert set(backend.variants) == {(1, 3, 32, 48), None}  # the second shape runs on the dynamic compile
    backend(second)  # its third batch: compiled for its own shape
    assert set(backend.variants) == {(1, 3, 32, 48), (1, 3, 64, 32), None}
    assert np.abs(backend(second) - want(second)).max() < 1e-4


def test_a_prestart_hands_over_the_read_file_with_its_last_first_shape_compiled(models, tmp_path, monkeypatch):
    import openocr_cli.inference.backends.openvino_backend as ovb
    from openocr_cli.inference import prestart

    monkeypatch.setenv("OPENOCR_DET_HOME", str(tmp_path / "home"))  # the kernel cache remembers the first shape
    onnx_path, xml_path = models
    want = OnnxBackend.load(onnx_path, "cpu", threads=1)
    rng = np.random.default_rng(1)
    first, other = (rng.normal(size=(1, 3, 32, 48)).astype(np.float32),
                    rng.normal(size=(1, 3, 64, 32)).astype(np.float32))
    shapes_file, key = tmp_path / "home" / "openvino" / ovb.WARM_SHAPES, ovb.prestart_key(xml_path, "cpu", 1, "fp32")

    def remembered():
        return ovb.remembered_shape(shapes_file, key)

    OpenVinoBackend.load(xml_path, "cpu", threads=1)(first)
    assert remembered() == (1, 3, 32, 48)

    ovb.begin_prestart(xml_path, "cpu", 1, "fp32")
    ready = OpenVinoBackend.load(xml_path, "cpu", threads=1)
    assert prestart.pending() == [] and set(ready._warmed) == {(1, 3, 32, 48)} and ready.variants == {}
    assert np.abs(ready(first) - want(first)).max() < 1e-4
    assert set(ready.variants) == {(1, 3, 32, 48)} and ready._warmed == {}

    # a run that begins with another size compiles that size static, as without a prestart, and drops the warm-up
    ovb.begin_prestart(xml_path, "cpu", 1, "fp32")
    ready = OpenVinoBackend.load(xml_path, "cpu", threads=1)
    assert np.abs(ready(other) - want(other)).max() < 1e-4
    assert set(ready.variants) == {(1, 3, 64, 32)} and ready._warmed == {}
    assert remembered() == (1, 3, 64, 32)

    # other settings than the prestart's: loaded afresh, the prestart is left alone
    ovb.begin_prestart(xml_path, "cpu", 1, "fp32")
    fresh = OpenVinoBackend.load(xml_path, "cpu", threads=2)
    assert fresh._warmed == {} and len(prestart.pending()) == 1
    assert prestart.take(prestart.pending()[0]) is not None

    # a file the prestart cannot read is not read again: the command's load raises the prestart's error
    lone = tmp_path / "lone.xml"
    shutil.copy(xml_path, lone)  # without its .bin
    ovb.begin_prestart(lone, "cpu", 1, "fp32")
    with pytest.raises(MissingFileError, match="needs its weights file"):
        OpenVinoBackend.load(lone, "cpu", threads=1)
    assert prestart.pending() == []


def test_the_cli_gives_the_same_boxes_with_and_without_its_prestart(tmp_path, models, pages):
    from tests.conftest import run_cli

    _, xml_path = models
    env = {"OPENOCR_DET_HOME": str(tmp_path / "home")}
    outputs = []
    for run, extra in enumerate(({}, {}, {"OPENOCR_DET_NO_PRESTART": "1"})):  # the second run has a warm shape
        out = tmp_path / f"out{run}"
        proc = run_cli("predict", str(pages), "--openvino-model", str(xml_path), "--device", "cpu", "--threads", "1",
                       "--output", str(out), "--no-vis", env={**env, **extra})
        assert proc.returncode == 0, proc.stderr
        outputs.append((out / "det_results.txt").read_text())
    assert outputs[0] == outputs[1] == outputs[2] and outputs[0].count("\n") == 3


def test_openvino_is_imported_without_its_model_converter_until_convert_model_is_called(tmp_path):
    """The converter is half of `import openvino` on every predict's start-up path; export still converts."""
    onnx_path = tiny_model(tmp_path / "m.onnx")
    script = f"""
import sys
from openocr_cli.inference.backends.openvino_backend import OpenVinoBackend, import_openvino
ov = import_openvino()
assert "openvino.tools.ovc" not in sys.modules and "openvino_telemetry" not in sys.modules
backend = OpenVinoBackend.load({str(onnx_path)!r}, "cpu")
import numpy as np
assert backend(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 1, 32, 32)
assert "openvino.tools.ovc" not in sys.modules
model = ov.convert_model({str(onnx_path)!r})
assert "openvino.tools.ovc" in sys.modules and len(model.inputs) == 1 and import_openvino() is ov
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
