import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from openocr_cli.checkpoint import load_weights
from openocr_cli.config import load_config
from openocr_cli.errors import UserError
from openocr_cli.export.onnx_export import ExportOptions, export_onnx
from openocr_cli.inference.backends import onnx_backend
from openocr_cli.inference.backends.onnx_backend import OnnxBackend, onnx_providers
from openocr_cli.inference.backends.onnx_metadata import write_metadata
from openocr_cli.inference.options import InferenceOptions
from openocr_cli.inference.resolve import resolve_normalizer
from openocr_cli.model import build_detector
from tests.conftest import label_line, write_image
from tests.test_cli_predict import read_results


def export(ckpt, path, **options):
    model = build_detector()
    load_weights(model, ckpt)
    model.eval().fuse()
    export_onnx(model, path, ExportOptions(**options), {"mean": "[0.485, 0.456, 0.406]",
                                                        "std": "[0.229, 0.224, 0.225]", "channel_order": "BGR"})
    return path


@pytest.fixture(scope="module")
def random_onnx(random_ckpt, tmp_path_factory):
    return export(random_ckpt, tmp_path_factory.mktemp("onnx") / "random.onnx")


@pytest.fixture(scope="module")
def constant_static_onnx(constant_ckpt, tmp_path_factory):
    return export(constant_ckpt, tmp_path_factory.mktemp("onnx") / "constant_64x96.onnx", dynamic=False, size=(64, 96))


def tiny_model(path, out_shape=("N", "H", "W"), reduce=True, batch="N", inputs=1):
    """A stand-in 'detector': sigmoid of the channel mean, output (N,H,W) (or anything asked for)."""
    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [batch, 3, "H", "W"]) for i in range(inputs)]
    if reduce:
        nodes = [helper.make_node("ReduceMean", ["x0"], ["m"], axes=[1], keepdims=0),
                 helper.make_node("Sigmoid", ["m"], ["y"])]
    else:
        nodes = [helper.make_node("Sigmoid", ["x0"], ["y"])]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))
    model = helper.make_model(helper.make_graph(nodes, "tiny", ins, [out]), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def assert_same_boxes(a, b):
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, boxes_a), (_, boxes_b) in zip(a, b):
        assert len(boxes_a) == len(boxes_b), path
        for box_a, box_b in zip(boxes_a, boxes_b):
            assert np.abs(np.array(box_a["points"]) - np.array(box_b["points"])).max() <= 1, path


def test_predict_torch_and_onnx_give_the_same_boxes(cli, tmp_path, image_dir, random_ckpt, random_onnx):
    write_image(image_dir / "d.png", 300, 200, 3)
    results = {}
    for name, args in (("torch", ["-w", random_ckpt]), ("onnx", ["--backend", "onnx", "--onnx-model", random_onnx])):
        out = tmp_path / name
        # the random model's map sits around 0.57 with some structure: 0.58 cuts it into many blobs
        code, _, err = cli("predict", image_dir, *args, "--output", out, "--device", "cpu", "--no-vis",
                           "--batch-size", "2", "--thresh", "0.58", "--box-thresh", "0")
        assert code == 0, err
        results[name] = read_results(out / "det_results.txt")
    assert "onnx backend:" in err and "normalisation from the model's metadata" in " ".join(err.split())
    assert sum(len(boxes) for _, boxes in results["torch"]) >= 8
    assert_same_boxes(results["torch"], results["onnx"])


