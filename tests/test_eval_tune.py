"""eval --tune: exact trials on cached maps, the search, map spilling, and the CLI round trip."""

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from openocr_cli.errors import UserError
from openocr_cli.evaluation import tune
from openocr_cli.evaluation.iou_metric import ImageRecord, evaluate_image, summarize
from openocr_cli.evaluation.mapcache import MapCache
from openocr_cli.inference.results import Result
from openocr_cli.postprocess import DBPostProcess
from tests.conftest import label_line


def _blob_map(seed: int, h: int = 96, w: int = 160):
    """A soft-edged probability map with a few text-like bars, and GT boxes near (not exactly on) them."""
    rng = np.random.default_rng(seed)
    prob = np.zeros((h, w), np.float32)
    gts = []
    for row in range(4):
        x, y = int(rng.integers(4, w - 60)), 6 + 22 * row
        bw, bh = int(rng.integers(20, 55)), int(rng.integers(8, 16))
        inset = bh // 4  # DB maps mark the shrunk text region; unclipping grows it back
        cv2.rectangle(prob, (x + inset, y + inset), (x + bw - inset, y + bh - inset), float(rng.uniform(0.45, 0.95)),
                      -1)
        dx, dy = rng.integers(-2, 3, size=2)
        gts.append(np.array([[x + dx, y + dy], [x + bw + dx, y + dy], [x + bw, y + bh], [x, y + bh]], float))
    prob = cv2.GaussianBlur(prob, (5, 5), 1.0)
    prob += rng.uniform(0, 0.35, size=prob.shape).astype(np.float32) * (rng.uniform(size=prob.shape) < 0.02)
    ignore = [False, False, False, True]
    return np.clip(prob, 0, 1).astype(np.float32), gts, ignore


def _images(count=5, budget=None):
    cache = MapCache(budget=budget if budget is not None else 2**30)
    labels = []
    for i in range(count):
        prob, gts, ignore = _blob_map(i)
        cache.add(Result(i, f"{i}.png", prob_map=prob, src_hw=(prob.shape[0] * 2, prob.shape[1] * 2)))
        labels.append(([g * 2 for g in gts], ignore))  # source pixels: twice the map size
    images = [tune.TuneImage(m, *labels[m.index]) for m in cache.maps]
    return cache, images


def _direct(images, params):
    """What plain eval computes: DBPostProcess.__call__ on each map, then the metric."""
    post = replace(DBPostProcess(), thresh=params[0], box_thresh=params[1], unclip_ratio=params[2])
    records = [evaluate_image(im.gt_polys, im.gt_ignore, [d.points for d in post(im.cached.load(),
                                                                                  *im.cached.src_hw)])
               for im in images]
    return tuple(sum(getattr(r, k) for r in records) for k in ("gt_care", "det_care", "det_matched"))


TRIALS = [(0.3, 0.6, 1.5), (0.2, 0.4, 1.2), (0.45, 0.5, 2.0), (0.1, 0.3, 1.0), (0.3, 0.55, 1.5), (0.6, 0.8, 2.5)]


def test_shard_evaluator_equals_plain_postprocess_and_metric():
    cache, images = _images()
    evaluator = tune.ShardEvaluator(images, DBPostProcess())
    got = evaluator.evaluate(TRIALS)
    assert got == [_direct(images, p) for p in TRIALS]
    assert evaluator.evaluate(TRIALS[::-1]) == got[::-1]  # answers from the reuse caches are the same
    assert any(g[2] > 0 for g in got) and len({g for g in got}) > 2  # the case is not degenerate


def test_spilled_maps_and_two_processes_give_the_same_counts():
    _, in_memory = _images()
    with MapCache(budget=0) as spilled:
        cache, images = _images(budget=0)
        assert cache.in_memory == 0 and cache.on_disk > 0
        assert all(isinstance(m.data, str) for m in cache.maps)
        for a, b in zip(in_memory, images):
            assert np.array_equal(a.cached.load(), b.cached.load())
        with tune.TrialRunner(images, DBPostProcess(), jobs=2) as runner:
            assert runner.jobs == 2
            assert runner(TRIALS) == tune.ShardEvaluator(in_memory, DBPostProcess()).evaluate(TRIALS)
        folder = cache._folder
        cache.close()
        assert not folder.exists()
    del spilled


