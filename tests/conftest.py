"""Shared fixtures: tiny images, label files and checkpoints the tests create themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run `python -m openocr_cli ARGS` as a user would; returns the CompletedProcess."""
    full_env = dict(os.environ, COLUMNS="200", OPENOCR_DET_OFFLINE="1")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "openocr_cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def make_constant_checkpoint(path: Path, prob: float = 0.9) -> Path:
    """A RepViT-DB checkpoint whose probability map is `prob` everywhere (OpenOCR dict layout).

    The binarize head's last layer gets zero weights and logit(prob) as bias, so the detector's
    output is known exactly whatever the input: ideal for end-to-end assertions.
    """
    from openocr_cli.model import build_detector

    torch.manual_seed(0)
    model = build_detector()
    with torch.no_grad():
        model.head.binarize.conv3.weight.zero_()
        model.head.binarize.conv3.bias.fill_(float(np.log(prob / (1 - prob))))
    ckpt = {"epoch": 1, "global_step": 0, "state_dict": model.state_dict(), "optimizer": None,
            "scheduler": None, "config": {}, "metrics": {}}
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="session")
def constant_ckpt(tmp_path_factory) -> Path:
    return make_constant_checkpoint(tmp_path_factory.mktemp("ckpt") / "constant.pth")


@pytest.fixture(scope="session")
def random_ckpt(tmp_path_factory) -> Path:
    from openocr_cli.model import build_detector

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("ckpt") / "random.pth"
    torch.save(build_detector().state_dict(), path)
    return path


def write_image(path: Path, h: int = 96, w: int = 128, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def image_dir(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    write_image(folder / "a.png", 96, 128, 0)
    write_image(folder / "b.jpg", 64, 100, 1)
    write_image(folder / "c.png", 96, 128, 2)
    return folder


def label_line(path: str, regions: list[dict]) -> str:
    return f"{path}\t{json.dumps(regions)}\n"


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the CLI in-process like the console script: returns (exit_code, stdout, stderr)."""
    from openocr_cli.cli.app import main

    monkeypatch.setenv("OPENOCR_DET_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "200")

    def invoke(*args: str):
        monkeypatch.setattr(sys, "argv", ["openocr-det", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
