"""predict at scale: --shard splits that add up to the unsharded file, --devices cpu,cpu equal to one process,
--format jsonl, the lazy listing (same paths and order as collect_images), flat memory over thousands of files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from openocr_cli.data import listing
from openocr_cli.data.images import collect_images
from openocr_cli.inference.run_folder import Shard
from tests.test_api import page
from tests.test_onnx_backend import tiny_model


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """13 pages over two levels; names that sort differently as names and as paths (a-b, a.b, a/)."""
    root = tmp_path_factory.mktemp("tree")
    names = ["a.png", "a-b.png", "a.b.png", "a/x.png", "a/b/y.jpg", "a b/c.png", "ab/d.PNG", "Zed.png", "z/r.png",
             "é.png", "m.png", "n.jpg", "sub/a.png"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), page(i % 5, 150 + 10 * (i % 3), 260))
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("m") / "tiny.onnx")


def run(cli, out, *args, code=0):
    got, stdout, err = cli("predict", *map(str, args), "--output", str(out))
    assert got == code, err
    return stdout, err


def test_listing_is_collect_images_lazily(tree, tmp_path):
    os.symlink(tree / "a", tree / "link")  # a symlinked folder is not entered, as os.walk does not
    try:
        for sources, recursive in (([tree], False), ([tree], True), ([f"{tree}/**/*.png"], True),
                                   ([tree, tree / "a" / "x.png", tree / "a"], True), ([f"{tree}/"], True)):
            sources = [str(s) for s in sources]
            expected = collect_images(sources, recursive)
            assert list(listing.iter_files(sources, recursive)) == expected, sources
            assert listing.count_files(sources, recursive) == len(expected)
    finally:
        os.unlink(tree / "link")
    names = [f"n{i:04d}" for i in np.random.default_rng(0).permutation(2500)]
    assert list(listing.sorted_strings(iter(names), block=300)) == sorted(names)  # 9 spilled blocks, merged


def test_shards_are_disjoint_and_add_up_to_the_unsharded_run(cli, tmp_path, tree, model):
    base = [tree, "-r", "--onnx-model", model, "--device", "cpu", "--no-vis"]
    run(cli, tmp_path / "all", *base)
    full = (tmp_path / "all" / "det_results.txt").read_bytes()
    for n in (3, 5, 20):  # 20 shards for 13 files: some are empty
        parts = []
        for i in range(1, n + 1):
            run(cli, tmp_path / f"{n}_{i}", *base, "--shard", f"{i}/{n}")
            parts.append((tmp_path / f"{n}_{i}" / "det_results.txt").read_bytes())
        names = [line.split(b"\t")[0] for part in parts for line in part.splitlines()]
        assert len(names) == len(set(names)) == 13
        assert b"".join(parts) == full  # `cat` in shard order is the unsharded file, byte for byte
    assert [Shard(i, 4).bounds(10) for i in range(1, 5)] == [(0, 2), (2, 5), (5, 7), (7, 10)]


@pytest.mark.parametrize("bad", ["0/3", "3/2", "x", "1/0", "-1/2", "2"])
def test_bad_shard_is_a_usage_error_naming_the_flag(cli, tree, model, bad):
    code, out, err = cli("predict", str(tree), "--onnx-model", str(model), "--shard", bad)
    assert code == 2 and "--shard" in err and "Traceback" not in out + err


def test_devices_cpu_cpu_equals_one_process(cli, tmp_path, tree, model):
    base = [tree, "-r", "--onnx-model", model, "--batch-size", "2"]
    run(cli, tmp_path / "one", *base, "--device", "cpu")
    _, err = run(cli, tmp_path / "two", *base, "--devices", "cpu,cpu")
    assert "Traceback" not in err
    assert (tmp_path / "two" / "det_results.txt").read_bytes() == (tmp_path / "one" / "det_results.txt").read_bytes()
    drawn = sorted(os.listdir(tmp_path / "one" / "vis"))
    assert drawn == sorted(os.listdir(tmp_path / "two" / "vis")) and "a_1.png" in drawn  # sub/a.png
    for name in drawn:
        assert (tmp_path / "one" / "vis" / name).read_bytes() == (tmp_path / "two" / "vis" / name).read_bytes()
    code, _, err = cli("predict", str(tree), "--onnx-model", str(model), "--devices", "cpu,cpu", "--device", "cpu")
    assert code == 2 and "--devices" in err
    code, _, err = cli("predict", str(tree), "--onnx-model", str(model), "--devices", "cpu,,cpu")
    assert code == 2 and "--devices" in err
    code, out, err = cli("predict", str(tree), "--onnx-model", str(model), "--devices", "cpu,tpu:3",
                         "--output", str(tmp_path / "bad"))
    assert code == 2 and "tpu:3" in err and "Traceback" not in out + err


def test_jsonl_schema(cli, tmp_path, tree, model):
    (tree / "zz.png").write_bytes(b"not an image")
    try:
        run(cli, tmp_path / "txt", tree, "--onnx-model", model, "--device", "cpu", "--no-vis", code=1)
        run(cli, tmp_path / "j", tree, "--onnx-model", model, "--device", "cpu", "--no-vis", "--format", "jsonl",
            code=1)
    finally:
        (tree / "zz.png").unlink()
    lines = (tmp_path / "j" / "det_results.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    failed = [r for r in records if "error" in r]
    txt = [line.split("\t") for line in (tmp_path / "txt" / "det_results.txt").read_text().splitlines()]
    assert [r["image"] for r in records if "error" not in r] == [path for path, _ in txt]
    assert len(records) == len(txt) + 1 == 8  # the top folder: 7 pages and zz.png
    for record, (path, boxes) in zip([r for r in records if "error" not in r], txt):
        assert list(record) == ["image", "width", "height", "detections"]
        h, w = cv2.imread(path).shape[:2]
        assert (record["width"], record["height"]) == (w, h)
        assert record["detections"] == json.loads(boxes) and record["detections"]
        for det in record["detections"]:
            assert set(det) == {"points", "score"} and all(len(p) == 2 for p in det["points"])
    [bad] = failed
    assert bad["image"].endswith("zz.png") and "zz.png" in bad["error"]
    assert bad["detections"] == [] and bad["width"] is None and bad["height"] is None


def test_memory_stays_flat_over_thousands_of_files(tmp_path, model):
    """Peak RSS of predict over 4000 tiny files within a few MB of its peak over 400 (each run measured alone)."""
    rss = {}
    for count in (400, 4000):
        folder = tmp_path / f"f{count}"
        folder.mkdir()
        ok, data = cv2.imencode(".png", np.full((8, 8, 3), 200, np.uint8))
        for i in range(count):
            (folder / f"img{i:05d}.png").write_bytes(data.tobytes())
        env = dict(os.environ, OPENOCR_DET_OFFLINE="1", OPENOCR_DET_NO_PROGRESS="1")
        proc = subprocess.Popen([sys.executable, "-m", "openocr_cli", "predict", str(folder), "--onnx-model",
                                 str(model), "--device", "cpu", "--no-vis", "--format", "jsonl", "--batch-size", "8",
                                 "--output", str(tmp_path / f"o{count}")], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        rss[count] = usage.ru_maxrss / 1024  # MB
        assert len((tmp_path / f"o{count}" / "det_results.jsonl").read_text().splitlines()) == count
    assert rss[4000] - rss[400] < 8, rss


def test_progress_shows_images_per_second_and_eta():
    from rich.progress import TimeRemainingColumn

    from openocr_cli.cli.ui import _RateColumn, rate_progress

    bar = rate_progress()
    task_id = bar.add_task("predict", total=None)
    assert any(isinstance(c, _RateColumn) for c in bar.columns)
    assert any(isinstance(c, TimeRemainingColumn) for c in bar.columns)
    bar.update(task_id, total=100)  # the total arrives once counted
    for _ in range(5):
        bar.advance(task_id)
        time.sleep(0.01)
    task = bar.tasks[0]
    rate = next(c for c in bar.columns if isinstance(c, _RateColumn)).render(task).plain
    assert rate.endswith("img/s") and float(rate.split()[0]) > 0 and task.total == 100


def test_a_shard_resumed_over_a_changed_listing_is_refused(cli, tmp_path, model):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"p{i}.png"), page(i))
    base = [folder, "--onnx-model", model, "--device", "cpu", "--no-vis", "--shard", "2/2"]
    run(cli, tmp_path / "o", *base)
    stdout, _ = run(cli, tmp_path / "o", *base, "--resume")  # unchanged: nothing to do
    assert "already recorded" in stdout
    cv2.imwrite(str(folder / "p00.png"), page(9))  # the split would move
    code, _, err = cli("predict", *map(str, base), "--output", str(tmp_path / "o"), "--resume")
    assert code == 2 and "input files" in err and "recorded 3, now 3" not in err
