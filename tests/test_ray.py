"""Ray Data: `RayDetector` in `map_batches`, `detect_dataset` and `predict --ray` give what `predict` gives.

One local Ray cluster (2 CPUs, no dashboard, 127.0.0.1) is started for the module and stopped at its end. The
images are tiny PNGs of three sizes (bright "words" on a dark ground) so the stand-in ONNX detector finds boxes
and mixed sizes are batched by shape; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import REPO, run_cli
from tests.test_onnx_backend import tiny_model

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'openocr-det[ray]' (make install does)")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow comes with ray[data]")

from ray.data import ActorPoolStrategy  # noqa: E402

from openocr_cli.api.detector import Detector  # noqa: E402
from openocr_cli.integrations.ray import RayDetector, detect_dataset  # noqa: E402

SIZES = ((32, 64), (48, 64), (64, 96))
IMAGES = 240
RUN_TIMEOUT_S = 240


def word_image(seed: int) -> np.ndarray:
    h, w = SIZES[seed % len(SIZES)]
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
    x, y = int(rng.integers(2, w // 3)), int(rng.integers(2, h // 3))
    cv2.rectangle(image, (x, y), (x + w // 2, y + h // 4), (230, 240, 250), -1)
    return image


def make_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        assert cv2.imwrite(str(folder / f"{i:04d}.png"), word_image(i))
    return folder


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("ray-model") / "bright.onnx")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("ray-images") / "imgs", IMAGES)


def predicted(model, folder: Path, **options) -> dict[str, list[dict]]:
    """predict's boxes per file name (the reference every Ray run must equal)."""
    results = Detector(str(model), device="cpu", **options).predict(folder)
    return {Path(r.path).name: r.to_json() for r in results}


def boxes(rows) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        name = Path(row["path"]).name
        assert name not in out, f"{name} twice"
        assert row["error"] is None, row
        out[name] = [{"points": [list(map(int, p)) for p in poly], "score": score}
                     for poly, score in zip(row["polygons"], row["scores"])]
    return out


def test_map_batches_on_binary_files_and_on_decoded_images_equals_predict(cluster, model, folder):
    expected = predicted(model, folder)
    assert sum(map(len, expected.values())) >= IMAGES  # every image has its word
    kwargs = {"model": str(model), "device": "cpu"}
    for ds in (ray.data.read_binary_files(str(folder), include_paths=True, num_cpus=0),
               ray.data.read_images(str(folder), include_paths=True, num_cpus=0)):
        out = ds.map_batches(RayDetector, fn_constructor_kwargs=kwargs, compute=ActorPoolStrategy(size=2),
                             batch_size=8)
        rows = out.take_all()
        assert len(rows) == IMAGES
        assert boxes(rows) == expected
        row = next(r for r in rows if r["path"].endswith("0002.png"))
        assert (row["height"], row["width"]) == SIZES[2]


def test_a_bad_image_gives_its_error_row_and_the_batch_goes_on(cluster, model, tmp_path):
    folder = make_folder(tmp_path / "imgs", 6)
    (folder / "0003.png").write_bytes(b"not a png")
    (folder / "empty.png").write_bytes(b"")
    rows = detect_dataset(str(folder), model, concurrency=1, batch_size=8).take_all()
    by_name = {Path(r["path"]).name: r for r in rows}
    assert len(rows) == 7 and len(by_name) == 7
    assert "0003.png is not a decodable image" in by_name["0003.png"]["error"]
    assert by_name["0003.png"]["polygons"] == [] and by_name["0003.png"]["width"] is None
    assert "empty.png is empty" in by_name["empty.png"]["error"]
    good = {k: v for k, v in by_name.items() if v["error"] is None}
    assert len(good) == 5 and all(r["polygons"] for r in good.values())


def test_paths_column_is_read_by_the_actors(cluster, model, folder):
    names = sorted(os.listdir(folder))[:20]
    ds = ray.data.from_items([{"path": str(folder / n)} for n in names])
    rows = detect_dataset(ds, model, concurrency=2, batch_size=4).take_all()
    expected = predicted(model, folder)
    assert boxes(rows) == {n: expected[n] for n in names}


