"""Torch predict on a CPU other processes keep busy: default threads vs --threads 1 vs the load-fitted
count vs ONNX Runtime.

Starts --busy competing processes (pure-Python spin loops, one core each) and, while they run, times
predict on --images generated images in fresh child processes, one per configuration, rounds
interleaved so the contention hits every configuration alike. Then the same without the busy
processes ("quiet"). Configurations:

  torch default   the thread count torch picks by itself (one per core), as before the fit
  torch 1         --threads 1
  torch fitted    openocr-det's default now: cores usable minus the load average (inference/cpu_threads.py)
  onnx            ONNX Runtime with its own default threads (an fp32 export of the same random weights)

    .venv/bin/python benchmarks/bench_threads.py [--busy 3] [--images 8] [--size 480x640] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time, torch
from pathlib import Path
from openocr_cli import Detector
args = json.loads(sys.argv[1])
if args["torch_threads"]:
    torch.set_num_threads(args["torch_threads"])
det = Detector(args["model"], device="cpu", threads=args["threads"])
images = sorted(Path(args["images"]).glob("*.png"))
det.predict(images[:1])  # warm-up, untimed
start = time.perf_counter()
det.predict(images)
print(json.dumps({"images_per_s": len(images) / (time.perf_counter() - start), "threads": torch.get_num_threads()}))
"""

SPIN = "while True: pass"


def prepare(folder: Path, count: int, size: tuple[int, int]) -> tuple[Path, Path, Path]:
    import cv2
    import numpy as np
    import torch

    from openocr_cli.export.onnx_export import ExportOptions, export_onnx
    from openocr_cli.model import build_detector

    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(images / f"{i:03d}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    torch.manual_seed(0)
    model = build_detector()
    ckpt = folder / "random.pth"
    torch.save(model.state_dict(), ckpt)
    model.eval().fuse()
    onnx = folder / "random.onnx"
    export_onnx(model, onnx, ExportOptions(), {"mean": "[0.485, 0.456, 0.406]", "std": "[0.229, 0.224, 0.225]",
                                               "channel_order": "BGR"})
    return images, ckpt, onnx


def run(config: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from openocr_cli.inference.cpu_threads import usable_cpus

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=3, help="competing busy processes")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", default="480x640", help="HxW of the generated images")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    cpus = usable_cpus()
    with tempfile.TemporaryDirectory() as tmp:
        images, ckpt, onnx = prepare(Path(tmp), args.images, size)
        configs = {
            "torch default": {"model": str(ckpt), "threads": cpus, "torch_threads": 0},
            "torch 1": {"model": str(ckpt), "threads": 1, "torch_threads": 0},
            "torch fitted": {"model": str(ckpt), "threads": None, "torch_threads": 0},
            "onnx": {"model": str(onnx), "threads": None, "torch_threads": 0},
        }
        results: dict[str, dict[str, list[float]]] = {"busy": {}, "quiet": {}}
        threads: dict[str, int] = {}
        for phase in ("busy", "quiet"):
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy if phase == "busy"
                                                                                        else 0)]
            try:
                time.sleep(2 if spinners else 0)
                for _ in range(args.rounds):
                    for name, config in configs.items():
                        got = run({**config, "images": str(images)})
                        results[phase].setdefault(name, []).append(got["images_per_s"])
                        if phase == "busy" and name.startswith("torch"):
                            threads[name] = got["threads"]
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.wait()
    print(f"{cpus} usable CPU(s), {args.busy} busy process(es), {args.images} images {args.size}, "
          f"{args.rounds} round(s), median images/s:")
    print(f"{'configuration':16} {'busy':>8} {'quiet':>8} {'threads (busy)':>15}")
    for name in configs:
        busy, quiet = statistics.median(results["busy"][name]), statistics.median(results["quiet"][name])
        print(f"{name:16} {busy:8.2f} {quiet:8.2f} {threads.get(name, '-'):>15}")


if __name__ == "__main__":
    main()