@pytest.mark.slow
def test_eval_torch_and_onnx_give_the_same_scores(cli, tmp_path, random_ckpt, random_onnx):
    data = tmp_path / "data"
    for i, (h, w) in enumerate([(96, 128), (64, 100), (160, 96)]):
        write_image(data / f"{i}.png", h, w, i)
    post = ["--device", "cpu", "--thresh", "0.58", "--box-thresh", "0"]
    code, _, err = cli("predict", data, "-w", random_ckpt, "--output", tmp_path / "pred", "--no-vis", *post)
    assert code == 0, err
    # ground truth = every other torch detection plus one region nobody finds: P, R strictly between 0 and 1
    lines = []
    for path, boxes in read_results(tmp_path / "pred" / "det_results.txt"):
        regions = [{"transcription": "t", "points": b["points"]} for b in boxes[::2]]
        regions.append({"transcription": "t", "points": [[0, 0], [3, 0], [3, 3], [0, 3]]})
        lines.append(label_line(path.rsplit("/", 1)[1], regions))
    (data / "gt.txt").write_text("".join(lines))
    scores = {}
    for name, args in (("torch", ["-w", random_ckpt]), ("onnx", ["--onnx-model", random_onnx, "--threads", "1"])):
        code, _, err = cli("eval", *args, "--data-dir", data, "--label-file", data / "gt.txt",
                           "--json", tmp_path / f"{name}.json", *post)
        assert code == 0, err
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())
    for key in ("precision", "recall", "hmean", "images"):
        assert scores["torch"][key] == scores["onnx"][key], key
    assert scores["torch"]["images"] == 3
    assert 0 < scores["torch"]["precision"] < 1 and 0 < scores["torch"]["recall"] < 1


def test_static_model_gets_images_resized_to_its_size(cli, tmp_path, image_dir, constant_static_onnx):
    out = tmp_path / "out"
    code, _, err = cli("predict", image_dir, "--onnx-model", constant_static_onnx, "--output", out, "--no-vis",
                       "--device", "cpu", "--batch-size", "3")
    assert code == 0, err
    assert "fixed 64x96 input" in " ".join(err.split())
    sizes = {"a.png": (96, 128), "b.jpg": (64, 100), "c.png": (96, 128)}
    for path, boxes in read_results(out / "det_results.txt"):
        h, w = sizes[path.rsplit("/", 1)[1]]
        assert [b["points"] for b in boxes] == [[[0, 0], [w, 0], [w, h], [0, h]]]


def test_model_with_n_h_w_output_and_fixed_batch_runs(tmp_path):
    backend = OnnxBackend.load(tiny_model(tmp_path / "nhw.onnx", batch=1), device="cpu", threads=1)
    assert backend.info.fixed_batch == 1 and backend.info.input_name == "x0" and backend.info.output_name == "y"
    assert backend.session.get_session_options().intra_op_num_threads == 1
    batch = np.random.default_rng(0).normal(size=(3, 3, 32, 64)).astype(np.float32)
    maps = backend(batch)
    assert maps.shape == (3, 1, 32, 64) and maps.dtype == np.float32
    np.testing.assert_allclose(maps[:, 0], 1 / (1 + np.exp(-batch.mean(axis=1))), rtol=1e-5)


@pytest.mark.parametrize("case, message", [
    ("garbage", "not a readable ONNX model"),
    ("pth", "run it with --weights"),
    ("three_channel_output", "not a DB text detector"),
    ("two_inputs", "it takes 2 inputs"),
])
def test_bad_onnx_models_give_a_clear_error(cli, tmp_path, image_dir, random_ckpt, case, message):
    if case == "garbage":
        model = tmp_path / "model.onnx"
        model.write_bytes(b"\x08\x07this is not protobuf" * 10)
    elif case == "pth":
        model = random_ckpt
    elif case == "three_channel_output":
        model = tiny_model(tmp_path / "m.onnx", out_shape=("N", 3, "H", "W"), reduce=False)
    else:
        model = tiny_model(tmp_path / "m.onnx", inputs=2)
    code, out, err = cli("predict", image_dir, "--backend", "onnx", "--onnx-model", model, "--output", tmp_path / "o",
                         "--device", "cpu")
    assert code == 1
    assert message in " ".join(err.split()) and "Traceback" not in err + out


def test_flag_conflicts_and_bad_values_are_usage_errors(cli, image_dir, random_onnx):
    for args in (["--backend", "torch", "--onnx-model", random_onnx], ["--onnx-model", random_onnx, "--device", "tpu"],
                 ["--onnx-model", random_onnx, "--mean", "1,2"], ["--onnx-model", random_onnx, "--threads", "0"],
                 ["--backend", "tflite"], ["--backend", "torch", "-w", random_onnx]):
        code, out, err = cli("predict", image_dir, *args)
        assert code == 2, (args, err)
        assert "Traceback" not in err + out