def test_search_never_loses_and_its_numbers_reproduce():
    _, images = _images(6)
    grids = tune.parse_ranges("thresh=0.1:0.6:0.1,box_thresh=0.3:0.8:0.1,unclip_ratio=1.0:2.4:0.2")
    start = (0.55, 0.85, 2.5)  # a poor starting point, off the grid on one axis
    outcome = tune.search(tune.ShardEvaluator(images, DBPostProcess()).evaluate, grids, start)
    assert outcome.default.params == start
    assert outcome.best.hmean > outcome.default.hmean
    for trial in (outcome.default, outcome.best, *outcome.top()):
        counts = _direct(images, trial.params)
        assert summarize([ImageRecord(*counts)]) == {"precision": trial.precision, "recall": trial.recall,
                                                     "hmean": trial.hmean}
    assert len(outcome.trials) == len({t.params for t in outcome.trials})
    assert len(outcome.trials) < 6 * 6 * 8  # cheaper than the full grid


def test_parse_ranges():
    grids = tune.parse_ranges("thresh=0.2:0.4:0.05, unclip_ratio=1.7")
    assert grids["thresh"] == (0.2, 0.25, 0.3, 0.35, 0.4)
    assert grids["unclip_ratio"] == (1.7,)
    assert grids["box_thresh"] == tune.parse_ranges(None)["box_thresh"]
    for bad in ("thresh=0.2:0.4", "gamma=1:2:1", "thresh=0.5:0.2:0.1", "box_thresh=0.5:1.5:0.1",
                "unclip_ratio=0:2:0.5", "thresh=0:1:0.0001"):
        with pytest.raises(UserError) as info:
            tune.parse_ranges(bad)
        assert info.value.exit_code == 2 and "--tune" in str(info.value)


