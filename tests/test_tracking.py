"""Experiment tracking: TensorBoard event files and a local MLflow store, read back; resume, failures, DDP."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

import pytest
import torch

import openocr_cli
from openocr_cli import config as cfgmod
from openocr_cli.data.synth import generate
from openocr_cli.errors import UserError
from openocr_cli.training import tracking
from openocr_cli.training.settings import TrainSettings, apply_flags
from tests.test_imports import BLOCKER

SMALL = ["Train.dataset.transforms.4.EastRandomCropData.size=[96, 96]",
         "Eval.dataset.transforms.2.DetResizeForTest.limit_side_len=128", "Global.print_batch_step=1"]
LOSSES = ("train/loss", "train/loss_shrink_maps", "train/loss_threshold_maps", "train/loss_binary_maps")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synth"), num_train=8, num_test=3, seed=3, size=(96, 128))


@pytest.fixture(autouse=True)
def local_mlflow(tmp_path, monkeypatch):
    """No MLFLOW_TRACKING_URI: the tracker's default, ./mlruns, in the test's folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    for name in ("MLFLOW_ALLOW_FILE_STORE", "MLFLOW_DISABLE_TELEMETRY"):  # the tracker sets them; restored after
        monkeypatch.setenv(name, os.environ.get(name, "true"))
    return tmp_path / "mlruns"


def train(synth, out: Path, **options):
    options = {"weights": "none", "epochs": 2, "batch_size": 4, "workers": 0, "device": "cpu", "seed": 7,
               "overrides": SMALL, **options}
    return openocr_cli.train(synth.data_dir, synth.train_label, synth.test_label, output=out, **options)


def tensorboard_events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def mlflow_client(store: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.resolve().as_uri())


def only_run(client):
    experiment = client.get_experiment_by_name("openocr-det")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def artifacts(client, run_id: str, folder=None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, folder):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_both_trackers_record_the_run_and_resume_continues_it(synth, tmp_path, local_mlflow, monkeypatch):
    from openocr_cli.training.trainer import Trainer

    evaluate, better = Trainer.evaluate, count(1)

    def rising(self):  # every evaluation beats the last, so best.pth is written (and kept by MLflow) each time
        result = evaluate(self)
        result.hmean = next(better) / 10
        return result

    monkeypatch.setattr(Trainer, "evaluate", rising)
    out = tmp_path / "run"
    first = train(synth, out, log=["tensorboard", "mlflow"])
    assert first.global_step == 4  # 8 images / batch 4 -> 2 steps per epoch

    events = tensorboard_events(out / "tensorboard")
    tags = events.Tags()
    for tag in (*LOSSES, "train/lr", "train/data_wait", "train/skipped_steps", "eval/precision", "eval/recall",
                "eval/hmean", "eval/best_hmean"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("eval/hmean")] == [2, 4]
    assert [e.value for e in events.Scalars("eval/hmean")] == pytest.approx([0.1, 0.2])
    assert len(tags["images"]) == 3  # the first three evaluation images, drawn
    image = events.Images(tags["images"][0])
    assert [i.step for i in image] == [2, 4] and image[0].width == 128 and image[0].height == 96
    assert "config/text_summary" in tags["tensors"]

    client = mlflow_client(local_mlflow)  # the default store: ./mlruns
    run = only_run(client)
    run_id = run.info.run_id
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert set(run.data.metrics) >= {*LOSSES, "train/lr", "eval/hmean", "eval/recall", "eval/precision"}
    assert steps(client, run_id, "train/loss") == [1, 2, 3, 4]
    assert run.data.params["Global.epoch_num"] == "2" and run.data.params["Optimizer.lr"] == "0.001"
    assert run.data.params["Global.use_mlflow"] == "True"
    files = artifacts(client, run_id)
    assert {"checkpoints/best.pth", "checkpoints/latest.pth", "config.yml"} <= files
    assert sum(f.startswith("eval_images/step_0000002/") for f in files) == 3
    assert torch.load(out / "latest.pth", weights_only=True)["tracking"]["mlflow"]["run_id"] == run_id
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("previews" not in r for r in records)  # metrics.jsonl keeps its layout

    # resume: the same TensorBoard folder with the steps going on, the same MLflow run
    second = openocr_cli.resume(out, epochs=3)
    assert second.global_step == 6
    events = tensorboard_events(out / "tensorboard")
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("eval/hmean")] == [2, 4, 6]
    run = only_run(client)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert steps(client, run_id, "train/loss") == [1, 2, 3, 4, 5, 6]
    assert run.data.tags["resumed.Global.epoch_num"] == "3"  # MLflow params cannot change: the new value
    assert any(f.startswith("eval_images/step_0000006/") for f in artifacts(client, run_id))


