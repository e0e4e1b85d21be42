"""`predict --ray` against a local `predict` of the same images: throughput once the workers are up, and wall time
with start-up included.

The model is RepViT-DB with random weights exported to ONNX (the network's real cost; the boxes do not matter),
the images `--images` synthetic pages of `--size` pixels. Each run is a separate `openocr-det predict` process;
the runs alternate local / Ray `--rounds` times so the machine's load hits both alike. "Steady" counts the
images written from the moment a quarter of them are in the file to the process's end, over that time (model
loading, Ray's start and the actors' start-up excluded; a quarter, not the first line, because a Ray run writes
in input order and its first line can wait for a later batch); "wall" is the whole command. Both write
det_results.txt, which must be equal line for line. The Ray runs start a local cluster for the run (`--ray`):
2 actors on this 2-CPU machine, one thread each; the local run uses every core in one process.

    .venv/bin/python benchmarks/bench_ray.py [--images 300] [--size 320x240] [--rounds 2] [--work /tmp/bench_ray]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def model_file(path: Path) -> Path:
    import torch

    from openocr_cli.export.onnx_export import ExportOptions, export_onnx
    from openocr_cli.model import build_detector

    if not path.is_file():
        torch.manual_seed(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(build_detector().eval(), path, ExportOptions(), {})
    return path


def pages(folder: Path, count: int, h: int, w: int) -> Path:
    if folder.is_dir() and len(os.listdir(folder)) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
        for _ in range(8):
            x, y = int(rng.integers(0, w - 120)), int(rng.integers(0, h - 30))
            cv2.rectangle(image, (x, y), (x + int(rng.integers(40, 120)), y + int(rng.integers(10, 30))),
                          (230, 240, 250), -1)
        cv2.imwrite(str(folder / f"page_{i:05d}.png"), image)
    return folder


def run(folder: Path, model: Path, out: Path, images: int, *extra: str) -> dict:
    """One predict process: wall seconds, seconds to the first result line, steady images/s from a quarter on."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "openocr_cli", "predict", str(folder), "--onnx-model", str(model), "--no-vis",
            "--output", str(out), *extra]
    results = out / "det_results.txt"
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = quarter = None
    quarter_lines = 0
    while proc.poll() is None:
        lines = _lines(results) if results.exists() else 0
        now = time.perf_counter() - start
        if first is None and lines:
            first = now
        if quarter is None and lines >= images // 4:
            quarter, quarter_lines = now, lines
        time.sleep(0.05)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({' '.join(argv)}):\n{err[-3000:]}")
    total = _lines(results)
    first = wall if first is None else first
    quarter = wall if quarter is None else quarter
    steady = (total - quarter_lines) / max(wall - quarter, 1e-9)
    return {"wall": wall, "first": first, "steady": steady, "images": total, "text": results.read_text()}


def _lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.endswith(b"\n"))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", default="320x240", help="WxH of the pages")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_ray"))
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    model = model_file(args.work / "repvit_random.onnx")
    folder = pages(args.work / f"pages_{args.images}_{w}x{h}", args.images, h, w)
    runs: dict[str, list[dict]] = {"local": [], "ray": []}
    for _ in range(args.rounds):
        runs["local"].append(run(folder, model, args.work / "out_local", args.images, "--device", "cpu"))
        runs["ray"].append(run(folder, model, args.work / "out_ray", args.images, "--ray"))
        assert runs["ray"][-1]["text"] == runs["local"][-1]["text"], "predict --ray wrote other lines"

    def best(name: str, key: str, low: bool) -> float:
        values = [r[key] for r in runs[name]]
        return min(values) if low else max(values)

    local_wall, ray_wall = best("local", "wall", True), best("ray", "wall", True)
    local_rate, ray_rate = best("local", "steady", False), best("ray", "steady", False)
    print(f"bench_ray: {args.images} pages of {w}x{h}, RepViT-DB (random weights) as ONNX, {args.rounds} rounds "
          f"alternating, best of each; CPU: {cpu_model()}, {os.cpu_count()} logical CPUs (machine shared: figures "
          "are lower bounds)")
    print(f"{'':24}{'local predict':>16}{'predict --ray':>16}{'ratio':>8}  goal")
    print(f"{'steady images/s':24}{local_rate:16.2f}{ray_rate:16.2f}{ray_rate / local_rate:8.2f}  >= 0.8")
    print(f"{'wall s (start-up incl.)':24}{local_wall:16.1f}{ray_wall:16.1f}{local_wall / ray_wall:8.2f}  >= 0.6")
    print(f"{'first line after s':24}{best('local', 'first', True):16.1f}{best('ray', 'first', True):16.1f}")
    per_core = ray_rate / max(os.cpu_count() or 1, 1)
    print(f"CPU core-hours per million images (--ray, steady): {1e6 / per_core / 3600:.1f} "
          f"({per_core:.2f} images/s per core)")
    print("det_results.txt: equal line for line in every round")


if __name__ == "__main__":
    main()