@pytest.mark.slow
def test_a_torch_checkpoint_gives_predicts_boxes(cluster, folder, random_ckpt):
    """The same settings give the same floats: one thread and one image a forward pass on both sides (another
    thread count or batch moves torch's sums in the last bits, as between two local runs)."""
    options = {"thresh": 0.58, "box_thresh": 0.0, "threads": 1, "batch_size": 1}  # the random map, cut in blobs
    names = sorted(os.listdir(folder))[:16]
    expected = {n: b for n, b in predicted(random_ckpt, folder, **options).items() if n in names}
    assert sum(map(len, expected.values())) > 0
    ds = ray.data.read_binary_files([str(folder / n) for n in names], include_paths=True, num_cpus=0)
    rows = ds.map_batches(RayDetector, fn_constructor_kwargs={"model": str(random_ckpt), "device": "cpu", **options},
                          compute=ActorPoolStrategy(size=2), batch_size=8).take_all()
    assert boxes(rows) == expected


def map_workers() -> list[int]:
    """Process ids of the Ray Data actor workers (their process title is ray::MapWorker(...))."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().startswith(b"ray::MapWorker"):
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


@pytest.mark.slow
def test_killing_a_worker_mid_run_loses_and_duplicates_nothing(cluster, model, tmp_path):
    folder = make_folder(tmp_path / "imgs", 320)
    out = detect_dataset(str(folder), model, concurrency=2, batch_size=4)
    seen: list[str] = []
    killed, seen_at_kill = None, 0
    start = time.monotonic()
    for batch in out.iter_batches(batch_size=None, batch_format="pyarrow"):
        seen += batch.column("path").to_pylist()
        assert time.monotonic() - start < RUN_TIMEOUT_S
        if killed is None:
            workers = map_workers()
            assert workers, "no Ray Data worker process found"
            killed, seen_at_kill = workers[0], len(seen)
            os.kill(killed, signal.SIGKILL)
    assert seen_at_kill < 320  # it died mid-run
    assert sorted(Path(p).name for p in seen) == sorted(os.listdir(folder))
    assert killed not in map_workers()


def test_predict_ray_writes_the_local_runs_lines_and_parquet(cli, cluster, model, folder, tmp_path):
    code, _, err = cli("predict", folder, "--onnx-model", model, "--device", "cpu", "--output", tmp_path / "local")
    assert code == 0, err
    code, out, err = cli("predict", folder, "--onnx-model", model, "--ray", "--output", tmp_path / "ray",
                         "--save-format", "parquet")
    assert code == 0, err
    local = (tmp_path / "local" / "det_results.txt").read_text()
    assert (tmp_path / "ray" / "det_results.txt").read_text() == local
    assert sorted(os.listdir(tmp_path / "ray" / "vis")) == sorted(os.listdir(tmp_path / "local" / "vis"))
    table = pq.read_table(tmp_path / "ray" / "det_results.parquet")
    assert table.num_rows == IMAGES
    lines = local.splitlines()
    assert table.column("path").to_pylist() == [line.split("\t")[0] for line in lines]
    first = table.slice(0, 1).to_pylist()[0]
    assert [{"points": p, "score": s} for p, s in zip(first["polygons"], first["scores"])] == \
        json.loads(lines[0].split("\t")[1])
    run = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert run["status"] == "finished" and run["images"] == IMAGES and run["devices"] == ["ray:local"]


def test_predict_ray_refuses_devices_and_shard_naming_the_ray_way(cli, model, folder, tmp_path):
    code, _, err = cli("predict", folder, "--onnx-model", model, "--ray", "--devices", "cpu,cpu",
                       "--output", tmp_path / "a")
    assert code == 2 and "--device cuda runs one actor per GPU" in err
    code, _, err = cli("predict", folder, "--onnx-model", model, "--ray", "--shard", "1/2", "--output", tmp_path / "b")
    assert code == 2 and "drop --shard" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


LEAN = """
import sys
import ray
from pathlib import Path
from openocr_cli.integrations.ray import detect_dataset
ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
rows = detect_dataset(sys.argv[2], sys.argv[1], concurrency=2, batch_size=4).take_all()
ray.shutdown()
assert "torch" not in sys.modules
print("ROWS", len(rows), sum(len(r["polygons"]) for r in rows), sum(r["error"] is not None for r in rows))
"""


@pytest.mark.slow
def test_the_lean_onnx_install_runs_it_without_torch(model, tmp_path):
    """torch cannot be imported by the driver nor by the Ray workers (a stub that raises comes first on the path)."""
    blocked = tmp_path / "blocked"
    for name in ("torch", "torchvision"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{name}'\")\n")
    folder = make_folder(tmp_path / "imgs", 12)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocked), str(REPO)]), OPENOCR_DET_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", LEAN, str(model), str(folder)], capture_output=True, text=True,
                         env=env, timeout=RUN_TIMEOUT_S, cwd=tmp_path)
    line = [x for x in res.stdout.splitlines() if x.startswith("ROWS")]
    assert line, res.stdout[-2000:] + res.stderr[-3000:]
    assert line[0].split()[1:] == ["12", "12", "0"]


@pytest.mark.slow
def test_predict_ray_starts_a_local_cluster_for_the_run(model, tmp_path):
    folder = make_folder(tmp_path / "imgs", 30)
    res = run_cli("predict", str(folder), "--onnx-model", str(model), "--device", "cpu", "--no-vis", "--output",
                  str(tmp_path / "local"))
    assert res.returncode == 0, res.stderr
    res = run_cli("predict", str(folder), "--onnx-model", str(model), "--ray", "--no-vis", "--format", "jsonl",
                  "--output", str(tmp_path / "ray"), timeout=RUN_TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "INFO" not in res.stderr
    local = (tmp_path / "local" / "det_results.txt").read_text().splitlines()
    ray_lines = (tmp_path / "ray" / "det_results.jsonl").read_text().splitlines()
    assert len(ray_lines) == len(local) == 30
    for line, record in zip(local, ray_lines):
        path, text = line.split("\t")
        record = json.loads(record)
        assert record["image"] == path and record["detections"] == json.loads(text)


def test_save_format_parquet_on_a_local_run_has_one_row_per_image_with_errors(cli, model, tmp_path):
    folder = make_folder(tmp_path / "imgs", 5)
    (folder / "0002.png").write_bytes(b"broken")
    code, out, err = cli("predict", folder, "--onnx-model", model, "--device", "cpu", "--no-vis", "--output",
                         tmp_path / "out", "--save-format", "parquet")
    assert code == 1 and "0002.png" in err  # an unreadable image: listed, exit 1, as without parquet
    rows = pq.read_table(tmp_path / "out" / "det_results.parquet").to_pylist()
    assert [Path(r["path"]).name for r in rows] == [f"{i:04d}.png" for i in range(5)]
    assert "not a decodable image" in rows[2]["error"] and rows[2]["width"] is None
    lines = (tmp_path / "out" / "det_results.txt").read_text().splitlines()
    assert [[{"points": p, "score": s} for p, s in zip(r["polygons"], r["scores"])] for r in rows if not r["error"]] \
        == [json.loads(line.split("\t")[1]) for line in lines]
    assert not list((tmp_path / "out").glob("*.partial"))


@pytest.mark.slow
def test_predict_ray_resumes_a_cut_run_as_a_local_run_does(cli, cluster, model, tmp_path):
    folder = make_folder(tmp_path / "imgs", 30)
    code, _, err = cli("predict", folder, "--onnx-model", model, "--device", "cpu", "--no-vis", "--output",
                       tmp_path / "local")
    assert code == 0, err
    local = (tmp_path / "local" / "det_results.txt").read_text()
    code, _, err = cli("predict", folder, "--onnx-model", model, "--ray", "--no-vis", "--output", tmp_path / "ray")
    assert code == 0, err
    results = tmp_path / "ray" / "det_results.txt"
    results.write_text("".join(local.splitlines(keepends=True)[:11]) + local.splitlines()[11][:9])  # a torn line
    code, out, err = cli("predict", folder, "--onnx-model", model, "--ray", "--no-vis", "--resume", "--output",
                         tmp_path / "ray")
    assert code == 0, err
    assert results.read_text() == local
    assert "already recorded (skipped)" in out and "11" in out