def test_tensorboard_resume_hides_what_was_logged_after_the_checkpoint(synth, tmp_path):
    """A process that died after latest.pth logged steps the resumed run repeats: TensorBoard shows them once."""
    out = tmp_path / "run"
    train(synth, out, log="tensorboard", epochs=1)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out / "tensorboard")) as crashed:  # steps 3, 4 of a process that died before saving
        for step in (3, 4):
            crashed.add_scalar("train/loss", 99.0, step)
    openocr_cli.resume(out, epochs=2)
    losses = tensorboard_events(out / "tensorboard").Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4] and 99.0 not in [e.value for e in losses]


def test_config_turns_tensorboard_on_and_log_adds_trackers(tmp_path):
    cfg = cfgmod.apply_overrides(cfgmod.load_config(), ["Global.use_tensorboard=true"])
    assert TrainSettings.from_config(cfg).trackers == ("tensorboard",)
    both = apply_flags(cfg, log=["mlflow"])
    assert TrainSettings.from_config(both).trackers == ("tensorboard", "mlflow")
    assert TrainSettings.from_config(cfgmod.load_config()).trackers == ()
    with pytest.raises(UserError, match="--log wandb is not a tracker") as info:
        apply_flags(cfg, log=["wandb"])
    assert info.value.exit_code == 2
    params = tracking.flatten(cfgmod.load_config())
    assert params["Global.epoch_num"] == "500"
    assert params["Train.dataset.transforms.4.EastRandomCropData.size"] == "[640, 640]"
    assert all(len(v) <= tracking.MAX_PARAM_CHARS for v in params.values())


def test_a_failing_tracker_warns_once_and_training_goes_on(synth, tmp_path, monkeypatch, caplog):
    def broken(self, *args):
        raise OSError("disk full")

    monkeypatch.setattr(tracking.TensorBoardTracker, "scalars", broken)  # fails at the first step
    monkeypatch.setattr(tracking.MlflowTracker, "open", broken)  # fails before the first step
    with caplog.at_level(logging.WARNING, logger="openocr_cli"):
        result = train(synth, tmp_path / "run", log=["tensorboard", "mlflow"])
    assert result.global_step == 4 and (tmp_path / "run" / "latest.pth").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.name == "openocr_cli.training.tracking"]
    assert len(warnings) == 2, warnings
    assert any("TensorBoard logging failed (step 1: OSError: disk full)" in w for w in warnings)
    assert any("MLflow logging failed (start" in w for w in warnings)
    assert all("training goes on" in w for w in warnings)


@pytest.mark.parametrize("tracker, package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow-skinny")])
def test_a_missing_tracker_package_is_a_clear_error_before_training(synth, tmp_path, tracker, package):
    out = tmp_path / "run"
    code = (f"BLOCKED = ({tracker!r},)\n{BLOCKER}import sys\nfrom openocr_cli.cli.app import main\n"
            f"sys.argv = ['openocr-det', 'train', '--data-dir', {str(synth.data_dir)!r}, '--train-label', "
            f"{str(synth.train_label)!r}, '--weights', 'none', '--device', 'cpu', '--output', {str(out)!r}, "
            f"'--log', {tracker!r}]\nmain()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OPENOCR_DET_OFFLINE": "1", "COLUMNS": "200"})
    assert res.returncode == 1, res.stdout + res.stderr
    flat = " ".join(res.stderr.split())
    assert f"pip install {package}" in flat and "openocr-det[track]" in flat and "Traceback" not in flat
    assert "checking the training labels" not in res.stdout and not out.exists()  # refused before the data check


