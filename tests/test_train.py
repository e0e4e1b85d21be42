"""Training engine: run files, exact resume, Ctrl-C, data validation, flag/config plumbing."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from openocr_cli import config as cfgmod
from openocr_cli.data.synth import generate
from openocr_cli.training.callbacks import RunLog
from openocr_cli.training.run_data import load_run_data
from openocr_cli.training.schedules import cosine_factor
from openocr_cli.training.settings import TrainSettings, apply_flags
from openocr_cli.training.trainer import Trainer
from tests.conftest import label_line

CROP = 96
SMALL = ["-o", f"Train.dataset.transforms.4.EastRandomCropData.size=[{CROP}, {CROP}]",
         "-o", "Eval.dataset.transforms.2.DetResizeForTest.limit_side_len=128"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synth"), num_train=10, num_test=3, seed=3, size=(96, 128))


def small_settings(synth, out: Path, epochs: int = 2, workers: int = 0, batch: int = 4, overrides=(),
                   **extra) -> TrainSettings:
    cfg = cfgmod.apply_overrides(cfgmod.load_config(), [s for s in SMALL if s != "-o"] + list(overrides))
    cfg = apply_flags(cfg, data_dir=synth.data_dir, train_label=[synth.train_label], eval_label=[synth.test_label],
                      weights="none", output=out, epochs=epochs, batch_size=batch, workers=workers, device="cpu",
                      seed=7, eval_every=extra.get("eval_every", 0), save_every=extra.get("save_every"))
    return TrainSettings.from_config(cfg)


def train_args(synth, out: Path, *extra: str) -> list[str]:
    return ["train", "--data-dir", str(synth.data_dir), "--train-label", str(synth.train_label),
            "--eval-label", str(synth.test_label), "--weights", "none", "--device", "cpu", "--output", str(out),
            "--batch-size", "4", "--workers", "0", "--seed", "3", *SMALL, *extra]


def test_lr_schedule_matches_openocr():
    assert cosine_factor(0, 250, 62500) == 0.0  # the first optimizer step runs at lr 0
    assert cosine_factor(125, 250, 62500) == 0.5
    assert cosine_factor(250, 250, 62500) == 1.0
    assert cosine_factor(62500, 250, 62500) == pytest.approx(0.0)
    assert cosine_factor(250 + (62500 - 250) // 2, 250, 62500) == pytest.approx(0.5)


def test_train_writes_every_run_file(cli, tmp_path, synth):
    out = tmp_path / "run"
    code, stdout, err = cli(*train_args(synth, out, "--epochs", "2", "-o", "Global.print_batch_step=1"))
    assert code == 0, err + stdout
    assert "usable images" in stdout and "empty training crops" in stdout  # the check-data pre-flight
    for name in ("latest.pth", "config.yml", "train.log", "metrics.jsonl", "results.png"):
        assert (out / name).is_file(), name
    latest = torch.load(out / "latest.pth", weights_only=True)
    for key in ("epoch", "global_step", "state_dict", "optimizer", "scheduler", "config", "metrics"):
        assert key in latest
    assert latest["epoch"] == 2 and latest["global_step"] == 6  # 10 images / batch 4 -> 3 steps per epoch
    assert latest["scheduler"]["last_epoch"] == 6
    assert not any(k.startswith("module.") for k in latest["state_dict"])
    if latest["metrics"]["hmean"] > 0:  # best.pth only for a strict gain over the start (hmean 0 here)
        best = torch.load(out / "best.pth", weights_only=True)
        assert best["optimizer"] is None and best["metrics"]["best_epoch"] in (1, 2)
    else:
        assert not (out / "best.pth").exists()
    config = yaml.safe_load((out / "config.yml").read_text())
    assert config["Global"]["epoch_num"] == 2 and config["Train"]["loader"]["batch_size_per_card"] == 4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["type"] == "train"]
    assert [r["global_step"] for r in train_records] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "loss_shrink_maps", "loss_threshold_maps", "loss_binary_maps", "lr"} <= set(train_records[0])
    assert all(0 <= r["data_wait"] <= 1 for r in train_records)
    assert sum(r["type"] == "eval" for r in records) == 2
    log = (out / "train.log").read_text()
    assert "global_step: 6" in log and "cur metric" in log
    assert "training finished" in stdout
    # the checkpoint our trainer writes loads strictly into a fresh model, like OpenOCR's loader does
    from openocr_cli.model import build_detector

    build_detector().load_state_dict(latest["state_dict"], strict=True)
    # refuses to overwrite an existing run
    code, _, err = cli(*train_args(synth, out, "--epochs", "2"))
    assert code == 1 and "resume" in err


@pytest.mark.parametrize("workers", [2])
def test_resume_is_exact(tmp_path, synth, workers):
    """N steps straight == N/2 steps, stop, resume, N/2 more (mid-epoch stop, workers > 0)."""
    straight_dir, split_dir = tmp_path / "straight", tmp_path / "split"
    settings = small_settings(synth, straight_dir, epochs=2, workers=workers)
    data = load_run_data(settings, skip_bad=False)
    straight = Trainer(settings, data, torch.device("cpu"))
    straight.train()
    assert straight.state.global_step == 6

    first = Trainer(small_settings(synth, split_dir, epochs=2, workers=workers), data, torch.device("cpu"))
    first.train(stop_after=4)  # epoch 2, after its first of three steps
    ckpt = torch.load(split_dir / "latest.pth", weights_only=True)
    assert (ckpt["epoch"], ckpt["epoch_step"], ckpt["global_step"]) == (2, 1, 4)
    second = Trainer(TrainSettings.from_config(ckpt["config"]), data, torch.device("cpu"), resume=ckpt)
    second.train()
    assert second.state.global_step == 6
    a, b = straight.model.state_dict(), second.model.state_dict()
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert diff <= 1e-6
    assert second.state.best["hmean"] == pytest.approx(straight.state.best["hmean"])


def test_resume_may_switch_the_decode_cache_and_stays_exact(tmp_path, synth, monkeypatch):
    """The cache gives bit-identical samples, so `resume --cache disk` continues the same run exactly."""
    from openocr_cli.api import training
    from openocr_cli.training.jobs import plan_resume
    from openocr_cli.training.options import TrainOptions

    monkeypatch.setenv("OPENOCR_DET_HOME", str(tmp_path / "home"))
    straight = Trainer(small_settings(synth, tmp_path / "straight"), load_run_data(
        small_settings(synth, tmp_path / "straight"), skip_bad=False), torch.device("cpu"))
    straight.train()
    split = small_settings(synth, tmp_path / "split")
    Trainer(split, load_run_data(split, skip_bad=False), torch.device("cpu")).train(stop_after=4)
    job = plan_resume(tmp_path / "split", TrainOptions(cache="disk"))
    assert job.settings.cache == "disk" and split.cache == "none"
    result = training.resume(tmp_path / "split", cache="disk")
    assert result.global_step == 6
    assert "decode cache disk at" in (tmp_path / "split" / "train.log").read_text()
    a = straight.model.state_dict()
    b = torch.load(tmp_path / "split" / "latest.pth", weights_only=True)["state_dict"]
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-6


def test_ctrl_c_saves_and_resume_finishes(tmp_path, synth):
    out = tmp_path / "run"
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "openocr_cli", *train_args(synth, out, "--epochs", "50",
                             "-o", "Global.print_batch_step=1")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and '"global_step": 2' in metrics.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Resume with: openocr-det resume" in " ".join(stdout.split())
    assert "Traceback" not in stderr
    ckpt = torch.load(out / "latest.pth", weights_only=True)
    assert ckpt["global_step"] >= 2 and ckpt["optimizer"] is not None

    res = subprocess.run([sys.executable, "-m", "openocr_cli", "resume", str(out), "--epochs", "2"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert torch.load(out / "latest.pth", weights_only=True)["epoch"] == 2
    res = subprocess.run([sys.executable, "-m", "openocr_cli", "resume", str(out), "--epochs", "2"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "already finished" in res.stdout


def test_resume_refusals(cli, tmp_path, synth):
    code, _, err = cli("resume", tmp_path / "run", "--lr", "0.1")
    assert code == 2 and "--lr cannot change on resume" in " ".join(err.split())
    code, _, err = cli("resume", tmp_path / "nothing")
    assert code == 1 and "does not exist" in err
    best = tmp_path / "best.pth"
    cfg = small_settings(synth, tmp_path / "r").cfg
    torch.save({"epoch": 1, "global_step": 3, "state_dict": {}, "optimizer": None, "scheduler": None,
                "config": cfg, "metrics": {}}, best)
    code, _, err = cli("resume", best)
    assert code == 1 and "latest.pth" in err


def test_finished_run_and_best_pth_are_answered_without_the_data(cli, tmp_path, synth):
    """Refusals that need no data come first: with the data set gone, resume still answers at once."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth.data_dir, data)
    args = ["train", "--data-dir", data, "--train-label", data / synth.train_label.relative_to(synth.data_dir),
            "--eval-label", data / synth.test_label.relative_to(synth.data_dir), "--weights", "none", "--device",
            "cpu", "--output", tmp_path / "run", "--batch-size", "4", "--workers", "0", "--epochs", "1", *SMALL]
    code, _, err = cli(*args)
    assert code == 0, err
    latest = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)
    best = {**latest, "optimizer": None, "scheduler": None}  # OpenOCR's best.pth layout
    torch.save(best, tmp_path / "run" / "best_like.pth")
    shutil.rmtree(data)
    code, stdout, err = cli("resume", tmp_path / "run")
    assert code == 0 and "already finished: 1 of 1 epochs done" in " ".join(stdout.split()), err
    code, _, err = cli("resume", tmp_path / "run" / "best_like.pth")
    assert code == 1 and "no optimizer/scheduler state" in " ".join(err.split())


