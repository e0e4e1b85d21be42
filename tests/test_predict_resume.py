"""predict --resume: SIGKILL at random points, torn last lines, then --resume equals one uninterrupted run; a
resume with another model or setting is refused; an unfinished run is not overwritten by accident."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_api import page
from tests.test_onnx_backend import tiny_model

IMAGES = 36


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many")
    for i in range(IMAGES):
        h, w = (180, 260) if i % 3 else (150, 300)  # two network input sizes
        cv2.imwrite(str(root / f"p{i:02d}.png"), page(i % 7, h, w))
    (root / "sub").mkdir()  # a second p00.png: vis/ names it p00_1.png
    cv2.imwrite(str(root / "sub" / "p00.png"), page(3))
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("m") / "tiny.onnx")


def args(folder, model, out, *extra):
    return ["predict", str(folder), "--onnx-model", str(model), "--device", "cpu", "--output", str(out),
            "--workers", "1", *map(str, extra)]


def spawn(argv) -> subprocess.Popen:
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", OPENOCR_DET_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "openocr_cli", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, results: Path, at_bytes: int, timeout: float = 60) -> None:
    """SIGKILL `proc` once `results` holds at least `at_bytes` (0: at once), or when it ends by itself."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if results.exists() and results.stat().st_size >= at_bytes:
            break
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=timeout)


