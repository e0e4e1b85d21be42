"""Does `predict --select-uncertain N` pick the images the model does worse on? Per-image F1, selected vs the rest.

Generates a labelled synthetic set (`openocr_cli.data.synth`), trains a small model briefly on CPU unless
`--weights` names one (a briefly trained model makes mistakes worth finding; a converged one makes few), runs
the real command `openocr-det predict TEST --select-uncertain N`, and scores every test image with the eval
metric (`metrics.match_image`: F1 = 2 * matched / (care GT + care detections), 1 for an image with neither).
It reports the mean F1 of the N images the command selected against the rest, the same for each of the three
signals of the score alone (evaluation/uncertainty.py), and for random selections of N (mean and 95% range
over 2000 seeded draws), plus the rank correlation between uncertainty and F1.

    .venv/bin/python benchmarks/bench_uncertain.py [--weights best.pth] [--work /tmp/bench_uncertain]
        [--test 200] [--select 40] [--epochs 12] [--seed 5]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from openocr_cli import Detector
from openocr_cli.data.labels import load_labels
from openocr_cli.data.synth import generate
from openocr_cli.evaluation.iou_metric import match_image
from openocr_cli.evaluation.uncertainty import UNCERTAIN_NAME, image_uncertainty, rank

SIGNALS = ("score", "low_box_score", "borderline", "map_ambiguity")
EVAL_LABEL = "eval_label.txt"  # the last 16 generated test images: training's per-epoch eval (best.pth) only
STUDY_LABEL = "study_label.txt"  # the others: the images the selection is measured on
EVAL_IMAGES = 16


def cli(*args: str) -> None:
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", COLUMNS="160")
    done = subprocess.run([sys.executable, "-m", "openocr_cli", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"openocr-det {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")


def train(data: Path, run: Path, epochs: int) -> Path:
    """A small model trained from scratch for a few epochs (docs/benchmarks.md's recipe, shorter)."""
    if not (run / "latest.pth").is_file():
        cli("train", "--data-dir", str(data), "--train-label", str(data / "train_label.txt"),
            "--eval-label", str(data / EVAL_LABEL), "--weights", "none", "--device", "cpu",
            "--epochs", str(epochs), "--batch-size", "8", "--lr", "0.002", "--output", str(run),
            "-o", "Train.dataset.transforms.4.EastRandomCropData.size=[256, 256]")
    return run / "best.pth" if (run / "best.pth").is_file() else run / "latest.pth"


def f1(gt, ignore, dets) -> float:
    record = match_image(gt, ignore, dets).record()
    total = record.gt_care + record.det_care
    return 1.0 if total == 0 else 2.0 * record.det_matched / total


def gap(f1s: dict[str, float], chosen: list[str]) -> tuple[float, float]:
    picked = set(chosen)
    inside = [v for k, v in f1s.items() if k in picked]
    outside = [v for k, v in f1s.items() if k not in picked]
    return float(np.mean(inside)), float(np.mean(outside))


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, help="a checkpoint or ONNX file (default: train one briefly)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_uncertain"))
    parser.add_argument("--train", type=int, default=160)
    parser.add_argument("--test", type=int, default=200, help="images the selection is measured on")
    parser.add_argument("--select", type=int, default=40, help="N of --select-uncertain (default 20%% of --test)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    start = time.perf_counter()
    data = args.work / "data"
    if not (data / STUDY_LABEL).is_file():
        generate(data, args.train, args.test + EVAL_IMAGES, seed=args.seed, size=(256, 320))
        lines = (data / "test_label.txt").read_text().splitlines(keepends=True)
        (data / STUDY_LABEL).write_text("".join(lines[:args.test]))
        (data / EVAL_LABEL).write_text("".join(lines[args.test:]))
    weights = args.weights or train(data, args.work / "run", args.epochs)
    print(f"model: {weights} ({time.perf_counter() - start:.0f} s so far)")

    out = args.work / "predict"
    samples = {os.path.normpath(s.image): s for s in load_labels([data / STUDY_LABEL], data)}
    cli("predict", *sorted(samples), "-w", str(weights), "--device", "cpu", "--no-vis", "--output", str(out),
        "--select-uncertain", str(args.select))
    selected = [line.split("\t")[0] for line in (out / UNCERTAIN_NAME).read_text().splitlines()]

    det = Detector(str(weights), device="cpu", fuse=False)
    f1s: dict[str, float] = {}
    signals: dict[str, dict[str, float]] = {name: {} for name in SIGNALS}
    for result in det.stream(sorted(str(p) for p in samples), return_maps=True):
        sample = samples[os.path.normpath(result.path)]
        f1s[result.path] = f1(sample.polys, sample.ignore, result.polygons)
        u = image_uncertainty(result.prob_map, det.predictor.postprocess)
        for name in SIGNALS:
            signals[name][result.path] = getattr(u, name)
        result.prob_map = None
    same = [p for p, _ in rank(signals["score"].items(), args.select)]
    assert [os.path.normpath(p) for p in same] == [os.path.normpath(p) for p in selected], \
        "predict --select-uncertain and the in-process ranking disagree"

    n, total = args.select, len(f1s)
    print(f"\n{total} test images, N = {n} selected, mean F1 of all: {np.mean(list(f1s.values())):.3f}\n")
    print(f"| selection (N = {n} of {total}) | mean F1 selected | mean F1 rest | gap (rest - selected) |")
    print("|---|---:|---:|---:|")
    sel, rest = gap(f1s, selected)
    print(f"| `predict --select-uncertain {n}` (score) | {sel:.3f} | {rest:.3f} | **{rest - sel:+.3f}** |")
    for name in SIGNALS[1:]:
        chosen = [p for p, _ in rank(signals[name].items(), n)]
        s, r = gap(f1s, chosen)
        print(f"| {name} alone | {s:.3f} | {r:.3f} | {r - s:+.3f} |")
    rng = random.Random(0)
    paths = sorted(f1s)
    gaps = []
    for _ in range(2000):
        s, r = gap(f1s, rng.sample(paths, n))
        gaps.append(r - s)
    low, high = np.percentile(gaps, [2.5, 97.5])
    print(f"| random N (2000 draws) | | | {np.mean(gaps):+.3f} (95%: {low:+.3f} .. {high:+.3f}) |")
    worst = sorted(paths, key=lambda p: (f1s[p], p))[:n]
    s, r = gap(f1s, worst)
    print(f"| oracle: the N lowest F1 | {s:.3f} | {r:.3f} | {r - s:+.3f} |")
    rho = spearman([signals["score"][p] for p in paths], [-f1s[p] for p in paths])
    overlap = len(set(selected) & set(worst))
    print(f"\nSpearman rank correlation of uncertainty with (1 - F1): {rho:+.3f}; "
          f"{overlap} of the {n} selected are among the {n} lowest-F1 images.")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
