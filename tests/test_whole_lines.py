"""Output piped or in a narrow terminal keeps every identifying value whole on one line:
benchmark's table rows, training's log lines, long messages."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from openocr_cli.data.synth import generate
from tests.conftest import REPO, run_cli, write_image
from tests.test_onnx_backend import tiny_model

LONG = "det_model_with_a_rather_long_identifying_name_v2"


@pytest.fixture
def two_models(tmp_path):
    onnx_a = tiny_model(tmp_path / f"{LONG}_a.onnx")
    onnx_b = tiny_model(tmp_path / f"{LONG}_b.onnx")
    images = tmp_path / "imgs"
    for i in range(2):
        write_image(images / f"{i}.png", 48, 64, i)
    return [onnx_a, onnx_b], images


def bench_args(models: list[Path], images: Path) -> list[str]:
    return ["benchmark", "--onnx-model", str(models[0]), "--onnx-model", str(models[1]), "--images", str(images),
            "--sizes", "32", "--runs", "1"]


def rows_naming(out: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if name in line and "│" in line]


def test_benchmark_piped_at_60_columns_keeps_each_row_on_one_line(two_models):
    models, images = two_models
    res = run_cli(*bench_args(models, images), env={"COLUMNS": "60"})
    assert res.returncode == 0, res.stderr
    for model in models:
        rows = rows_naming(res.stdout, model.name)
        assert len(rows) == 1 and "onnx" in rows[0] and "32" in rows[0]  # the whole row on one line
    table_lines = [line for line in res.stdout.splitlines() if "│" in line]
    assert len(table_lines) == 2 and all("…" not in line for line in res.stdout.splitlines())


def test_benchmark_in_a_60_column_terminal_never_cuts_the_model_name(two_models):
    models, images = two_models
    main, child = pty.openpty()
    env = dict(os.environ, COLUMNS="60", OPENOCR_DET_OFFLINE="1", OPENOCR_DET_NO_PROGRESS="1", TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-m", "openocr_cli", *bench_args(models, images)], cwd=REPO,
                            stdout=child, stderr=subprocess.DEVNULL, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    os.close(main)
    out = b"".join(chunks).decode("utf-8", "replace")
    for model in models:
        assert len(rows_naming(out, model.name)) == 1  # the identifying column is never wrapped or cut


@pytest.mark.slow
def test_train_written_to_a_file_has_whole_log_lines(tmp_path):
    paths = generate(tmp_path / "d", num_train=4, num_test=1, seed=3, size=(64, 64))
    out = tmp_path / f"{LONG}_output_folder"
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        res = subprocess.run([sys.executable, "-m", "openocr_cli", "train", "--data-dir", str(paths.data_dir),
                              "--train-label", str(paths.train_label), "--eval-label", str(paths.test_label),
                              "--weights", "none", "--device", "cpu", "--output", str(out), "--batch-size", "2",
                              "--workers", "0", "--epochs", "1", "-o", "Global.print_batch_step=1",
                              "-o", "Train.dataset.transforms.4.EastRandomCropData.size=[64, 64]",
                              "-o", "Eval.dataset.transforms.2.DetResizeForTest.limit_side_len=64"],
                             stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, COLUMNS="60"), timeout=1200)
    text = log.read_text()
    assert res.returncode == 0, text
    steps = [line for line in text.splitlines() if line.startswith("epoch 1 step")]
    assert len(steps) == 2 and all("shrink" in line and "img/s" in line for line in steps)  # each one line
    assert any(str(out / "latest.pth") in line for line in text.splitlines())  # the written paths, whole
