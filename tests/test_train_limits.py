"""A learning rate that makes training diverge (issue 35, D13): the run stops with a message that names the learning
rate, not the batches' images, and exits non-zero; `-o Optimizer.lr=1e9` is a number."""

from __future__ import annotations

import torch

from openocr_cli.config import parse_override
from tests.test_train import synth, train_args  # noqa: F401  (the synthetic data set fixture)


def test_D13_an_exponent_override_is_a_number():
    assert parse_override("Optimizer.lr=1e9") == (["Optimizer", "lr"], 1e9)
    assert parse_override("Optimizer.lr=5E-4") == (["Optimizer", "lr"], 5e-4)
    assert parse_override("Global.name=1e9x") == (["Global", "name"], "1e9x")


def test_D13_a_learning_rate_that_diverges_every_step_stops_the_run_and_says_so(cli, tmp_path, synth):  # noqa: F811
    out = tmp_path / "run"
    code, _, err = cli(*train_args(synth, out, "--epochs", "2", "-o", "Optimizer.lr=1e9",
                                   "-o", "LRScheduler.warmup_epoch=0"))
    flat = " ".join(err.split())
    assert code == 1, err
    assert "learning rate is too high" in flat and "whatever their images" in flat and "--lr" in flat
    assert "steps in a row" in flat  # the repeated warnings stop blaming the images
    for path in out.glob("*.pth"):
        ckpt = torch.load(path, weights_only=True)
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())
