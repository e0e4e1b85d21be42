"""Training data pipeline speed: samples/s of the full transform chain on one core, time share per op.

Uses the packaged repvit_db.yml chain (copy-paste, flip/rotate/scale, 640x640 crop, border and
shrink maps, normalise) on generated 720x1280 images with rendered words, in one process with
OpenCV limited to one thread, as one DataLoader worker would run it. DecodeImage and
DetLabelEncode run twice per sample: for the sample and for CopyPaste's extra image.

    .venv/bin/python benchmarks/bench_data.py [--samples 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import torch

from openocr_cli import config as cfgmod
from openocr_cli.data.dataset import TrainDataset, validate_training_labels
from openocr_cli.data.synth import generate


class Timed:
    """Wraps an op and adds its wall time to a shared table."""

    def __init__(self, op, name: str, totals: dict):
        self.op, self.name, self.totals = op, name, totals
        for attr in ("ext_data_num", "reseed"):
            if hasattr(op, attr):
                setattr(self, attr, getattr(op, attr))

    def __call__(self, data):
        start = time.perf_counter()
        out = self.op(data)
        self.totals[self.name] += time.perf_counter() - start
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    cfg = cfgmod.load_config()
    with tempfile.TemporaryDirectory() as tmp:
        synth = generate(Path(tmp), num_train=32, num_test=0, seed=0, size=(720, 1280))
        samples = validate_training_labels([synth.train_label], synth.data_dir).samples
        dataset = TrainDataset(samples, cfg["Train"]["dataset"]["transforms"], seed=0)
        totals: dict[str, float] = defaultdict(float)
        dataset.load_ops = [Timed(op, type(op).__name__, totals) for op in dataset.load_ops]
        dataset.ops = [Timed(op, type(op).__name__, totals) for op in dataset.ops]
        dataset.reseedable = [op for op in dataset.ops if hasattr(op, "reseed")]
        for i in range(5):
            dataset[(0, i, i % len(dataset))]  # warm-up
        totals.clear()
        start = time.perf_counter()
        for i in range(args.samples):
            dataset[(1, i, i % len(dataset))]
        wall = time.perf_counter() - start

    print(f"{args.samples} samples, 720x1280 -> 640x640, one core: {args.samples / wall:.1f} samples/s "
          f"({1000 * wall / args.samples:.1f} ms per sample)\n")
    print("| transform | ms/sample | share |")
    print("|---|---:|---:|")
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {1000 * seconds / args.samples:.1f} | {100 * seconds / wall:.0f}% |")
    other = wall - sum(totals.values())
    print(f"| other (file reads, seeding) | {1000 * other / args.samples:.1f} | {100 * other / wall:.0f}% |")


if __name__ == "__main__":
    main()