@pytest.mark.parametrize("line, reason", [
    ("train/0000.png [{\"points\": [[0,0],[9,0],[9,9]]}]", "no TAB"),
    ("train/0000.png\t[{\"points\": [[0,0],[9,0]", "not valid JSON"),
    ("missing.png\t[{\"transcription\": \"a\", \"points\": [[0,0],[9,0],[9,9],[0,9]]}]", "does not exist"),
    ("train/0000.png\t[{\"transcription\": \"a\", \"points\": [[0,0],[9,0]]}]", "at least 3 points"),
    ("train/0000.png\t[{\"transcription\": \"a\", \"points\": [[0,0],[9,\"x\"],[9,9]]}]", "numbers"),
    ("train/0000.png\t[{\"transcription\": \"a\", \"points\": [[0,0],[9,9],[9,0],[0,9]]}]", "self-intersecting"),
    ("broken.png\t[{\"transcription\": \"a\", \"points\": [[0,0],[9,0],[9,9],[0,9]]}]", "cannot be decoded"),
])
def test_bad_training_lines_are_reported_then_skipped(cli, tmp_path, synth, line, reason):
    (synth.data_dir / "broken.png").write_bytes(b"not a png")
    labels = tmp_path / "train.txt"
    good = synth.train_label.read_text().splitlines()[:4]
    labels.write_text("\n".join(good[:2] + [line] + good[2:]) + "\n")
    args = ["train", "--data-dir", str(synth.data_dir), "--train-label", str(labels), "--eval-label",
            str(synth.test_label), "--weights", "none", "--device", "cpu", "--batch-size", "4", "--workers", "0",
            "--epochs", "1", *SMALL]
    code, _, err = cli(*args, "--output", tmp_path / "a")
    flat = " ".join(err.split())
    assert code == 1 and f"{labels}:3: " in flat and reason in flat and "--skip-bad" in flat
    assert not (tmp_path / "a" / "latest.pth").exists()
    code, _, err = cli(*args, "--output", tmp_path / "b", "--skip-bad")
    assert code == 0, err
    assert "skipped 1 bad label line(s), training on 4" in " ".join(err.split())


def test_invalid_do_not_care_polygons_are_accepted(tmp_path, synth):
    from openocr_cli.data.dataset import validate_training_labels

    labels = tmp_path / "train.txt"
    bowtie = [[0, 0], [9, 9], [9, 0], [0, 9]]
    square = [[0, 0], [9, 0], [9, 9], [0, 9]]
    labels.write_text(label_line("train/0000.png", [{"transcription": "###", "points": bowtie},
                                                    {"transcription": "ok", "points": square}]))
    result = validate_training_labels([labels], synth.data_dir)
    assert not result.problems and len(result.samples) == 1


def test_missing_default_data_says_what_to_do(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("train", "--weights", "none", "--device", "cpu")
    flat = " ".join(err.split())
    assert code == 1 and "icdar2015" in flat and "--data-dir" in flat and "make demo" in flat


def test_missing_default_weights_offline_says_what_to_do(cli, tmp_path, synth, monkeypatch):
    monkeypatch.setenv("OPENOCR_DET_HOME", str(tmp_path / "cache"))
    args = [a for a in train_args(synth, tmp_path / "o", "--epochs", "1") if a not in ("--weights", "none")]
    code, _, err = cli(*args)
    flat = " ".join(err.split())
    assert code == 1 and "download" in flat and "Traceback" not in flat


@pytest.mark.slow
def test_demo_learns_offline(tmp_path):
    """`make demo` end to end: from scratch on CPU, hmean must rise well above 0."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    repo = Path(__file__).resolve().parents[1]
    demo = tmp_path / "demo"
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", OPENOCR_DET_NO_PROGRESS="1")
    res = subprocess.run(["make", "-s", "-C", str(repo), "demo-run", f"PY={sys.executable}", f"DEMO={demo}"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    metrics = json.loads((demo / "metrics.json").read_text())
    assert metrics["hmean"] >= 0.3, metrics
    assert (demo / "predict" / "det_results.txt").read_text().count("\n") == 16
    assert len(list((demo / "predict" / "vis").iterdir())) == 16
    assert (demo / "run" / "results.png").stat().st_size > 10_000
    assert "empty training crops" in res.stdout  # make demo shows the check-data summary


def test_resumes_openocr_written_latest_at_next_epoch(cli, tmp_path, synth):
    """A latest.pth in OpenOCR's exact layout (no extra keys) continues at epoch + 1, like OpenOCR."""
    out = tmp_path / "run"
    settings = small_settings(synth, out, epochs=2)
    trainer = Trainer(settings, load_run_data(settings, skip_bad=False), torch.device("cpu"))
    trainer.train(stop_after=2)  # mid-epoch 1 of 3 steps
    ours = torch.load(out / "latest.pth", weights_only=True)
    layout = ("epoch", "global_step", "state_dict", "optimizer", "scheduler", "config", "metrics")
    openocr = {k: ours[k] for k in layout}
    torch.save(openocr, out / "latest.pth")
    code, stdout, err = cli("resume", out)
    assert code == 0, err
    resumed = torch.load(out / "latest.pth", weights_only=True)
    # epoch 1 is taken as finished: only epoch 2 (3 steps) runs after the stored global step 2
    assert (resumed["epoch"], resumed["global_step"]) == (2, 5)


def test_sampler_splits_pads_and_resumes():
    from openocr_cli.data.dataset import ResumableSampler

    ranks = [ResumableSampler(5, seed=1, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(3)
    keys = [list(s) for s in ranks]
    assert [len(k) for k in keys] == [3, 3]
    positions = sorted(p for k in keys for _, p, _ in k)
    assert positions == list(range(6))
    assert sorted({i for k in keys for _, _, i in k}) == [0, 1, 2, 3, 4]  # every sample, one padded twice
    orders = []
    for epoch in (3, 4, 5):
        ranks[0].set_epoch(epoch)
        orders.append(ranks[0]._order())
    assert orders[0] != orders[1] and orders[1] != orders[2]  # every epoch is reshuffled (set_epoch)
    resumed = ResumableSampler(5, seed=1, rank=0, world_size=2)
    resumed.set_epoch(3, start=1)
    assert list(resumed) == keys[0][1:] and len(resumed) == 2
    tiny = ResumableSampler(1, seed=0, rank=3, world_size=4)
    assert [i for _, _, i in tiny] == [0]


class Recorder:
    """A trainer subscriber that keeps every event it sees."""

    def __init__(self):
        self.steps, self.evals, self.epochs, self.ended = [], [], 0, False

    def on_step(self, trainer, report):
        self.steps.append(report)

    def on_eval(self, trainer, report):
        self.evals.append(report)

    def on_epoch_end(self, trainer):
        self.epochs += 1

    def on_train_end(self, trainer):
        self.ended = True


def test_eval_cadence_keeps_its_start_and_window_is_configurable(tmp_path, synth):
    """eval_batch_step [3, 2] evaluates at steps 5, 7, ... (not 2, 4, 6); log_smooth_window sets the median."""
    settings = small_settings(synth, tmp_path / "run", epochs=2, eval_every=None, overrides=[
        "Global.eval_batch_step=[3, 2]", "Global.eval_epoch_step=[100, 1]", "Global.log_smooth_window=2",
        "Global.print_batch_step=1", "Global.save_epoch_step=[1, 1]"])
    seen = Recorder()
    Trainer(settings, load_run_data(settings, skip_bad=False), torch.device("cpu"), callbacks=[seen]).train()
    assert [r.global_step for r in seen.evals] == [5]
    assert seen.epochs == 2 and seen.ended
    assert (tmp_path / "run" / "epoch_2.pth").exists() and not (tmp_path / "run" / "epoch_1.pth").exists()
    losses = [r.losses["loss"] for r in seen.steps]
    for i, report in enumerate(seen.steps):
        window = losses[max(0, i - 1):i + 1]
        assert report.smoothed["loss"] == pytest.approx(sorted(window)[len(window) // 2] if len(window) == 1
                                                        else sum(window) / 2)


def test_subscriber_can_stop_training(tmp_path, synth):
    class StopAtThree(Recorder):
        def on_step(self, trainer, report):
            super().on_step(trainer, report)
            if report.global_step == 3:
                trainer.request_stop("enough")

    settings = small_settings(synth, tmp_path / "run", epochs=5)
    trainer = Trainer(settings, load_run_data(settings, skip_bad=False), torch.device("cpu"),
                      callbacks=[StopAtThree()])
    trainer.train()
    assert trainer.state.global_step == 3 and trainer.stop_reason == "enough"
    assert torch.load(tmp_path / "run" / "latest.pth", weights_only=True)["global_step"] == 3


def test_global_checkpoints_resumes_from_that_file(cli, tmp_path, synth):
    out = tmp_path / "run"
    code, _, err = cli(*train_args(synth, out, "--epochs", "1"))
    assert code == 0, err
    code, stdout, err = cli(*train_args(synth, out, "--epochs", "2", "-o", f"Global.checkpoints={out / 'latest.pth'}"))
    assert code == 0, err
    latest = torch.load(out / "latest.pth", weights_only=True)
    assert (latest["epoch"], latest["global_step"]) == (2, 6)  # continued: 3 steps of epoch 2 after step 3
    code, _, err = cli(*train_args(synth, tmp_path / "x", "--epochs", "1", "-o", "Global.checkpoints=nope.pth"))
    assert code == 1 and "Global.checkpoints" in err and "does not exist" in err


OPENOCR_REPVIT_DB = """\
Global:
  device: gpu
  epoch_num: &epoch_num 500
  log_smooth_window: 20
  print_batch_step: 100
  output_dir: ./output/det_repsvtr_db
  save_epoch_step: [400, 25]
  eval_batch_step:
  - 0
  - 1000
  cal_metric_during_train: false
  checkpoints:
  pretrained_model: openocr_det_repvit_ch.pth
  save_inference_dir: null
  use_tensorboard: false
  infer_img:
  save_res_path: ./checkpoints/det_db/predicts_db.txt
  distributed: true
  model_type: det
Architecture:
  algorithm: DB_mobile
  Backbone: {name: RepSVTR_det}
  Neck: {name: RSEFPN, out_channels: 96, shortcut: True}
  Head: {name: DBHead, k: 50}
Loss: {name: DBLoss, balance_loss: true, main_loss_type: DiceLoss, alpha: 5, beta: 10, ohem_ratio: 3}
Optimizer: {name: Adam, lr: 0.001, weight_decay: 5.0e-05, filter_bias_and_bn: False}
LRScheduler: {name: CosineAnnealingLR, warmup_epoch: 2}
PostProcess: {name: DBPostProcess, thresh: 0.3, box_thresh: 0.6, max_candidates: 1000, unclip_ratio: 1.5,
              score_mode: 'slow'}
Metric: {name: DetMetric, main_indicator: hmean}
Train:
  dataset:
    name: SimpleDataSet
    data_dir: ../icdar2015/text_localization/
    label_file_list: [../icdar2015/text_localization/train_icdar2015_label.txt]
    ratio_list: [1.0]
    transforms:
    - DecodeImage: {img_mode: BGR, channel_first: false}
    - DetLabelEncode: null
    - CopyPaste: null
    - IaaAugment:
        augmenter_args:
        - {type: Fliplr, args: {p: 0.5}}
        - {type: Affine, args: {rotate: [-10, 10]}}
        - {type: Resize, args: {size: [0.5, 3]}}
    - EastRandomCropData: {size: [640, 640], max_tries: 50, keep_ratio: true}
    - MakeBorderMap: {shrink_ratio: 0.4, thresh_min: 0.3, thresh_max: 0.7, total_epoch: *epoch_num}
    - MakeShrinkMap: {shrink_ratio: 0.4, min_text_size: 8, total_epoch: *epoch_num}
    - NormalizeImage: {scale: 1./255., mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: hwc}
    - ToCHWImage: null
    - KeepKeys: {keep_keys: [image, threshold_map, threshold_mask, shrink_map, shrink_mask]}
  loader: {shuffle: true, drop_last: false, batch_size_per_card: 8, num_workers: 8}
Eval:
  dataset:
    name: SimpleDataSet
    data_dir: ../icdar2015/text_localization/
    label_file_list: [../icdar2015/text_localization/test_icdar2015_label.txt]
    transforms:
    - DecodeImage: {img_mode: BGR, channel_first: false}
    - DetLabelEncode: null
    - DetResizeForTest: {limit_side_len: 960, limit_type: max}
    - NormalizeImage: {scale: 1./255., mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: hwc}
    - ToCHWImage: null
    - KeepKeys: {keep_keys: [image, shape, polys, ignore_tags]}
  loader: {shuffle: false, drop_last: false, batch_size_per_card: 1, num_workers: 2}
profiler_options: null
"""


def test_openocr_repvit_db_yml_loads_and_trains_with_ignored_keys_listed_once(cli, tmp_path, synth):
    """OpenOCR's own config (same keys and values, written out here) trains unchanged; keys without effect
    in openocr-det are listed once in train.log."""
    config = tmp_path / "repvit_db.yml"
    config.write_text(OPENOCR_REPVIT_DB)
    out = tmp_path / "run"
    code, stdout, err = cli(*train_args(synth, out, "--epochs", "1", "--config", config))
    assert code == 0, err + stdout
    log = (out / "train.log").read_text()
    ignored = [line for line in log.splitlines() if "(ignored)" in line]
    assert len(ignored) == 1
    for key in ("Global.save_inference_dir", "Global.infer_img", "Global.distributed", "profiler_options"):
        assert key in ignored[0]
    typo = tmp_path / "typo.yml"
    typo.write_text(OPENOCR_REPVIT_DB.replace("print_batch_step", "print_batch_steps"))
    code, stdout, err = cli(*train_args(synth, tmp_path / "t", "--config", typo))
    flat = " ".join(err.split())
    assert code == 1 and "did you mean `Global.print_batch_step`?" in flat
    assert "usable images" not in stdout  # refused before any data was read


def test_debug_prints_the_chained_traceback(cli, tmp_path, monkeypatch):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint at all")
    monkeypatch.setenv("OPENOCR_DET_DEBUG", "")  # --debug sets it in this process; restored afterwards
    code, _, err = cli("export", "--weights", broken, "--output", tmp_path / "m.onnx")
    assert code == 1 and "broken.pth" in err and "Traceback" not in err
    code, _, debug_err = cli("--debug", "export", "--weights", broken, "--output", tmp_path / "m.onnx")
    assert code == 1 and "Traceback" in debug_err and "UnpicklingError" in debug_err
    assert "direct cause" in debug_err  # the original exception is shown, then our one-paragraph message
    assert debug_err.rstrip().endswith(err.rstrip().splitlines()[-1])



def _const_args(synth, out: Path, constant_ckpt: Path, *extra: str) -> list[str]:
    """Fine-tuning from a checkpoint whose output is known, with lr 0: every evaluation equals the start."""
    args = train_args(synth, out, *extra)
    args[args.index("none")] = str(constant_ckpt)
    return args + ["--lr", "0"]


def test_baseline_is_recorded_and_ties_never_write_best(cli, tmp_path, synth, constant_ckpt):
    out = tmp_path / "run"
    code, stdout, err = cli(*_const_args(synth, out, constant_ckpt, "--epochs", "2"))
    assert code == 0, err
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["type"] == "eval"]
    assert (evals[0]["epoch"], evals[0]["global_step"], evals[0]["baseline"]) == (0, 0, True)
    assert len(evals) == 3 and all(e["hmean"] == evals[0]["hmean"] and not e["improved"] for e in evals)
    assert not (out / "best.pth").exists()  # equal to the starting weights is no improvement
    flat = " ".join(stdout.split())
    assert f"fine-tuning did not improve on the starting weights: hmean {evals[0]['hmean']:.4f}" in flat
    latest = torch.load(out / "latest.pth", weights_only=True)
    assert latest["metrics"]["best_epoch"] == 0
    assert "starting weights metric" in (out / "train.log").read_text()


def test_early_stopping_ends_the_run_and_resume_respects_it(cli, tmp_path, synth, constant_ckpt):
    out = tmp_path / "run"
    code, stdout, err = cli(*_const_args(synth, out, constant_ckpt, "--epochs", "5", "--patience", "2"))
    assert code == 0, err
    flat = " ".join(stdout.split())
    assert "training finished (early stop)" in flat and "no hmean gain of at least 0 in 2 evaluations" in flat
    latest = torch.load(out / "latest.pth", weights_only=True)
    assert (latest["epoch"], latest["global_step"]) == (2, 6)  # evaluations after epochs 1 and 2 were stale
    assert latest["stopped"].startswith("early stop") and latest["config"]["Global"]["patience"] == 2
    code, stdout, _ = cli("resume", out)
    assert code == 0 and "already finished: early stop" in " ".join(stdout.split())
    code, stdout, err = cli("resume", out, "--patience", "3")
    assert code == 0, err
    latest = torch.load(out / "latest.pth", weights_only=True)
    assert latest["global_step"] == 9 and latest["stopped"].startswith("early stop")  # one more epoch


def test_background_images_train(cli, tmp_path, synth):
    labels = tmp_path / "train.txt"
    lines = synth.train_label.read_text().splitlines()
    background = [line.split("\t")[0] + "\t[]" for line in lines[:3]]
    labels.write_text("\n".join(lines[3:7] + background) + "\n")
    args = train_args(synth, tmp_path / "run", "--epochs", "1")
    args[args.index(str(synth.train_label))] = str(labels)
    code, _, err = cli(*args)
    assert code == 0, err
    assert "7 train" in (tmp_path / "run" / "train.log").read_text()


class Poison:
    """Makes the model's output NaN while `on` (a fault injected at the model's output)."""

    def __init__(self):
        self.on = False

    def __call__(self, module, inputs, output):
        return output * float("nan") if self.on else output


def test_nonfinite_steps_are_skipped_and_never_saved(tmp_path, synth):
    settings = small_settings(synth, tmp_path / "run", epochs=2, overrides=["Global.max_nonfinite_steps=3"])
    data = load_run_data(settings, skip_bad=False)
    seen = Recorder()
    trainer = Trainer(settings, data, torch.device("cpu"), callbacks=[seen, RunLog(tmp_path / "run")])
    poison = Poison()
    trainer.model.head.register_forward_hook(poison)

    class PoisonSteps(Recorder):
        def on_step(self, trainer, report):
            poison.on = report.global_step in (1, 2)  # steps 2 and 3 see a NaN output

    trainer.callbacks.append(PoisonSteps())
    bn = trainer.model.backbone.modules()
    norms = [m for m in bn if isinstance(m, torch.nn.BatchNorm2d)]
    trainer.train()
    skipped = [r for r in seen.steps if r.nonfinite_images is not None]
    assert [r.global_step for r in skipped] == [2, 3]
    assert [len(r.nonfinite_images) for r in skipped] == [4, 2]  # 10 images in batches of 4: 4, 4, 2
    train_images = {str(s.image) for s in data.train}
    assert all(path in train_images for r in skipped for path in r.nonfinite_images)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in records if r["type"] == "nonfinite"] == [2, 3]
    assert all(torch.isfinite(m.running_mean).all() and torch.isfinite(m.running_var).all() for m in norms)
    latest = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)
    assert latest["global_step"] == 6 and all(torch.isfinite(t).all() for t in latest["state_dict"].values()
                                              if t.is_floating_point())


def test_batch_norm_statistics_are_restored_after_a_skipped_step(tmp_path, synth):
    settings = small_settings(synth, tmp_path / "run", epochs=1)
    trainer = Trainer(settings, load_run_data(settings, skip_bad=False), torch.device("cpu"))
    poison = Poison()
    poison.on = True
    trainer.model.head.register_forward_hook(poison)
    before = [b.clone() for b in trainer.batch_norm_buffers]
    trainer.model.train()
    assert trainer._step(next(iter(trainer.loader))) is None
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.batch_norm_buffers))


