"""openocr_cli.train / resume: training from Python on the command's code path, printing nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import openocr_cli
from openocr_cli.api import training
from openocr_cli.data.synth import generate
from openocr_cli.errors import UserError
from openocr_cli.training.trainer import Trainer

SMALL = {"Train.dataset.transforms.4.EastRandomCropData.size": [96, 96],
         "Eval.dataset.transforms.2.DetResizeForTest.limit_side_len": 128}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synth"), num_train=10, num_test=3, seed=3, size=(96, 128))


def options(synth, out: Path, **extra) -> dict:
    return dict(data_dir=synth.data_dir, train_label=synth.train_label, eval_label=synth.test_label, weights="none",
                output=out, batch_size=4, workers=0, device="cpu", seed=3, overrides=SMALL) | extra


def records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def test_import_is_cheap_and_train_is_lazy():
    code = ("import sys, openocr_cli\nassert openocr_cli.train is openocr_cli.api.training.train\n"
            "assert openocr_cli.resume is openocr_cli.api.training.resume\n"
            "assert openocr_cli.TrainResult is openocr_cli.api.training.TrainResult\nprint('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.split() == ["False"], res.stderr


def test_train_then_resume_from_python_print_nothing_and_match_the_run_files(tmp_path, synth, capfd, monkeypatch):
    """One epoch, resumed to two, then resumed once more (already finished): what train()/resume() return is
    what latest.pth, best.pth and metrics.jsonl say, and nothing reaches stdout or stderr."""
    out = tmp_path / "run"
    hmeans = iter([0.25, 0.5])

    def scored(self):  # a known, rising metric: the first evaluation writes best.pth, the second replaces it
        hmean = next(hmeans)
        return SimpleNamespace(precision=hmean, recall=hmean, hmean=hmean, fps=10.0)

    monkeypatch.setattr(Trainer, "evaluate", scored)
    capfd.readouterr()
    first = openocr_cli.train(**options(synth, out, epochs=1))
    assert capfd.readouterr() == ("", "")
    latest = torch.load(out / "latest.pth", weights_only=True)
    best = torch.load(out / "best.pth", weights_only=True)
    assert first.run_dir == out and first.latest_path == out / "latest.pth" and first.best_path == out / "best.pth"
    assert (first.epoch, first.global_step, first.epochs) == (latest["epoch"], latest["global_step"], 1) == (1, 3, 1)
    assert first.best_hmean == best["metrics"]["hmean"] == records(out, "eval")[-1]["hmean"] == 0.25
    assert first.best_epoch == best["metrics"]["best_epoch"] == 1 and first.metrics == latest["metrics"]
    assert not first.already_finished and first.stopped is None
    assert {"config.yml", "train.log", "results.png"} <= {p.name for p in out.iterdir()}

    second = openocr_cli.resume(out, epochs=2)
    assert capfd.readouterr() == ("", "")
    latest = torch.load(out / "latest.pth", weights_only=True)
    assert (second.epoch, second.global_step) == (latest["epoch"], latest["global_step"]) == (2, 6)
    assert [r["global_step"] for r in records(out, "eval")] == [3, 6]
    assert second.best_hmean == torch.load(out / "best.pth", weights_only=True)["metrics"]["hmean"] == 0.5
    assert second.best_epoch == 2

    again = openocr_cli.resume(out / "latest.pth", progress=True)
    assert again.already_finished and (again.epoch, again.global_step, again.best_hmean) == (2, 6, 0.5)
    assert capfd.readouterr().out == ""


def test_progress_shows_the_run_log_on_stderr_only(tmp_path, synth, capfd):
    capfd.readouterr()
    no_eval = {**SMALL, "Global.print_batch_step": 1, "Eval.dataset.label_file_list": []}
    result = openocr_cli.train(**options(synth, tmp_path / "run", epochs=1, eval_label=None, overrides=no_eval),
                               progress=True)
    out, err = capfd.readouterr()
    assert out == "" and result.best_epoch is None and result.best_path is None and result.global_step == 3
    assert "global_step: 3" in err and "no evaluation labels" in err  # train.log's lines and the warnings


def test_errors_are_the_commands_and_nothing_is_printed(tmp_path, synth, capfd):
    run = tmp_path / "run"
    (run).mkdir()
    (run / "latest.pth").write_bytes(b"")
    capfd.readouterr()
    with pytest.raises(UserError, match="already holds a training run"):
        openocr_cli.train(**options(synth, run, epochs=1))
    with pytest.raises(UserError, match="does not exist"):
        openocr_cli.resume(tmp_path / "nothing")
    with pytest.raises(UserError, match=r"unknown config key `Global.epochs`"):
        openocr_cli.train(**options(synth, tmp_path / "b", overrides=["Global.epochs=3"]))
    assert capfd.readouterr() == ("", "")


def test_the_commands_train_through_the_same_function(cli, tmp_path, synth, monkeypatch):
    seen = []

    def run_job(job, callbacks=(), progress=False, data=None):
        seen.append((job.settings.epochs, job.checkpoint_path, progress))
        raise UserError("stopped by the test")

    monkeypatch.setattr(training, "run_job", run_job)
    args = ["--data-dir", synth.data_dir, "--train-label", synth.train_label, "--weights", "none", "--device", "cpu",
            "--output", tmp_path / "run", "--epochs", "4"]
    code, _, err = cli("train", *args)
    assert code == 1 and "stopped by the test" in err and seen == [(4, None, False)]


# glibc: does a 64 MB block come from the heap (keep_freed_memory) or from its own mapping, unmapped on free (glibc's
# default for blocks above the mmap threshold, at most 32 MB)?
HEAP_PROBE = """
import ctypes, json, sys
import numpy as np
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
def keeps_freed_blocks():
    before = libc.mallinfo2().hblkhd
    block = np.ones(64 << 20, np.uint8)
    mapped = libc.mallinfo2().hblkhd - before >= 64 << 20
    del block
    return not mapped
"""


def run_probe(code: str, *args) -> list[str]:
    done = subprocess.run([sys.executable, "-c", HEAP_PROBE + code, *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_library_leaves_the_allocator_alone_and_a_user_can_opt_in(tmp_path, synth):
    """train() from Python does not change how the host process allocates; keep_freed_memory() opts in."""
    code = ("import openocr_cli\n"
            "data_dir, train_label, out = sys.argv[1:4]\n"
            "openocr_cli.train(data_dir=data_dir, train_label=train_label, eval_label=None, weights='none', epochs=1,"
            " output=out, batch_size=4, workers=0, device='cpu', seed=3, overrides=json.loads(sys.argv[4]) | "
            "{'Eval.dataset.label_file_list': []})\n"
            "print(keeps_freed_blocks(), openocr_cli.keep_freed_memory(), keeps_freed_blocks())\n")
    out = run_probe(code, synth.data_dir, synth.train_label, tmp_path / "run", json.dumps(SMALL))
    assert out == ["False", "True", "True"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_train_command_keeps_freed_memory(tmp_path, synth):
    code = ("from openocr_cli.cli.app import main\n"
            "sys.argv = ['openocr-det', 'train', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print(keeps_freed_blocks())\n")
    args = ["--data-dir", synth.data_dir, "--train-label", synth.train_label, "--weights", "none", "--device", "cpu",
            "--output", tmp_path / "run", "--epochs", "1", "--batch-size", "4", "--workers", "0",
            *(f"-o{key}={json.dumps(value)}" for key, value in SMALL.items()), "-oEval.dataset.label_file_list=[]"]
    assert run_probe(code, *args)[-1] == "True"  # after the run's own output
