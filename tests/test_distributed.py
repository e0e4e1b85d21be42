"""Distributed training on CPU (gloo) through torch.distributed.run, launched by our CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from openocr_cli.data.synth import generate
from openocr_cli.errors import UserError
from openocr_cli.training.distributed import LaunchPlan, free_port, parse_gpus, strip_launcher_flags
from tests.conftest import label_line, write_image

pytestmark = pytest.mark.slow

SMALL = ["-o", "Train.dataset.transforms.4.EastRandomCropData.size=[96, 96]",
         "-o", "Eval.dataset.transforms.2.DetResizeForTest.limit_side_len=128", "-o", "Global.print_batch_step=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic training images, and eval images whose metric with the constant model is 2/3."""
    root = tmp_path_factory.mktemp("ddp")
    synth = generate(root / "synth", num_train=8, num_test=2, seed=5, size=(96, 128))
    ev = root / "eval"
    write_image(ev / "a.png", 96, 128, 1)
    write_image(ev / "b.png", 64, 100, 2)
    write_image(ev / "c.png", 80, 80, 3)
    (ev / "labels.txt").write_text(
        label_line(str(ev / "a.png"), [{"transcription": "A", "points": [[0, 0], [128, 0], [128, 96], [0, 96]]}])
        + label_line(str(ev / "b.png"), [{"transcription": "B", "points": [[0, 0], [100, 0], [100, 64], [0, 64]]}])
        + label_line(str(ev / "c.png"), [{"transcription": "C", "points": [[0, 0], [9, 0], [9, 9], [0, 9]]}]))
    return synth, ev


def run(args, env_extra=None, timeout=300, **kw):
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", COLUMNS="200", OPENOCR_DET_NO_PROGRESS="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "openocr_cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


def train_args(synth, out: Path, *extra) -> list[str]:
    return ["train", "--data-dir", str(synth.data_dir), "--train-label", str(synth.train_label),
            "--eval-label", str(synth.test_label), "--weights", "none", "--device", "cpu", "--output", str(out),
            "--batch-size", "2", "--workers", "0", *SMALL, *extra]


def test_launcher_flag_helpers():
    assert parse_gpus("0,1, 3") == [0, 1, 3]
    with pytest.raises(UserError):
        parse_gpus("0,a")
    with pytest.raises(UserError):
        parse_gpus("1,1")
    argv = ["train", "--gpus", "0,1", "--epochs", "3", "--nproc-per-node=2", "--master-port", "1234", "-o", "x=1"]
    assert strip_launcher_flags(argv) == ["train", "--epochs", "3", "-o", "x=1"]
    assert LaunchPlan(4).launcher_args() == ["--nproc-per-node", "4", "--standalone"]
    assert LaunchPlan(1, 2, 1, "10.0.0.1", 29400).launcher_args() == [
        "--nproc-per-node", "1", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1",
        "--master-port", "29400"]
    assert "--rdzv-endpoint" in LaunchPlan(2, 2, 0, rdzv_endpoint="h:1").launcher_args()


def constant_run_args(data, out: Path, constant_ckpt: Path, *extra: str) -> list[str]:
    """Two processes fine-tuning the constant model with lr 0 (known metric, weights that never change)."""
    synth, ev = data
    return ["train", "--data-dir", str(synth.data_dir), "--train-label", str(synth.train_label),
            "--eval-label", str(ev / "labels.txt"), "--weights", str(constant_ckpt), "--lr", "0",
            "--device", "cpu", "--output", str(out), "--batch-size", "2", "--workers", "0",
            "--nproc-per-node", "2", *SMALL, *extra]


