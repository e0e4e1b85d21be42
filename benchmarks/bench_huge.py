"""Huge images: `--tile auto` against full resolution, `--tile off` and `--tile 960`, on two differently made sets.

* tuning set: bench_tiles' mosaics (a grid of 384x512 generated renders, text 12-55 px), the kind of image the
  `auto` rule was designed on;
* second set: pages of blank paper holding blocks of 640x480 renders scaled 0.8-1.4x (text about 12-55 px) at
  random places, 15-60 % of the page covered, wide blank margins; 3840x2880 and 6000x4500 (4K-6K sides);
* memory: one 12000x9000 page, four pages of the second kind side by side, with --tile auto and --tile 960 (full
  resolution needs tens of GB), against the same four pages as they were (6000x4500, --tile 960);
* big text: 3840x2880 pages holding one render scaled 4-4.2x (text about 50-230 px), --tile off against auto;
* a 20000x20000 image (400 MP): refused with a message naming the limit, or run, never killed;
* ordinary inputs: 1280x720 renders and A4 pages at 200 dpi (1654x2339) whose text survives the resize:
  `predict --tile auto` must write exactly `--tile off`'s boxes;
* seams: pairs of --tile auto boxes overlapping by more than 30 % of the smaller one, next to the same count for
  full resolution.

Every configuration is one `openocr-det eval` (or predict) process: hmean, wall seconds, peak RSS (os.wait4).
Without --weights a small model is trained first on generated renders (about 10 CPU-minutes unloaded).

    .venv/bin/python benchmarks/bench_huge.py [--weights best.pth] [--work /tmp/bench_huge] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import shapely
from bench_tiles import mosaics  # benchmarks/ is on sys.path
from bench_vs_openocr import timed

PY = sys.executable


def cli(*args: str) -> None:
    done = subprocess.run([PY, "-m", "openocr_cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, OPENOCR_DET_OFFLINE="1", NO_PROGRESS="1"))
    if done.returncode != 0:
        sys.exit(f"openocr-det {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")


def train(work: Path, epochs: int) -> Path:
    """A small model trained from scratch on 384x512 renders (text 12-55 px)."""
    from openocr_cli.data.synth import generate

    run = work / "run"
    if not (run / "best.pth").is_file():
        data = generate(work / "train-data", num_train=240, num_test=16, seed=7, size=(384, 512))
        cli("train", "--data-dir", str(data.data_dir), "--train-label", str(data.train_label), "--eval-label",
            str(data.test_label), "--weights", "none", "--device", "cpu", "--epochs", str(epochs), "--batch-size", "8",
            "--workers", "1", "--lr", "0.002", "--output", str(run), "--overwrite",
            "-o", "Train.dataset.transforms.4.EastRandomCropData.size=[256, 256]")
    return run / "best.pth" if (run / "best.pth").is_file() else run / "latest.pth"


def pages(folder: Path, sizes: list[tuple[int, int]], seed: int, scale=(0.8, 1.4), cover=(0.15, 0.6),
          part=(480, 640), prefix: str = "page") -> Path:
    """Pages of blank paper with scaled renders placed at random without overlap; their label file."""
    from openocr_cli.data.synth import make_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for index, (h, w) in enumerate(sizes):
        canvas = np.full((h, w, 3), int(rng.integers(200, 250)), np.uint8)
        margin = int(min(h, w) * rng.uniform(0.05, 0.15))
        taken = np.zeros((h, w), bool)
        target, covered, regions = rng.uniform(*cover) * h * w, 0, []
        for _ in range(4000):
            if covered >= target:
                break
            f = rng.uniform(*scale)
            ph, pw = int(part[0] * f), int(part[1] * f)
            if ph >= h - 2 * margin or pw >= w - 2 * margin:
                continue
            y, x = int(rng.integers(margin, h - margin - ph)), int(rng.integers(margin, w - margin - pw))
            if taken[y:y + ph, x:x + pw].any():
                continue
            render, words = make_image(rng, *part)
            canvas[y:y + ph, x:x + pw] = cv2.resize(render, (pw, ph), interpolation=cv2.INTER_AREA)
            taken[y:y + ph, x:x + pw] = True
            covered += ph * pw
            for word in words:
                word["points"] = [[round(px * f) + x, round(py * f) + y] for px, py in word["points"]]
                regions.append(word)
        name = f"{prefix}{index}.png"
        cv2.imwrite(str(folder / name), canvas)
        lines.append(f"{name}\t{json.dumps(regions)}\n")
    label = folder / "label.txt"
    label.write_text("".join(lines), encoding="utf-8")
    return label


def assemble(quarters: Path, folder: Path) -> Path:
    """The four pages of `quarters` side by side as one page twice their size (2 x 2), and its label file."""
    rows = [line.split("\t", 1) for line in quarters.read_text(encoding="utf-8").splitlines()]
    tiles = [cv2.imread(str(quarters.parent / name)) for name, _ in rows]
    h, w = tiles[0].shape[:2]
    regions = []
    for k, (_, labels) in enumerate(rows):
        dy, dx = (k // 2) * h, (k % 2) * w
        regions += [{**r, "points": [[x + dx, y + dy] for x, y in r["points"]]} for r in json.loads(labels)]
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "page0.png"), np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])]))
    label = folder / "label.txt"
    label.write_text(f"page0.png\t{json.dumps(regions)}\n", encoding="utf-8")
    return label


def evaluate(model: Path, label: Path, flags: list[str], tmp: Path) -> dict:
    out = tmp / f"eval{len(list(tmp.glob('eval*.json')))}.json"
    wall, peak = timed([PY, "-m", "openocr_cli", "eval", "--onnx-model", str(model), "--data-dir", str(label.parent),
                        "--label-file", str(label), "--device", "cpu", *flags, "--json", str(out)], tmp)
    return {"hmean": json.loads(out.read_text())["hmean"], "seconds": round(wall, 1), "peak_rss_mb": round(peak)}


def predicted(model: Path, folder: Path, flags: list[str], out: Path) -> dict[str, list]:
    cli("predict", str(folder), "--onnx-model", str(model), "--device", "cpu", "--no-vis", "--output", str(out),
        *flags)
    rows = (out / "det_results.txt").read_text().splitlines()
    return {line.split("\t")[0]: [d["points"] for d in json.loads(line.split("\t", 1)[1])] for line in rows}


def duplicates(boxes: list) -> int:
    """Pairs of boxes overlapping by more than 30 % of the smaller one."""
    polys = [shapely.Polygon(b).buffer(0) for b in boxes]
    tree = shapely.STRtree(polys)
    count = 0
    for i, j in zip(*tree.query(polys, predicate="intersects")):
        if i < j:
            inter = polys[i].intersection(polys[j]).area
            count += inter > 0.3 * min(polys[i].area, polys[j].area)
    return count


def refused(work: Path) -> str:
    """A 20000x20000 image (400 MP) through `predict --tile auto`: the exit status and what it said of the file."""
    folder = work / "giant"
    folder.mkdir(exist_ok=True)
    if not (folder / "giant.png").is_file():
        canvas = np.full((20000, 20000), 235, np.uint8)
        cv2.putText(canvas, "GIANT", (2000, 10000), cv2.FONT_HERSHEY_SIMPLEX, 40, 20, 60)
        cv2.imwrite(str(folder / "giant.png"), canvas)
        del canvas
    proc = subprocess.run([PY, "-m", "openocr_cli", "predict", str(folder), "--tile", "auto", "--no-vis",
                           "--output", str(work / "p-giant"), "--onnx-model", str(work / "det.onnx")],
                          capture_output=True, text=True,
                          env=dict(os.environ, OPENOCR_DET_OFFLINE="1", NO_PROGRESS="1"))
    said = " ".join(line.strip() for line in proc.stderr.strip().splitlines() if "giant" in line)
    return f"exit {proc.returncode}: {said[-300:]}"


def make_sets(work: Path) -> tuple:
    """The generated sets' label files (and the tuning mosaics' size)."""
    tuning, th, tw = mosaics(work / "tuning", 2, 6, 6, seed=4)
    second = pages(work / "second", [(2880, 3840), (3840, 2880), (4500, 6000)], seed=11)
    quarters = pages(work / "huge-quarters", [(4500, 6000)] * 4, seed=12, cover=(0.3, 0.3))
    huge = assemble(quarters, work / "huge")
    # big text: one render scaled 4-4.2x per 3840x2880 page (text about 50-230 px): the resize to 960 leaves it
    # 12-58 px, so --tile auto should decide "no tiling" at a small cost
    big = pages(work / "big-text", [(2880, 3840)] * 3, seed=13, scale=(4.0, 4.2), cover=(0.3, 0.3))
    return tuning, th, tw, second, quarters, huge, big


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="a trained checkpoint (default: train one briefly)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_huge"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    weights = args.weights or train(work, args.epochs)
    model = work / "det.onnx"
    cli("export", "-w", str(weights), "--output", str(model), "--overwrite")

    # made in a child process: a parent that has held the 12000x9000 page stays large, and every process it
    # forks starts with (and reports as its peak RSS) the parent's resident memory
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        tuning, th, tw, second, quarters, huge, big = pool.submit(make_sets, work).result()
    results: dict = {"weights": str(weights)}
    table = []

    def run(name: str, label: Path, config: str, flags: list[str]) -> None:
        row = {"set": name, "config": config, **evaluate(model, label, flags, work)}
        table.append(row)
        print(row, flush=True)

    for name, label, full in (("tuning: 2 mosaics 2304x3072", tuning, max(th, tw)),
                              ("second: 3 pages 3840x2880-6000x4500", second, 6000)):
        for config, flags in (("--tile off", []), (f"full resolution (--limit-side-len {full})",
                                                  ["--limit-side-len", str(full)]),
                              ("--tile 960", ["--tile", "960"]), ("--tile auto", ["--tile", "auto"])):
            run(name, label, config, flags)
    for config, flags in (("--tile off", []), ("--tile auto", ["--tile", "auto"])):
        run("big text: 3 pages 3840x2880, text 50-230 px", big, config, flags)
    for config, flags in (("--tile 960", ["--tile", "960"]), ("--tile auto", ["--tile", "auto"])):
        run("memory: 1 page 12000x9000", huge, config, flags)
    run("memory: its four 6000x4500 quarters", quarters, "--tile 960", ["--tile", "960"])
    results["rows"] = table
    results["refused_20000x20000"] = refused(work)

    from openocr_cli.data.synth import generate

    ordinary = work / "ordinary"
    generate(ordinary, num_train=0, num_test=4, seed=21, size=(720, 1280))  # photos: text 13-40 px
    pages(ordinary / "test", [(2339, 1654)] * 2, seed=22, scale=(1.8, 2.0), cover=(0.4, 0.4), prefix="a4-")
    ordinary = ordinary / "test"
    off = predicted(model, ordinary, [], work / "p-off")
    auto = predicted(model, ordinary, ["--tile", "auto"], work / "p-auto")
    results["ordinary_identical"] = off == auto
    results["ordinary_images"] = len(off)

    seams_full = predicted(model, second.parent, ["--limit-side-len", "6000"], work / "p-full")
    seams_auto = predicted(model, second.parent, ["--tile", "auto"], work / "p-sauto")
    results["duplicates"] = {"auto": sum(map(duplicates, seams_auto.values())),
                             "full": sum(map(duplicates, seams_full.values()))}

    print("\n| set | configuration | hmean | seconds | peak RSS MB |\n|---|---|---:|---:|---:|")
    for row in table:
        print(f"| {row['set']} | {row['config']} | {row['hmean']:.4f} | {row['seconds']:.1f} | {row['peak_rss_mb']} |")
    print(f"\nordinary inputs (4 of 1280x720, 2 A4 at 200 dpi): --tile auto boxes identical to --tile off: "
          f"{results['ordinary_identical']}")
    print(f"box pairs overlapping > 30 % of the smaller one (second set): --tile auto {results['duplicates']['auto']}, "
          f"full resolution {results['duplicates']['full']}")
    print(f"20000x20000 PNG, predict --tile auto: {results['refused_20000x20000']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
