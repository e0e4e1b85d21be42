"""openocr-det benchmark: rows, JSON schema, fastest-first table, eval's hmean, bf16, precision mapping, errors,
openvino rows and the recommendation."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from openocr_cli.data.resize import Normalizer, ResizeSpec
from openocr_cli.errors import UserError
from openocr_cli.evaluation import speed_rows as bench
from openocr_cli.inference.backends.onnx_metadata import write_metadata
from openocr_cli.inference.backends.torch_backend import TorchBackend, precision_problem
from openocr_cli.inference.predictor import Predictor
from openocr_cli.model import build_detector
from openocr_cli.postprocess import make_postprocess
from tests.conftest import write_image
from tests.test_eval_tune import bar_set  # noqa: F401  (fixture)
from tests.test_imports import heavy_modules_after
from tests.test_onnx_backend import tiny_model

BF16 = precision_problem("bf16", torch.device("cpu")) is None
STAGE_KEYS = {"preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"}
ROW_KEYS = {"backend", "model", "precision", "limit_side_len", "images", "images_per_s", "hmean"} | STAGE_KEYS


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    for i, (h, w) in enumerate([(96, 128), (64, 100), (80, 80)]):
        write_image(folder / f"{i}.png", h, w, i)
    return folder


def table_rows(out: str) -> list[tuple[str, str, str, int]]:
    """(backend, model, precision, limit_side_len) of each row of the printed table, top to bottom."""
    found = re.findall(r"│ (torch|onnx|openvino)\s+│\s+(\S+) │\s+(\w+) │\s+(\d+) │", out)
    return [(b, m, p, int(s)) for b, m, p, s in found]


def test_json_schema_rows_per_backend_precision_size_and_fastest_first(cli, tmp_path, images, random_ckpt):
    model = tiny_model(tmp_path / "tiny.onnx")
    out_json = tmp_path / "bench.json"
    code, out, err = cli("benchmark", "-w", random_ckpt, "--onnx-model", model, "--images", images,
                         "--precisions", "fp32,bf16", "--sizes", "64,96", "--runs", "2", "--device", "cpu",
                         "--json", out_json)
    assert code == 0, err
    got = json.loads(out_json.read_text())
    assert set(got) == {"rows", "machine", "recommended"}
    assert set(got["machine"]) == {"cpu", "threads", "torch", "onnxruntime", "openvino"}
    machine = got["machine"]
    assert isinstance(machine["cpu"], str) and machine["cpu"] and isinstance(machine["threads"], int)
    assert machine["torch"] == torch.__version__.split("+")[0] or torch.__version__.startswith(machine["torch"])
    assert isinstance(machine["onnxruntime"], str)

    precisions = ["fp32", "bf16"] if BF16 else ["fp32"]
    expected = {("torch", str(random_ckpt), p, s) for p in precisions for s in (64, 96)}
    expected |= {("onnx", str(model), "fp32", s) for s in (64, 96)}
    rows = got["rows"]
    assert {(r["backend"], r["model"], r["precision"], r["limit_side_len"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["images"] == 3 and row["hmean"] is None
        assert isinstance(row["images_per_s"], float) and row["images_per_s"] > 0
        for key in STAGE_KEYS:
            assert set(row[key]) == {"p50", "p95"} and all(isinstance(v, float) for v in row[key].values())
            assert 0 <= row[key]["p50"] <= row[key]["p95"]
        assert row["total_ms"]["p50"] >= row["inference_ms"]["p50"]

    shown = table_rows(out)
    by_speed = sorted(rows, key=lambda r: (-r["images_per_s"], r["total_ms"]["p50"]))
    assert shown == [(r["backend"], r["model"].rsplit("/", 1)[-1], r["precision"], r["limit_side_len"])
                     for r in by_speed]
    assert "fastest first" in out
    # no labels: the fastest row, and the line says accuracy was not measured
    assert got["recommended"] == by_speed[0]
    assert "accuracy not measured: pass --label-file" in " ".join(out.split())


def test_hmean_equals_eval_for_each_backend_and_size(cli, tmp_path, bar_set, constant_ckpt):  # noqa: F811
    data, labels, bars = bar_set
    out_json = tmp_path / "bench.json"
    common = ["--data-dir", data, "--label-file", labels, "--device", "cpu"]
    code, out, err = cli("benchmark", "-w", constant_ckpt, "--onnx-model", bars, *common, "--sizes", "64,128",
                         "--runs", "1", "--json", out_json)
    assert code == 0, err
    rows = json.loads(out_json.read_text())["rows"]
    assert len(rows) == 4 and all(r["images"] == 4 for r in rows)
    hmeans = []
    for row in rows:
        model = ["--onnx-model", bars] if row["backend"] == "onnx" else ["-w", constant_ckpt, "--fuse"]
        eval_json = tmp_path / "eval.json"
        code, _, err = cli("eval", *model, *common, "--limit-side-len", str(row["limit_side_len"]),
                           "--json", eval_json)
        assert code == 0, err
        assert row["hmean"] == json.loads(eval_json.read_text())["hmean"], row
        hmeans.append(row["hmean"])
    assert any(0 < h < 1 for h in hmeans), hmeans  # a score that could be off, not a trivial 0 or 1


def test_bf16_row_when_supported_else_a_note(cli, tmp_path, images, random_ckpt):
    out_json = tmp_path / "bench.json"
    code, out, err = cli("benchmark", "-w", random_ckpt, "--images", images, "--precisions", "bf16,fp16,int8",
                         "--sizes", "64", "--runs", "1", "--device", "cpu", "--json", out_json)
    err = " ".join(err.split())
    assert "skipped torch fp16" in err and "CUDA only" in err
    assert "skipped torch int8" in err and "--onnx-model" in err
    if BF16:
        assert code == 0, err
        assert [r["precision"] for r in json.loads(out_json.read_text())["rows"]] == ["bf16"]
    else:
        assert code == 1 and "skipped torch bf16" in err and "nothing to benchmark" in err


@pytest.mark.skipif(not BF16, reason="this CPU runs bf16 only emulated")
def test_bf16_backend_is_close_to_fp32_and_returns_float32():
    torch.manual_seed(0)
    backend = TorchBackend(build_detector().eval(), torch.device("cpu"), channels_last=True)
    batch = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    fp32, bf16 = backend(batch), backend.with_precision("bf16")(batch)
    assert backend.precision == "fp32" and bf16.dtype == np.float32 and bf16.shape == fp32.shape
    assert 0 < np.abs(fp32 - bf16).max() < 0.05  # autocast really ran, and stays close


def test_torch_precision_support_table():
    cpu = torch.device("cpu")
    assert precision_problem("fp32", cpu) is None
    assert "CUDA" in precision_problem("fp16", cpu)
    with pytest.raises(UserError) as info:
        TorchBackend(torch.nn.Identity(), cpu).with_precision("fp16")
    assert info.value.exit_code == 2


def _quantised_graph(path):
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
                               helper.make_tensor("z", TensorProto.UINT8, [], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def test_onnx_precision_from_metadata_then_graph(tmp_path):
    never = lambda: pytest.fail("the graph is read only when the metadata is silent")  # noqa: E731
    assert bench.onnx_precision({"precision": "float32"}, never) == "fp32"
    assert bench.onnx_precision({"precision": "float16 weights, float32 input and output"}, never) == "fp16"
    assert bench.onnx_precision({"precision": "int8"}, never) == "int8"
    assert bench.onnx_precision({}, lambda: {"Conv", "Sigmoid"}) == "fp32"
    assert bench.onnx_precision({"precision": "mixed"}, lambda: {"Conv"}) == "fp32"
    assert bench.onnx_precision({}, lambda: {"QLinearConv"}) == "int8"
    assert bench.graph_op_types(_quantised_graph(tmp_path / "q.onnx")) == {"QuantizeLinear", "DequantizeLinear"}
    assert bench.onnx_precision({}, lambda: bench.graph_op_types(tmp_path / "q.onnx")) == "int8"


def test_onnx_rows_carry_the_models_precision(cli, tmp_path, images):
    fp16 = tiny_model(tmp_path / "half.onnx")
    write_metadata(fp16, {"precision": "float16 weights, float32 input and output"})
    int8 = tiny_model(tmp_path / "int8.onnx")
    write_metadata(int8, {"precision": "int8"})
    out_json = tmp_path / "bench.json"
    code, _, err = cli("benchmark", "--onnx-model", fp16, "--onnx-model", int8, "--images", images, "--runs", "1",
                       "--device", "cpu", "--json", out_json)
    assert code == 0, err
    rows = json.loads(out_json.read_text())["rows"]
    assert [(r["model"], r["precision"], r["limit_side_len"]) for r in rows] == [
        (str(fp16), "fp16", 960), (str(int8), "int8", 960)]


class _SlowBackend:
    """A real Backend (constant map) whose first call takes 0.3 s and later calls 20 ms."""

    name = "slow"

    def __init__(self):
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        time.sleep(0.3 if self.calls == 1 else 0.02)
        return np.full((len(batch), 1, *batch.shape[2:]), 0.9, np.float32)


def test_warm_up_is_untimed_and_every_timed_image_is_counted(tmp_path, images):
    backend = _SlowBackend()
    predictor = Predictor(backend, ResizeSpec(limit_side_len=64), Normalizer(), make_postprocess({}))
    paths = sorted(str(p) for p in images.iterdir())
    case = bench.Case("slow", "m", "fp32", 64, predictor)
    (row,), failures = bench.run_cases([case], paths, None, runs=3)
    assert failures == [] and backend.calls == 3 * 4  # one warm-up pass + three timed passes
    assert row.images == 3
    assert 20 <= row.stages_ms["inference"]["p50"] < 200 and row.stages_ms["inference"]["p95"] < 300
    assert row.stages_ms["total"]["p50"] >= row.stages_ms["inference"]["p50"]
    assert 0 < row.images_per_s <= 1000 / 20


def test_percentiles_and_parsers():
    assert bench.percentiles([1.0, 2.0, 3.0, 4.0]) == {"p50": 2.5, "p95": pytest.approx(3.85)}
    assert bench.parse_precisions("fp32, BF16,fp32") == ["fp32", "bf16"]


@pytest.mark.parametrize("args, code, message", [
    (["--precisions", "fp8"], 2, "'fp8' is not a precision"),
    (["--sizes", "16"], 2, "from 32 to 8192"),
    (["--sizes", "0,x"], 2, "from 32 to 8192"),
    (["--runs", "0"], 2, "--runs"),
    ([], 2, "no images"),
    (["--images", "IMAGES", "--label-file", "x.txt"], 2, "either --images"),
    (["--images", "MISSING"], 1, "does not exist"),
])
def test_bad_flags_are_clear_errors(cli, tmp_path, images, random_ckpt, args, code, message):
    args = [str(images) if a == "IMAGES" else str(tmp_path / "nope") if a == "MISSING" else a for a in args]
    if "--images" not in args and "no images" not in message:
        args += ["--images", str(images)]
    got, _, err = cli("benchmark", "-w", random_ckpt, "--device", "cpu", *args)
    assert got == code and message in " ".join(err.split()) and "Traceback" not in err


def test_onnx_only_benchmark_never_imports_torch(tmp_path, images):
    model = tiny_model(tmp_path / "tiny.onnx")
    out_json = tmp_path / "bench.json"
    rc, heavy = heavy_modules_after("benchmark", "--onnx-model", str(model), "--images", str(images), "--runs", "1",
                                    "--device", "cpu", "--json", str(out_json))
    assert rc == 0 and "torch" not in heavy and "onnxruntime" in heavy
    got = json.loads(out_json.read_text())
    assert got["machine"]["torch"] == torch.__version__.split("+")[0] or got["machine"]["torch"] is None
    from tests.test_openvino_backend import to_ir

    rc, heavy = heavy_modules_after("benchmark", "--openvino-model", str(to_ir(model)), "--images", str(images),
                                    "--runs", "1", "--device", "cpu", "--precisions", "fp32,bf16,fp16")
    assert rc == 0 and "torch" not in heavy and "openvino" in heavy
    rc, heavy = heavy_modules_after("benchmark", "--help")
    assert rc == 0 and "torch" not in heavy and "onnxruntime" not in heavy


def _row(backend, precision, images_per_s, hmean, model="m.onnx"):
    stages = {stage: {"p50": 1000 / images_per_s, "p95": 1000 / images_per_s} for stage in bench.STAGES}
    return bench.BenchRow(backend, model, precision, 960, 8, stages, images_per_s, hmean)


def test_recommend_the_fastest_row_within_max_drop_of_the_best_fp32():
    fp32 = _row("onnx", "fp32", 10.0, 0.800)
    torch_fp32 = _row("torch", "fp32", 5.0, 0.802)  # the reference: the best float32 hmean
    bf16 = _row("openvino", "bf16", 20.0, 0.797)  # 0.5 points below: kept
    int8 = _row("openvino", "int8", 40.0, 0.790)  # 1.2 points below: too far at 0.5, kept at 1.5
    rows = [fp32, torch_fp32, bf16, int8]
    chosen = bench.recommend(rows, 0.5)
    assert chosen.row is bf16 and chosen.reference is torch_fp32 and chosen.max_drop == 0.5
    assert bench.recommend(rows, 1.5).row is int8
    assert bench.recommend(rows, 0.0).row is torch_fp32
    assert bench.recommend([], 0.5) is None
    unlabelled = [_row("onnx", "fp32", 10.0, None), _row("openvino", "int8", 30.0, None)]
    chosen = bench.recommend(unlabelled, 0.5)
    assert chosen.row is unlabelled[1] and chosen.reference is None
    only_low = [_row("openvino", "int8", 30.0, 0.7), _row("openvino", "bf16", 10.0, 0.75)]
    assert bench.recommend(only_low, 0.5).reference is only_low[1]  # no fp32 row: the best row's hmean


@pytest.mark.openvino
def test_openvino_rows_beside_onnx_and_a_recommendation(cli, tmp_path, bar_set):  # noqa: F811
    from tests.test_openvino_backend import quantised_tiny_model, to_ir

    data, labels, bars = bar_set
    xml = to_ir(bars, tmp_path / "bars.xml")
    int8 = to_ir(quantised_tiny_model(tmp_path / "q.onnx"))
    out_json = tmp_path / "bench.json"
    code, out, err = cli("benchmark", "--onnx-model", bars, "--openvino-model", xml, "--openvino-model", int8,
                         "--precisions", "fp32,int8", "--data-dir", data, "--label-file", labels, "--runs", "1",
                         "--device", "cpu", "--threads", "1", "--json", out_json)
    assert code == 0, err
    got = json.loads(out_json.read_text())
    rows = {(r["backend"], r["model"], r["precision"]): r for r in got["rows"]}
    assert set(rows) == {("onnx", str(bars), "fp32"), ("openvino", str(xml), "fp32"), ("openvino", str(int8), "int8")}
    assert rows["openvino", str(xml), "fp32"]["hmean"] == rows["onnx", str(bars), "fp32"]["hmean"] > 0
    notes = " ".join(err.split())
    assert "skipped openvino int8 for" in notes and "q.xml is an int8 model" in notes
    assert got["machine"]["openvino"]
    chosen = bench.recommend([_row(r["backend"], r["precision"], r["images_per_s"], r["hmean"], r["model"])
                              for r in got["rows"]], 0.5)
    assert (got["recommended"]["backend"], got["recommended"]["model"], got["recommended"]["precision"]) == \
        (chosen.row.backend, chosen.row.model, chosen.row.precision)
    best = max(r["hmean"] for r in got["rows"] if r["precision"] == "fp32")
    assert got["recommended"]["hmean"] >= best - 0.005
    line = next(x for x in out.splitlines() if x.startswith("recommended: "))
    assert line.startswith(f"recommended: {chosen.row.backend} {Path(chosen.row.model).name} {chosen.row.precision} "
                           f"at 960: {got['recommended']['images_per_s']:.2f} images/s, hmean")
    assert f"(within --max-drop 0.5 of the best float32 row's hmean {best:.4f})" in line