@pytest.mark.parametrize("fmt, recursive", [("txt", True), ("jsonl", False)])
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(cli, tmp_path, folder, model, fmt,
                                                                          recursive):
    name = "det_results.txt" if fmt == "txt" else "det_results.jsonl"
    extra = ["--format", fmt, *(["--recursive"] if recursive else ["--no-vis"])]
    broken = folder / "zz_broken.png"
    broken.write_bytes(b"\x89PNG not an image")  # unreadable: jsonl records it, txt leaves it out (and retries it)
    try:
        code, _, err = cli(*args(folder, model, tmp_path / "ref", *extra))
        assert code == 1 and "zz_broken.png" in err
        reference = (tmp_path / "ref" / name).read_bytes()
        assert len(reference.splitlines()) == IMAGES + (1 if recursive else 0) + (fmt == "jsonl")
        out = tmp_path / "out"
        results = out / name
        rng = random.Random(7 if fmt == "txt" else 8)
        for round_ in range(4):
            size = results.stat().st_size if results.exists() else 0
            # round 0: killed while starting; then somewhere in what is left
            at = 0 if round_ == 0 else size + rng.randrange(1, max(2, len(reference) - size) // 2 + 1)
            proc = spawn([*args(folder, model, out, *extra), "--resume"])
            kill_when(proc, results, at)
            assert not results.exists() or reference.startswith(results.read_bytes().rpartition(b"\n")[0])
            if round_ == 2 and results.exists():  # a torn last line: half a line and no newline
                with open(results, "ab") as f:
                    f.write(reference.splitlines(keepends=True)[5][:17])
            if round_ == 3 and results.exists():  # invalid JSON that ends with a newline
                with open(results, "ab") as f:
                    f.write(b'{"image": "x", "detec\n' if fmt == "jsonl" else b"x.png\t[{\"points\": [[1,\n")
        code, stdout, err = cli(*args(folder, model, out, *extra), "--resume")
        assert code == 1 and "zz_broken.png" in err and "Traceback" not in err  # reported again, as one run does
        assert results.read_bytes() == reference
        if recursive:
            assert sorted(os.listdir(out / "vis")) == sorted(os.listdir(tmp_path / "ref" / "vis"))
            assert "p00_1.png" in os.listdir(out / "vis")
            for drawn in os.listdir(out / "vis"):
                assert (out / "vis" / drawn).read_bytes() == (tmp_path / "ref" / "vis" / drawn).read_bytes(), drawn
        record = json.loads((out / "run.json").read_text())
        assert record["status"] == "finished" and record["resumed"] >= 1
        # a finished run resumed again does nothing and changes nothing
        code, stdout, _ = cli(*args(folder, model, out, *extra), "--resume")
        assert results.read_bytes() == reference and "already recorded" in stdout
    finally:
        broken.unlink()


def test_resume_runs_only_the_missing_images(cli, tmp_path, folder, model):
    out = tmp_path / "out"
    code, _, err = cli(*args(folder, model, out, "--no-vis"))
    assert code == 0, err
    full = (out / "det_results.txt").read_bytes()
    lines = full.splitlines(keepends=True)
    (out / "det_results.txt").write_bytes(b"".join(lines[:30]) + lines[30][:40])  # 30 done, one torn
    code, stdout, err = cli(*args(folder, model, out, "--no-vis"), "--resume")
    assert code == 0, err
    assert (out / "det_results.txt").read_bytes() == full
    assert "removed a torn last line" in " ".join(err.split())
    rows = dict(re.findall(r"│ (\S.*?) +│ +(\S+) │", stdout))
    assert int(rows["images"]) == IMAGES - 30 and int(rows["already recorded (skipped)"]) == 30


def test_resume_with_other_settings_or_model_is_refused(cli, tmp_path, folder, model):
    out = tmp_path / "out"
    assert cli(*args(folder, model, out, "--no-vis"))[0] == 0
    before = (out / "det_results.txt").read_bytes()
    for extra, named in ((["--box-thresh", "0.5"], "box_thresh: recorded 0.6, now 0.5"),
                         (["--limit-side-len", "640"], "limit_side_len"),
                         (["--format", "jsonl"], "--format"),
                         (["--recursive"], "--recursive"),
                         ([], "drawing"),  # vis on now
                         (["--shard", "1/2"], "--shard")):
        code, stdout, err = cli(*args(folder, model, out, *extra, *([] if extra == [] else ["--no-vis"])), "--resume")
        assert code == 2, extra
        assert named in " ".join(err.split()) and "Traceback" not in err + stdout, (extra, err)
    code, _, err = cli(*args(folder / "p0*.png", model, out, "--no-vis"), "--resume")
    assert code == 2 and "SOURCE" in err
    other = tmp_path / "m2"
    other.mkdir()
    tiny_model(other / model.name, batch=1)  # another model file under the same name
    code, _, err = cli(*args(folder, other / model.name, out, "--no-vis"), "--resume")
    assert code == 2 and "model file sha256" in " ".join(err.split())
    assert (out / "det_results.txt").read_bytes() == before  # nothing was touched


def test_unfinished_runs_are_not_replaced_by_accident(cli, tmp_path, folder, model):
    out = tmp_path / "out"
    proc = spawn(args(folder, model, out, "--no-vis"))
    kill_when(proc, out / "det_results.txt", 1)
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    code, _, err = cli(*args(folder, model, out, "--no-vis"))
    assert code == 2 and "did not finish" in err and "--resume" in err and "--overwrite" in err
    code, _, err = cli(*args(folder, model, out, "--no-vis", "--overwrite"))
    assert code == 0, err
    assert len((out / "det_results.txt").read_text().splitlines()) == IMAGES
    code, _, err = cli(*args(folder, model, out, "--no-vis"))  # a finished run is replaced, as always
    assert code == 0, err
    # --resume with nothing recorded starts the run; a results file from elsewhere is not resumed
    fresh = tmp_path / "fresh"
    code, _, err = cli(*args(folder, model, fresh, "--no-vis"), "--resume")
    assert code == 0 and "nothing recorded" in err
    alien = tmp_path / "alien"
    alien.mkdir()
    (alien / "det_results.txt").write_text("a.png\t[]\n")
    code, _, err = cli(*args(folder, model, alien, "--no-vis"), "--resume")
    assert code == 2 and "run.json" in err


def test_a_damaged_line_before_the_last_is_refused(cli, tmp_path, folder, model):
    out = tmp_path / "out"
    assert cli(*args(folder, model, out, "--no-vis"))[0] == 0
    lines = (out / "det_results.txt").read_bytes().splitlines(keepends=True)
    (out / "det_results.txt").write_bytes(b"".join(lines[:3]) + b"no tab here\n" + b"".join(lines[3:10]))
    code, _, err = cli(*args(folder, model, out, "--no-vis"), "--resume")
    assert code == 1 and "det_results.txt:4" in err and "Traceback" not in err


def test_devices_run_killed_then_resumed_equals_one_process(cli, tmp_path, model):
    small = tmp_path / "small"  # 600 tiny images: the run lasts long enough to be killed half way
    small.mkdir()
    for i in range(600):
        image = np.full((16, 24, 3), 20, np.uint8)
        image[4:12, 2 + i % 8:20] = 240
        cv2.imwrite(str(small / f"s{i:03d}.png"), image)
    code, _, err = cli(*args(small, model, tmp_path / "ref", "--no-vis", "--batch-size", "2"))
    assert code == 0, err
    reference = (tmp_path / "ref" / "det_results.txt").read_bytes()
    out = tmp_path / "out"
    argv = [a for a in args(small, model, out, "--no-vis", "--batch-size", "2") if a not in ("--device", "cpu")]
    proc = spawn([*argv, "--devices", "cpu,cpu"])
    kill_when(proc, out / "det_results.txt", len(reference) // 3)
    partial = (out / "det_results.txt").read_bytes()
    assert 0 < len(partial) < len(reference) and proc.returncode == -signal.SIGKILL
    assert reference.startswith(partial.rpartition(b"\n")[0])  # the parent writes in input order
    code, _, err = cli(*argv, "--devices", "cpu,cpu", "--resume")
    assert code == 0, err
    assert (out / "det_results.txt").read_bytes() == reference