def test_two_process_training_matches_single_process_eval(tmp_path, data, constant_ckpt):
    synth, ev = data
    out = tmp_path / "run"
    args = constant_run_args(data, out, constant_ckpt, "--epochs", "2", "--scale-lr")
    res = run(args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "learning rate 0 (--scale-lr: 0 x 2)" in " ".join(res.stdout.split())
    # lr 0 from the constant model: no evaluation beats the starting weights, so there is no best.pth
    run_files = ["config.yml", "latest.pth", "metrics.jsonl", "results.png", "train.log"]
    assert sorted(p.name for p in out.iterdir()) == run_files
    log = (out / "train.log").read_text()
    assert "world size 2" in log and "effective batch 4" in log
    assert log.count("cur metric") == 2  # rank 0 alone writes the log
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    assert len(evals) == 3 and evals[0]["baseline"] and evals[0]["global_step"] == 0
    assert [r["global_step"] for r in records if r["type"] == "train"] == [1, 2, 3, 4]  # 8 images / (2 x 2)
    latest = torch.load(out / "latest.pth", weights_only=True)
    assert latest["world_size"] == 2
    assert not any(k.startswith("module.") for k in latest["state_dict"])

    single = run(["eval", "--weights", str(out / "latest.pth"), "--data-dir", str(ev), "--label-file",
                  str(ev / "labels.txt"), "--device", "cpu", "--limit-side-len", "128",
                  "--json", str(tmp_path / "m.json")])
    assert single.returncode == 0, single.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    for key in ("precision", "recall", "hmean"):
        assert evals[-1][key] == pytest.approx(metrics[key])

    # resume the 2-process run in one process, for one more epoch
    res = run(["resume", str(out), "--epochs", "3"])
    assert res.returncode == 0, res.stderr[-3000:]
    latest = torch.load(out / "latest.pth", weights_only=True)
    assert latest["epoch"] == 3 and latest["world_size"] == 1 and latest["global_step"] == 8


def test_labels_are_validated_once_before_the_launch(tmp_path, data):
    """A bad label line is refused by the launching process: no worker starts, no torchrun failure report."""
    synth, _ = data
    labels = tmp_path / "train.txt"
    lines = synth.train_label.read_text().splitlines()
    labels.write_text("\n".join(lines[:2] + ["train/none.png\t[]"] + lines[2:]) + "\n")
    out = tmp_path / "run"
    args = train_args(synth, out, "--epochs", "1", "--nproc-per-node", "2")
    args[args.index(str(synth.train_label))] = str(labels)
    res = run(args)
    assert res.returncode == 1
    flat = " ".join(res.stderr.split())
    assert f"{labels}:3: " in flat and "--skip-bad" in flat
    assert "torch.distributed" not in res.stderr and "ChildFailedError" not in res.stderr
    assert not out.exists() or not any(out.iterdir())
    # with --skip-bad the launcher hands the validated samples to both ranks, then removes the hand-over file
    res = run(args + ["--skip-bad"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert " ".join(res.stderr.split()).count("skipped 1 bad label line(s)") == 1  # validated once, not per rank
    assert not list(out.glob(".validated_labels*"))


def test_early_stop_on_the_main_process_ends_every_rank(tmp_path, data, constant_ckpt):
    """The stop is decided by rank 0's subscriber after an epoch-end evaluation; rank 1 must follow, not hang."""
    out = tmp_path / "run"
    res = run(constant_run_args(data, out, constant_ckpt, "--epochs", "4", "--patience", "1"), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    latest = torch.load(out / "latest.pth", weights_only=True)
    assert (latest["epoch"], latest["global_step"]) == (1, 2) and latest["stopped"].startswith("early stop")


def test_two_node_run_on_localhost(tmp_path, data):
    synth, _ = data
    out = tmp_path / "run"
    port = str(free_port())
    common = train_args(synth, out, "--epochs", "1", "--nnodes", "2", "--nproc-per-node", "1",
                        "--master-addr", "127.0.0.1", "--master-port", port)
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", OPENOCR_DET_NO_PROGRESS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "openocr_cli", *common, "--node-rank", str(rank)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert "world size 2" in (out / "train.log").read_text()
    assert torch.load(out / "latest.pth", weights_only=True)["epoch"] == 1


def _worker_pids(marker: str, rank: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"OPENOCR_TEST_MARK={marker}".encode() in env and f"RANK={rank}".encode() in env:
            pids.append(int(entry.name))
    return pids


def test_failing_worker_stops_the_whole_run(tmp_path, data):
    synth, _ = data
    marker = uuid.uuid4().hex
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", OPENOCR_DET_NO_PROGRESS="1", OPENOCR_TEST_MARK=marker)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "openocr_cli",
                             *train_args(synth, out, "--epochs", "500", "--nproc-per-node", "2")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not ((out / "metrics.jsonl").exists()
                                              and '"global_step": 2' in (out / "metrics.jsonl").read_text()):
            time.sleep(0.3)
        victims = _worker_pids(marker, "1")
        assert victims, "rank-1 worker not found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        start = time.time()
        proc.communicate(timeout=120)
        assert proc.returncode != 0
        assert time.time() - start < 120
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ctrl_c_stops_all_ranks_cleanly(tmp_path, data):
    """Ctrl-C in a terminal (SIGINT to the whole foreground group): exit 130, latest.pth saved, no traceback."""
    synth, _ = data
    out = tmp_path / "run"
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", OPENOCR_DET_NO_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, "-m", "openocr_cli",
                             *train_args(synth, out, "--epochs", "500", "--nproc-per-node", "2")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not ((out / "metrics.jsonl").exists()
                                              and '"global_step": 3' in (out / "metrics.jsonl").read_text()):
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Resume with: openocr-det resume" in " ".join(stdout.split())
    assert "Traceback" not in stderr
    ckpt = torch.load(out / "latest.pth", weights_only=True)
    assert ckpt["global_step"] >= 3 and ckpt["world_size"] == 2


def test_a_launcher_killed_hard_takes_torchrun_and_its_workers_with_it(tmp_path, data):
    """kill -9 of `openocr-det train --nproc-per-node 2` leaves nothing training on: torchrun ends with it (it runs
    in a session of its own) and its workers with torchrun, saving latest.pth on the way (SIGTERM = stop)."""
    synth, _ = data
    marker = uuid.uuid4().hex
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", OPENOCR_DET_NO_PROGRESS="1", OPENOCR_TEST_MARK=marker)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "openocr_cli",
                             *train_args(synth, out, "--epochs", "500", "--nproc-per-node", "2")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not ((out / "metrics.jsonl").exists()
                                              and '"global_step": 2' in (out / "metrics.jsonl").read_text()):
            time.sleep(0.3)
        workers = _worker_pids(marker, "0") + _worker_pids(marker, "1")
        assert len(workers) == 2, "workers not found"
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.time() + 120
        while time.time() < deadline and _marked_pids(marker):
            time.sleep(0.3)
        assert not _marked_pids(marker), "processes outlived the killed launcher"
        assert torch.load(out / "latest.pth", weights_only=True)["global_step"] >= 2
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _marked_pids(marker):
            os.kill(pid, signal.SIGKILL)


def _marked_pids(marker: str) -> list[int]:
    """Live processes (not zombies) whose environment holds the marker."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if f"OPENOCR_TEST_MARK={marker}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids
