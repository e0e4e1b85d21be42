"""Training throughput: steady-state samples/s of `openocr-det train` on CPU, optionally against OpenOCR.

Generates a synthetic set (openocr_cli.data.synth, 720x1280 images as ICDAR 2015's), then trains the packaged
config from random init (`--weights none`) for exactly one epoch of `--steps` steps: batch 8, crop 480, 2 loader
workers by default, no evaluation. Each step's time comes from the run's metrics.jsonl (printed every step; a
step's time includes its wait for data, not the checkpoint writes); the first `--warmup` steps are dropped and
samples/s = samples / seconds over the rest.

With --openocr PATH (an OpenOCR source tree holding opendet/ and tools/), OpenOCR's tools/train_det.py trains
the same config on the same data in the same rounds (A B A B ...), from a config YAML written next to the data;
its per-step `avg_batch_cost` (print_batch_step 1, also wait included) gives its step times. The ratio is
taken round by round and its median printed. `openrec` (the recogniser package train_det imports) is not
needed: its two imports are answered with opendet's transforms and a plain torch.optim.Adam + the same LR
schedule, as OpenOCR builds them for this config (tqdm, for its evaluation progress bar, likewise if missing).
--amp off,bf16 times each mixed-precision mode (`train -o Global.amp=MODE`) as a contender of its own, in the
same rounds, and prints each mode's ratio to float32 (docs/guides/mixed-precision.md).
--against DIR adds a further contender: openocr-det from another checkout (e.g. `git worktree add /tmp/base
HEAD~1`), for before/after figures.

    .venv/bin/python benchmarks/bench_train.py [--steps 12] [--warmup 3] [--rounds 2] [--json out.json]
    .venv/bin/python benchmarks/bench_train.py --openocr ~/OpenOCR --rounds 3 --json train.json
    .venv/bin/python benchmarks/bench_train.py --openocr ~/OpenOCR --rounds 3 --cache disk
    .venv/bin/python benchmarks/bench_train.py --amp off,bf16 --rounds 2 --json amp.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CROP_KEY = "Train.dataset.transforms.4.EastRandomCropData.size"
OPENOCR_STEP = re.compile(r"global_step: (\d+),.*avg_batch_cost: ([0-9.]+) s, avg_samples: ([0-9.]+)")


def steady_rate(steps: list[tuple[int, float, int]], warmup: int) -> float:
    """samples/s over the steps after `warmup`, from (global step, seconds, samples) rows."""
    kept = [(s, n) for step, s, n in sorted(steps) if step > warmup]
    if not kept:
        raise SystemExit(f"no step after the {warmup} warm-up steps was timed; use more --steps")
    return sum(n for _, n in kept) / sum(s for s, _ in kept)


class Ours:
    """`python -m openocr_cli train` from a checkout (this one by default)."""

    def __init__(self, name: str, checkout: Path, args, data: Path, work: Path, amp: str = "off"):
        self.name, self.checkout, self.args, self.data, self.work = name, checkout, args, data, work
        self.amp = amp

    def run(self, round_no: int) -> list[tuple[int, float, int]]:
        out = self.work / f"{self.name.replace(' ', '-')}-{round_no}"
        a = self.args
        cmd = [sys.executable, "-m", "openocr_cli", "train", "--data-dir", str(self.data),
               "--train-label", str(self.data / "train_label.txt"), "--weights", "none", "--device", "cpu",
               "--epochs", "1", "--batch-size", str(a.batch_size), "--workers", str(a.workers), "--output", str(out),
               "--overwrite", "-o", f"{CROP_KEY}=[{a.crop}, {a.crop}]", "-o", "Global.print_batch_step=1",
               "-o", "Eval.dataset.label_file_list=[]", "-o", f"Global.amp={self.amp}"]
        if a.cache != "none":
            cmd += ["--cache", a.cache]
        env = {**os.environ, "PYTHONPATH": str(self.checkout), "OPENOCR_DET_NO_PROGRESS": "1",
               "OPENOCR_DET_HOME": str(self.work / "home")}  # disk: the cache filled before the rounds
        _run(cmd, env, out.with_suffix(".log"))
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [(r["global_step"], a.batch_size / r["samples_per_s"], a.batch_size) for r in rows
                if r["type"] == "train"]


class OpenOCR:
    """OpenOCR's tools/train_det.py on the same data and config."""

    name = "OpenOCR"

    def __init__(self, source: Path, args, data: Path, work: Path):
        if not (source / "tools" / "train_det.py").is_file() or not (source / "opendet").is_dir():
            raise SystemExit(f"--openocr {source}: not an OpenOCR source tree (needs tools/train_det.py, opendet/)")
        self.source, self.args, self.data, self.work = source, args, data, work

    def config(self, out: Path) -> Path:
        from openocr_cli import config as cfgmod

        a = self.args
        cfg = cfgmod.load_config()
        g = cfg["Global"]
        g.update(device="cpu", epoch_num=1, print_batch_step=1, output_dir=str(out), pretrained_model=None,
                 checkpoints=None, eval_batch_step=[10**9, 10**9], save_epoch_step=[10**9, 1])
        cfg["Eval"] = None  # no evaluation, as ours
        train = cfg["Train"]
        train["dataset"].update(data_dir=str(self.data) + "/", label_file_list=[str(self.data / "train_label.txt")])
        for op in train["dataset"]["transforms"]:
            if "EastRandomCropData" in op:
                op["EastRandomCropData"]["size"] = [a.crop, a.crop]
        train["loader"].update(batch_size_per_card=a.batch_size, num_workers=a.workers)
        path = out.with_suffix(".yml")
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        return path

    def run(self, round_no: int) -> list[tuple[int, float, int]]:
        out = self.work / f"openocr-{round_no}"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_openocr-child", str(self.source),
               str(self.config(out))]
        log = out.with_suffix(".log")
        _run(cmd, {**os.environ, "PYTHONPATH": str(REPO)}, log)
        return [(int(m[1]), float(m[2]), int(float(m[3]))) for m in OPENOCR_STEP.finditer(log.read_text())]


def fill_disk_cache(data: Path, home: Path) -> float:
    """Decode every training image into the disk cache under `home` (as the first epoch would); seconds taken."""
    os.environ["OPENOCR_DET_HOME"] = str(home)
    from openocr_cli import config as cfgmod
    from openocr_cli.data.dataset import TrainDataset, validate_training_labels

    start = time.perf_counter()
    samples = validate_training_labels([data / "train_label.txt"], data).samples
    dataset = TrainDataset(samples, cfgmod.load_config()["Train"]["dataset"]["transforms"], seed=0, cache="disk")
    dataset.prepare_cache()
    for sample in samples:
        dataset.cache.image(sample.image)
    return time.perf_counter() - start


def _run(cmd: list[str], env: dict, log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f:
        code = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent).returncode
    if code:
        raise SystemExit(f"{cmd[2:4]} failed (exit {code}); see {log}")


def openocr_child(source: Path, config: Path) -> None:
    """Run OpenOCR's train_det.py with the two `openrec` imports it needs for a detector answered."""
    import types

    import torch

    sys.path.insert(0, str(source))
    import opendet.preprocess as det_pre

    from openocr_cli.training.schedules import build_scheduler

    def build_optimizer(optim_cfg, lr_cfg, epochs, step_each_epoch, model):
        """OpenOCR's choice for Adam with filter_bias_and_bn false: every parameter, PyTorch's defaults."""
        opt = torch.optim.Adam(model.parameters(), lr=optim_cfg["lr"], weight_decay=optim_cfg["weight_decay"])
        return opt, build_scheduler(opt, lr_cfg, step_each_epoch, epochs, optim_cfg["lr"])

    pre = types.ModuleType("openrec.preprocess")
    pre.transform, pre.create_operators = det_pre.transform, det_pre.create_operators
    optim = types.ModuleType("openrec.optimizer")
    optim.build_optimizer = build_optimizer
    sys.modules.update({"openrec": types.ModuleType("openrec"), "openrec.preprocess": pre,
                        "openrec.optimizer": optim})
    try:  # only its evaluation progress bar uses tqdm, and no evaluation runs here
        import tqdm  # noqa: F401
    except ImportError:
        import importlib.machinery

        stub = types.ModuleType("tqdm")
        stub.__spec__, stub.tqdm = importlib.machinery.ModuleSpec("tqdm", None), None
        sys.modules["tqdm"] = stub
    sys.argv = ["train_det.py", "-c", str(config)]
    runpy.run_path(str(source / "tools" / "train_det.py"), run_name="__main__")


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_openocr-child"]:
        return openocr_child(Path(argv[1]), Path(argv[2]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=12, help="training steps per run (one epoch)")
    p.add_argument("--warmup", type=int, default=3, help="first steps not counted")
    p.add_argument("--rounds", type=int, default=2, help="runs of each contender, interleaved")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=480)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache", choices=("none", "ram", "disk"), default="none",
                   help="our decode cache (train --cache); disk is filled before the rounds and timed apart")
    p.add_argument("--image-size", default="720x1280", help="synthetic image size HxW")
    p.add_argument("--openocr", type=Path, help="OpenOCR source tree: also time its train_det.py")
    p.add_argument("--amp", default="off", help="mixed-precision modes to time, comma-separated (off,bf16,...)")
    p.add_argument("--against", type=Path, help="another openocr-det checkout to time in the same rounds")
    p.add_argument("--work", type=Path, help="folder for data and runs (default: a temporary one)")
    p.add_argument("--json", type=Path, help="write the figures as JSON")
    a = p.parse_args(argv)
    if a.steps <= a.warmup:
        p.error("--steps must be larger than --warmup")

    from openocr_cli.data.synth import generate

    work = a.work or Path(tempfile.mkdtemp(prefix="bench-train-"))
    h, w = (int(v) for v in a.image_size.lower().split("x"))
    data = work / "data"
    if not (data / "train_label.txt").is_file():
        generate(data, num_train=a.steps * a.batch_size, num_test=0, seed=0, size=(h, w))
    modes = [m.strip() for m in a.amp.split(",") if m.strip()]
    contenders = [Ours("openocr-det" if m == "off" else f"openocr-det {m}", REPO, a, data, work, amp=m)
                  for m in (["off"] + [m for m in modes if m != "off"])]
    if a.against:
        contenders.append(Ours("against", a.against.resolve(), a, data, work))
    if a.openocr:
        contenders.append(OpenOCR(a.openocr.resolve(), a, data, work))

    fill_s = fill_disk_cache(data, work / "home") if a.cache == "disk" else None
    if fill_s is not None:
        print(f"disk cache filled before the rounds: {fill_s:.1f} s for {a.steps * a.batch_size} images", flush=True)
    rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    for r in range(a.rounds):
        order = contenders if r % 2 == 0 else contenders[::-1]  # alternate who runs first
        for c in order:
            start = time.perf_counter()
            rates[c.name].append(steady_rate(c.run(r), a.warmup))
            print(f"round {r + 1}: {c.name:12s} {rates[c.name][-1]:6.2f} samples/s "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)

    ours = rates["openocr-det"]
    result = {"samples_per_s": statistics.median(ours), "rounds": rates, "steps": a.steps, "warmup": a.warmup,
              "batch_size": a.batch_size, "crop": a.crop, "workers": a.workers, "image_size": a.image_size,
              "cache": a.cache, "cache_fill_s": fill_s}
    print(f"openocr-det: median {result['samples_per_s']:.2f} samples/s over {a.rounds} round(s)")
    for other, key in (("OpenOCR", "ratio_vs_openocr"), ("against", "ratio_vs_against")):
        if other in rates:
            ratio = statistics.median(x / y for x, y in zip(ours, rates[other]))
            result[f"{other.lower()}_samples_per_s"] = statistics.median(rates[other])
            result[key] = ratio
            print(f"{other}: median {statistics.median(rates[other]):.2f} samples/s; "
                  f"openocr-det / {other} = {ratio:.3f} (median of per-round ratios)")
    for c in contenders[1:]:
        if isinstance(c, Ours) and c.amp != "off":
            ratio = statistics.median(x / y for x, y in zip(rates[c.name], ours))
            result[f"amp_{c.amp}_samples_per_s"] = statistics.median(rates[c.name])
            result[f"amp_{c.amp}_ratio"] = ratio
            print(f"{c.name}: median {statistics.median(rates[c.name]):.2f} samples/s; {c.amp} / float32 = "
                  f"{ratio:.3f} (median of per-round ratios)")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