def test_providers_follow_the_device(monkeypatch):
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnx_backend.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_providers(None) == ["CPUExecutionProvider"]
    with pytest.raises(UserError, match="no CUDA provider"):
        onnx_providers("cuda")
    monkeypatch.setattr(onnx_backend.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_providers("gpu:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert onnx_providers(None)[0] == ("CUDAExecutionProvider", {"device_id": 0})


def test_normalisation_from_metadata_flags_and_defaults(tmp_path, random_onnx):
    # the resolver replaced cli.options.InferenceSettings: same precedence, now with sources
    settings = InferenceOptions(device="cpu", backend="onnx", onnx_model=str(random_onnx))
    cfg = load_config()
    assert resolve_normalizer(settings, cfg, {})[0].mean.tolist() == pytest.approx([0.485, 0.456, 0.406])
    copy = tmp_path / "half.onnx"
    copy.write_bytes(random_onnx.read_bytes())
    write_metadata(copy, {"mean": "[0.5, 0.5, 0.5]", "std": "[0.25, 0.25, 0.25]", "channel_order": "RGB"})
    meta = OnnxBackend.load(copy, "cpu").info.metadata
    normalizer, sources = resolve_normalizer(settings, cfg, meta)
    assert sources["mean"].source == "the ONNX model's metadata" and sources["channel_order"].value == "RGB"
    assert normalizer.mean.tolist() == [0.5] * 3 and normalizer.std.tolist() == [0.25] * 3
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR: an RGB model must see it in its last channel
    assert normalizer(image)[2].min() == pytest.approx(2.0) and normalizer(image)[0].max() == pytest.approx(-2.0)
    settings = settings.replace(mean=(0.1, 0.2, 0.3))
    assert resolve_normalizer(settings, cfg, meta)[0].mean.tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert resolve_normalizer(settings, cfg, {"mean": "not json", "std": "[0, 1, 1]"})[0].std.tolist() == \
        pytest.approx([0.229, 0.224, 0.225])


def test_registry_model_without_metadata_is_normalised_by_its_registry_entry(cli, tmp_path, image_dir, monkeypatch):
    """OpenOCR's released ONNX file states no normalisation: the registry entry's preprocessing is used."""
    from openocr_cli.hub import get_entry

    cache = tmp_path / "cache"
    cache.mkdir()
    tiny_model(cache / get_entry("repvit-onnx").filename)
    monkeypatch.setenv("OPENOCR_DET_HOME", str(cache))
    code, _, err = cli("predict", image_dir, "--backend", "onnx", "--output", tmp_path / "out", "--device", "cpu",
                       "--no-vis")
    assert code == 0, err
    assert "normalisation from the model registry (repvit-onnx)" in " ".join(err.split())
    code, _, err = cli("predict", image_dir, "--backend", "onnx", "--onnx-model", cache / "openocr_det_model.onnx",
                       "--output", tmp_path / "out2", "--device", "cpu", "--no-vis")
    assert code == 0, err
    assert "normalisation from the config (ImageNet)" in " ".join(err.split())
    assert (tmp_path / "out" / "det_results.txt").read_text() == (tmp_path / "out2" / "det_results.txt").read_text()


def test_a_model_that_states_nothing_gets_a_note_naming_the_values_used(cli, tmp_path, image_dir, random_onnx):
    """Another tool's export (PaddleOCR's det.onnx) has no metadata: the note names what it runs with."""
    foreign = tiny_model(tmp_path / "det.onnx")
    code, _, err = cli("predict", image_dir, "--onnx-model", foreign, "--output", tmp_path / "a", "--device", "cpu",
                       "--no-vis", "--limit-type", "min", "--limit-side-len", "736", "--unclip-ratio", "1.5")
    flat = " ".join(err.split())
    assert code == 0, err
    assert "det.onnx states no pre- or post-processing" in flat
    assert ("limit_side_len 736, limit_type min, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225], "
            "channel_order BGR, thresh 0.3, box_thresh 0.6, unclip_ratio 1.5") in flat
    code, _, err = cli("predict", image_dir, "--onnx-model", random_onnx, "--output", tmp_path / "b", "--device",
                       "cpu", "--no-vis")
    assert code == 0 and "states no pre- or post-processing" not in err  # our exports say what they need


def test_weights_flag_takes_an_onnx_file_like_onnx_model(cli, tmp_path, image_dir, random_onnx):
    """`-w model.onnx` works wherever --onnx-model does (predict, eval, benchmark), as Detector("model.onnx")."""
    code, _, err = cli("predict", image_dir, "-w", random_onnx, "--output", tmp_path / "w", "--device", "cpu",
                       "--no-vis")
    assert code == 0, err
    code, _, err = cli("predict", image_dir, "--onnx-model", random_onnx, "--output", tmp_path / "o", "--device",
                       "cpu", "--no-vis")
    assert code == 0, err
    assert (tmp_path / "w" / "det_results.txt").read_text() == (tmp_path / "o" / "det_results.txt").read_text()
    out_json = tmp_path / "bench.json"
    code, _, err = cli("benchmark", "-w", random_onnx, "--images", image_dir, "--sizes", "64", "--runs", "1",
                       "--json", out_json)
    assert code == 0, err
    rows = json.loads(out_json.read_text())["rows"]
    assert [(r["backend"], r["model"]) for r in rows] == [("onnx", str(random_onnx))]
    code, _, err = cli("predict", image_dir, "--backend", "torch", "-w", random_onnx, "--output", tmp_path / "t")
    assert code == 2 and "--onnx-model" in err


def test_preset_runs_a_paddleocr_model_with_paddleocrs_settings(cli, tmp_path, image_dir):
    """--preset ppocr-v5 is PaddleOCR's pipeline settings (shorter side >= 736, score_mode fast): the same boxes
    as those flags given one by one, no "states nothing" note, and a flag still outranks the preset."""
    foreign = tiny_model(tmp_path / "det.onnx")
    common = ["--onnx-model", foreign, "--device", "cpu", "--no-vis", "--box-thresh", "0"]
    code, _, err = cli("predict", image_dir, *common, "--preset", "ppocr-v5", "--output", tmp_path / "preset")
    assert code == 0, err
    assert "states no pre- or post-processing" not in err
    code, _, err = cli("predict", image_dir, *common, "--limit-type", "min", "--limit-side-len", "736", "--score-mode",
                       "fast", "--output", tmp_path / "flags")
    assert code == 0, err
    preset = (tmp_path / "preset" / "det_results.txt").read_text()
    assert preset == (tmp_path / "flags" / "det_results.txt").read_text()
    code, _, err = cli("predict", image_dir, *common, "--output", tmp_path / "plain")
    assert code == 0, err
    assert preset != (tmp_path / "plain" / "det_results.txt").read_text()  # 736 min is not the default resize

    from openocr_cli import Detector

    det = Detector(str(foreign), preset="ppocr-v6", limit_side_len=800, box_thresh=0)
    settings = det.describe()
    assert settings["limit_type"] == {"value": "min", "source": "preset=ppocr-v6"}
    assert settings["limit_side_len"] == {"value": 800, "source": "argument"}
    assert settings["score_mode"] == {"value": "fast", "source": "preset=ppocr-v6"}
    edited = Detector(str(foreign), preset="ppocr-v5", overrides=[
        "Eval.dataset.transforms.2.DetResizeForTest.limit_side_len=1024", "PostProcess.box_thresh=0.4"]).describe()
    assert edited["limit_side_len"] == {"value": 1024, "source": "-o"}  # -o outranks the preset
    assert edited["box_thresh"] == {"value": 0.4, "source": "-o"}
    assert edited["limit_type"] == {"value": "min", "source": "preset=ppocr-v5"}
    code, _, err = cli("predict", image_dir, *common, "--preset", "ppocr-v9", "--output", tmp_path / "bad")
    assert code == 2 and "ppocr-v5" in err