def test_a_run_that_stays_nonfinite_stops_with_exit_1(cli, tmp_path, synth):
    """lr 1e30 makes every weight overflow after the first update: every later step is non-finite."""
    out = tmp_path / "run"
    code, _, err = cli(*train_args(synth, out, "--epochs", "1", "--lr", "1e30", "-o", "Global.max_nonfinite_steps=2",
                                   "-o", "LRScheduler.warmup_epoch=0"))
    flat = " ".join(err.split())
    assert code == 1 and "consecutive steps had a non-finite loss or gradients" in flat and "--lr" in flat
    assert "check-data" in flat and "mixed precision" not in flat  # this run trains in float32
    for path in out.glob("*.pth"):
        ckpt = torch.load(path, weights_only=True)
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())


def test_data_wait_warning_is_given_once(capsys, tmp_path):
    """An epoch that waited for data more than 30 % of its time is reported once, in train.log and on screen
    (train.log's logger is a child of the library's, whose console handler leaves its lines to the display)."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from openocr_cli.cli import ui
    from openocr_cli.cli.training_display import TrainDisplay
    from openocr_cli.log import logger
    from openocr_cli.training.run import train_log

    display = TrainDisplay(Console(file=io.StringIO()))
    handlers, level = list(logger.handlers), logger.level
    ui.install_console_logging()
    try:
        with train_log(tmp_path):
            trainer = SimpleNamespace(epoch_data_wait=0.1, state=SimpleNamespace(epoch=1),
                                      settings=SimpleNamespace(workers=0))
            display.on_epoch_end(trainer)  # 10 %: no warning
            trainer.epoch_data_wait, trainer.state.epoch = 0.6, 2
            display.on_epoch_end(trainer)
            trainer.state.epoch = 3
            display.on_epoch_end(trainer)  # only once per run
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    log = (tmp_path / "train.log").read_text()
    assert log.count("waiting for data") == 1 and "epoch 2 spent 60%" in log and "--workers" in log
    assert " ".join(capsys.readouterr().err.split()).count("waiting for data") == 1


# ------------------------------------------------- step speed (issue 12): the same numbers in less time
def test_optimizer_is_fused_and_stays_fused_when_resuming_a_loop_checkpoint(tmp_path, synth):
    settings = small_settings(synth, tmp_path / "run", epochs=1)
    data = load_run_data(settings, skip_bad=False)
    trainer = Trainer(settings, data, torch.device("cpu"))
    assert all(g["fused"] for g in trainer.optimizer.param_groups)
    trainer.train(stop_after=1)
    ckpt = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)
    for group in ckpt["optimizer"]["param_groups"]:  # as older runs and OpenOCR's per-tensor Adam write it
        group.update(fused=None, foreach=None)
    resumed = Trainer(TrainSettings.from_config(ckpt["config"]), data, torch.device("cpu"), resume=ckpt)
    assert all(g["fused"] for g in resumed.optimizer.param_groups)
    saved = ckpt["optimizer"]["state"]
    loaded = resumed.optimizer.state_dict()["state"]
    assert len(loaded) == len(saved) > 0
    assert all(torch.equal(loaded[i]["exp_avg_sq"], saved[i]["exp_avg_sq"]) for i in saved)
    assert all(float(loaded[i]["step"]) == 1.0 for i in saved)


def test_fused_adam_matches_the_per_tensor_loop_to_float_rounding():
    from openocr_cli.model import build_detector
    from openocr_cli.training.builders import update_kernel

    torch.manual_seed(0)
    loop_model, fused_model = build_detector(), build_detector()
    fused_model.load_state_dict(loop_model.state_dict())
    assert update_kernel(fused_model) == {"fused": True, "foreach": None}
    loop = torch.optim.Adam(loop_model.parameters(), lr=1e-3, weight_decay=5e-5, foreach=False)
    fused = torch.optim.Adam(fused_model.parameters(), lr=1e-3, weight_decay=5e-5, **update_kernel(fused_model))
    for _ in range(3):
        for a, b in zip(loop_model.parameters(), fused_model.parameters()):
            a.grad = torch.randn_like(a) * 1e-2
            b.grad = a.grad.clone()
        loop.step()
        fused.step()
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(loop_model.parameters(), fused_model.parameters()))
    assert moved <= 1e-6  # three steps of lr 1e-3 move weights by ~3e-3: the kernels agree to rounding


def test_gradient_check_is_one_reduction_that_finds_nan_and_inf():
    from openocr_cli.training.finite import gradients_finite

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert gradients_finite(model)  # no gradients yet
    for p in model.parameters():
        p.grad = torch.full_like(p, 3e38)  # huge but finite: a max-abs norm cannot overflow (a 2-norm would)
    assert gradients_finite(model)
    for bad in (float("nan"), float("inf"), float("-inf")):
        model[1].bias.grad[1] = bad
        assert not gradients_finite(model)


def test_loader_keeps_its_workers_across_epochs_and_releases_them_at_the_end(tmp_path, synth):
    from openocr_cli.training.callbacks import Callback

    settings = small_settings(synth, tmp_path / "run", epochs=2, workers=2)
    trainer = Trainer(settings, load_run_data(settings, skip_bad=False), torch.device("cpu"))
    assert trainer.loader.persistent_workers and not trainer.loader.pin_memory  # pinned memory: CUDA only
    workers: list[list] = []

    class Workers(Callback):
        def on_epoch_end(self, trainer):
            workers.append(list(trainer.loader._iterator._workers))

    trainer.callbacks.append(Workers())
    trainer.train()
    assert trainer.state.global_step == 6 and len(workers) == 2
    assert [w.pid for w in workers[0]] == [w.pid for w in workers[1]]  # epoch 2 reused epoch 1's processes
    assert trainer.loader._iterator is None and not any(w.is_alive() for w in workers[1])
    no_workers = small_settings(synth, tmp_path / "run0", epochs=1, workers=0)
    assert not Trainer(no_workers, load_run_data(no_workers, skip_bad=False),
                       torch.device("cpu")).loader.persistent_workers


def test_balanced_dice_without_host_syncs_is_bit_identical_to_the_int_arithmetic():
    from openocr_cli.training.loss import BALANCE_EPS, balanced_dice_loss, dice_loss

    def reference(pred, gt, mask, ratio):  # the former form: counts read back to Python ints
        dice = dice_loss(pred, gt, mask, BALANCE_EPS)
        n_pos = int((gt * mask).sum())
        n_neg = int(min(float(((1 - gt) * mask).sum()), ratio * n_pos))
        return dice * float(n_pos + n_neg) / (n_pos + n_neg + BALANCE_EPS)

    torch.manual_seed(0)
    for size in (1, 2, 3, 5, 8, 20, 64):
        for ratio in (3, 2.5):
            pred = torch.rand(2, size, size, requires_grad=True)
            gt = (torch.rand(2, size, size) > torch.rand(1)).float()
            mask = (torch.rand(2, size, size) > 0.3).float()
            for g in (gt, torch.zeros_like(gt)):  # and a batch without text: value and gradient 0
                want, got = reference(pred, g, mask, ratio), balanced_dice_loss(pred, g, mask, ratio)
                assert torch.equal(want, got)
                assert torch.equal(torch.autograd.grad(want, pred)[0], torch.autograd.grad(got, pred)[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("keep", [False, True])
def test_training_allocator_keeps_large_blocks_on_the_heap(keep):
    """After keep_freed_memory, a 64 MB block comes from the heap and stays there once freed (no fresh
    pages, hence no page faults, next step); glibc's default maps it and unmaps it on free."""
    code = ("import ctypes, numpy as np\nfrom openocr_cli.training.allocator import keep_freed_memory\n"
            "class Info(ctypes.Structure):\n"
            "    _fields_ = [(n, ctypes.c_size_t) for n in 'arena ordblks smblks hblks hblkhd usmblks fsmblks "
            "uordblks fordblks keepcost'.split()]\n"
            "libc = ctypes.CDLL('libc.so.6')\nlibc.mallinfo2.restype = Info\n"
            f"ok = keep_freed_memory() if {keep} else None\n"
            "block = np.ones(64 << 20, np.uint8)\nmapped = libc.mallinfo2().hblkhd\n"
            "del block\nprint(ok, mapped >= 64 << 20, libc.mallinfo2().fordblks >= 64 << 20)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == (["True", "False", "True"] if keep else ["None", "True", "False"])


# ------------------------------------- channels-last training (issue 24): faster steps, standard-layout files
def test_training_runs_channels_last_and_writes_standard_layout_checkpoints(tmp_path, synth):
    settings = small_settings(synth, tmp_path / "run", epochs=1)
    data = load_run_data(settings, skip_bad=False)
    trainer = Trainer(settings, data, torch.device("cpu"))
    convs = [p for p in trainer.model.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                         for p in convs)
    trainer.train(stop_after=1)
    ckpt = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)
    moments = [t for slots in ckpt["optimizer"]["state"].values() for t in slots.values() if t.ndim == 4]
    assert moments and all(t.is_contiguous() for t in [*ckpt["state_dict"].values(), *moments])
    resumed = Trainer(TrainSettings.from_config(ckpt["config"]), data, torch.device("cpu"), resume=ckpt)
    for param in resumed.model.parameters():
        assert all(t.stride() == param.stride() for t in resumed.optimizer.state[param].values() if t.ndim == 4)


def test_loaded_moments_take_their_parameters_layout_so_the_fused_step_stays_right():
    from openocr_cli.training.builders import load_optimizer_state, update_kernel

    torch.manual_seed(0)
    weight = torch.randn(16, 8, 3, 3)
    grads = [torch.randn_like(weight) for _ in range(3)]
    reference = weight.clone().requires_grad_()
    ref_opt = torch.optim.Adam([reference], lr=0.1, fused=True)
    for g in grads[:2]:
        reference.grad = g.clone()
        ref_opt.step()
    saved = copy.deepcopy(ref_opt.state_dict())  # standard-layout moments, as checkpoints hold them
    resumed = reference.detach().clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    opt = torch.optim.Adam([resumed], lr=0.1, **update_kernel(torch.nn.ParameterList([resumed])))
    load_optimizer_state(opt, saved)
    reference.grad, resumed.grad = grads[2].clone(), grads[2].contiguous(memory_format=torch.channels_last)
    ref_opt.step()
    opt.step()
    assert torch.equal(resumed.detach(), reference.detach())  # unmatched moments were off by 0.17