def _bar_onnx(path):
    """A tiny ONNX 'detector': the probability map is a steep sigmoid of the pixel brightness."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["m", "k"], ["s"]), helper.make_node("Add", ["s", "b"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["output"])]
    graph = helper.make_graph(
        nodes, "bars", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [3.0]), helper.make_tensor("b", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def bar_set(tmp_path):
    """Images with blurred bright bars of several brightnesses; labels close to the bars."""
    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    (data / "imgs").mkdir(parents=True)
    lines = []
    for i in range(4):
        image = np.zeros((128, 192, 3), np.uint8)
        regions = []
        for _ in range(3):
            x, y = int(rng.integers(4, 120)), int(rng.integers(4, 100))
            bw, bh = int(rng.integers(25, 65)), int(rng.integers(8, 18))
            cv2.rectangle(image, (x, y), (x + bw, y + bh), (int(rng.integers(110, 255)),) * 3, -1)
            regions.append({"transcription": "t", "points": [[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]]})
        image = cv2.GaussianBlur(image, (9, 9), 3)
        cv2.imwrite(str(data / "imgs" / f"{i}.png"), image)
        lines.append(label_line(f"imgs/{i}.png", regions))
    (data / "labels.txt").write_text("".join(lines))
    return data, data / "labels.txt", _bar_onnx(tmp_path / "bars.onnx")


def test_cli_tune_round_trip(cli, tmp_path, bar_set):
    data, labels, model = bar_set
    common = ["eval", "--onnx-model", model, "--data-dir", data, "--label-file", labels, "--device", "cpu"]
    tuned_json = tmp_path / "tuned.json"
    code, out, err = cli(*common, "--tune", "thresh=0.05:0.9:0.05,box_thresh=0.1:0.9:0.05,unclip_ratio=1.0:2.5:0.25",
                         "--tune-jobs", "2", "--json", tuned_json)
    assert code == 0, err
    got = json.loads(tuned_json.read_text())
    assert set(got["tuned"]) == {"thresh", "box_thresh", "unclip_ratio", "precision", "recall", "hmean"}
    assert got["default"]["hmean"] == got["hmean"] and got["default"]["thresh"] == 0.3
    assert got["tuned"]["hmean"] > got["default"]["hmean"]
    assert got["trials"] > 10 and got["seconds"] >= 0
    assert "gain (pts)" in out and "current" in out
    regions = sum(r["transcription"] not in ("###", "*") for line in Path(labels).read_text().splitlines()
                  for r in json.loads(line.split("\t")[1]))
    assert (f"--tune ran on {regions} text region(s)" in " ".join(err.split())) == (regions < tune.SMALL_SAMPLE)
    # plain eval with the tuned values gives exactly the tuned numbers: flags, and the file via --postprocess
    t = got["tuned"]
    plain = tmp_path / "plain.json"
    for extra in (["--thresh", repr(t["thresh"]), "--box-thresh", repr(t["box_thresh"]),
                   "--unclip-ratio", repr(t["unclip_ratio"])], ["--postprocess", tuned_json]):
        code, _, err = cli(*common, *extra, "--json", plain)
        assert code == 0, err
        m = json.loads(plain.read_text())
        assert (m["precision"], m["recall"], m["hmean"]) == (t["precision"], t["recall"], t["hmean"])


def test_cli_tune_refuses_predictions_and_bad_ranges(cli, tmp_path):
    labels = tmp_path / "gt.txt"
    labels.write_text("a.jpg\t[]\n")
    preds = tmp_path / "p.txt"
    preds.write_text("a.jpg\t[]\n")
    code, _, err = cli("eval", "--predictions", preds, "--label-file", labels, "--tune")
    assert code == 2 and "--predictions" in err and "Traceback" not in err
    code, _, err = cli("eval", "--predictions", preds, "--label-file", labels, "--tune=thresh=2:3:1")
    assert code == 2 and "between 0 and 1" in " ".join(err.split())


def test_onnx_metadata_postprocess_is_used_unless_overridden(cli, tmp_path, bar_set):
    from openocr_cli.inference.backends.onnx_metadata import write_metadata

    data, labels, model = bar_set
    write_metadata(model, {"postprocess": json.dumps({"thresh": 0.3, "box_thresh": 0.999, "unclip_ratio": 1.5})})
    common = ["eval", "--onnx-model", model, "--data-dir", data, "--label-file", labels, "--device", "cpu"]
    out_json = tmp_path / "m.json"
    code, _, err = cli(*common, "--json", out_json)
    assert code == 0, err
    assert json.loads(out_json.read_text())["hmean"] == 0.0  # box_thresh 0.999 from the metadata keeps nothing
    assert "from the ONNX model's metadata" in " ".join(err.split())
    code, _, err = cli(*common, "--box-thresh", "0.6", "--json", out_json)
    assert code == 0 and json.loads(out_json.read_text())["hmean"] > 0
    # an explicit --config outranks what the model carries
    from openocr_cli import config as cfgmod

    config = tmp_path / "mine.yml"
    config.write_text(yaml.safe_dump(cfgmod.load_config()))
    code, _, err = cli(*common, "--config", config, "--json", out_json)
    assert code == 0 and json.loads(out_json.read_text())["hmean"] > 0
    assert "from the ONNX model's metadata" not in " ".join(err.split())


def test_export_writes_postprocess_file_into_metadata(cli, tmp_path, random_ckpt):
    from openocr_cli.inference.backends.onnx_metadata import read_metadata

    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"tuned": {"thresh": 0.25, "box_thresh": 0.55, "unclip_ratio": 1.7}}))
    path = tmp_path / "m.onnx"
    code, _, err = cli("export", "-w", random_ckpt, "--output", path, "--static", "--size", "64x64", "--no-fuse",
                       "--postprocess", tuned)
    assert code == 0, err
    post = json.loads(read_metadata(path)["postprocess"])
    assert (post["thresh"], post["box_thresh"], post["unclip_ratio"]) == (0.25, 0.55, 1.7)
    assert post["box_type"] == "quad" and post["max_candidates"] == 1000


def test_small_sample_warning():
    assert tune.small_sample_warning(tune.SMALL_SAMPLE) is None
    assert "21 text region(s)" in tune.small_sample_warning(21)