def test_training_without_tracking_imports_neither_package(synth, tmp_path):
    code = ("import sys, openocr_cli\n"
            f"openocr_cli.train({str(synth.data_dir)!r}, {str(synth.train_label)!r}, {str(synth.test_label)!r}, "
            f"weights='none', epochs=1, batch_size=4, workers=0, device='cpu', output={str(tmp_path / 'run')!r}, "
            f"overrides={SMALL!r})\n"
            "print(sorted(m for m in ('tensorboard', 'mlflow') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OPENOCR_DET_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"
    assert not (tmp_path / "run" / "tensorboard").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_a_two_process_run_logs_once(synth, tmp_path):
    out, store = tmp_path / "run", tmp_path / "store"
    args = ["train", "--data-dir", str(synth.data_dir), "--train-label", str(synth.train_label), "--eval-label",
            str(synth.test_label), "--weights", "none", "--device", "cpu", "--output", str(out), "--batch-size", "2",
            "--workers", "0", "--epochs", "2", "--nproc-per-node", "2", "--log", "tensorboard", "--log", "mlflow",
            *[x for o in SMALL for x in ("-o", o)]]
    env = {**os.environ, "OPENOCR_DET_OFFLINE": "1", "OPENOCR_DET_NO_PROGRESS": "1", "COLUMNS": "200",
           "MLFLOW_TRACKING_URI": store.as_uri()}
    res = subprocess.run([sys.executable, "-m", "openocr_cli", *args], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((out / "tensorboard").iterdir())) == 1  # one events file: rank 0's
    events = tensorboard_events(out / "tensorboard")
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]  # 8 images / (2 x 2), each step once
    client = mlflow_client(store)
    run = only_run(client)
    assert steps(client, run.info.run_id, "train/loss") == [1, 2, 3, 4]
    assert steps(client, run.info.run_id, "eval/hmean") == [2, 4]
    assert not (tmp_path / "mlruns").exists()  # MLFLOW_TRACKING_URI was honoured


def test_skipped_steps_and_previews_reach_every_tracker(tmp_path):
    """The shared part of the trackers, without a package: what a step and an evaluation turn into."""
    from types import SimpleNamespace

    import numpy as np

    from openocr_cli.data.labels import LabelSample
    from openocr_cli.evaluation.evaluator import _score
    from openocr_cli.training.callbacks import EvalReport, StepReport
    from tests.conftest import write_image

    class Recorder(tracking.Tracker):
        def __init__(self):
            super().__init__()
            self.active, self.seen = True, []

        def scalars(self, values, step):
            self.seen.append((step, values))

        def image(self, tag, name, rgb, step):
            self.seen.append((step, tag, name, rgb.shape))

    trainer = SimpleNamespace(state=SimpleNamespace(skipped_steps=1), output_dir=tmp_path)
    recorder = Recorder()
    recorder.on_step(trainer, StepReport(1, 1, 1, 0.0, 1.0, {}, nonfinite_images=["a.png"]))
    recorder.on_step(trainer, StepReport(1, 2, 2, 0.0, 1.0, {}))  # neither a logging step nor a skipped one
    assert recorder.seen == [(1, {"train/skipped_steps": 1})]
    image = write_image(tmp_path / "big.png", 720, 1280)
    box = np.array([[10, 10], [300, 10], [300, 80], [10, 80]], dtype=np.float32)
    sample = LabelSample("big.png", image, [box], ["x"], [False])
    report = EvalReport(1, 2, 1.0, 1.0, 1.0, None, 1.0, False, previews=[_score(sample, [box])])
    recorder.on_eval(trainer, report)
    assert recorder.seen[-1] == (2, "eval_images/0", "big", (360, 640, 3))  # drawn, RGB, at most 640 px
    assert recorder.seen[-2][1]["eval/hmean"] == 1.0 and recorder.seen[-2][1]["eval/fps"] == 0.0


@pytest.mark.slow
def test_ctrl_c_marks_the_mlflow_run_killed_and_resume_finishes_the_same_run(synth, tmp_path, local_mlflow):
    out = tmp_path / "run"
    overrides = [arg for item in SMALL for arg in ("-o", item)]
    common = ["--device", "cpu", "--workers", "0"]
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "openocr_cli", "train", "--data-dir", str(synth.data_dir),
                             "--train-label", str(synth.train_label), "--eval-label", str(synth.test_label),
                             "--weights", "none", "--output", str(out), "--epochs", "50", "--batch-size", "4",
                             "--log", "mlflow", *common, *overrides], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and '"global_step": 2' in metrics.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    client = mlflow_client(local_mlflow)
    killed = only_run(client)
    assert killed.info.status == "KILLED"

    res = subprocess.run([sys.executable, "-m", "openocr_cli", "resume", str(out), "--epochs", "2"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    resumed = only_run(client)  # the same run, not a second one
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    assert max(steps(client, resumed.info.run_id, "train/loss")) >= 4
