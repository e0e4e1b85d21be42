"""Predict throughput of the torch and onnxruntime backends: images/s and ms per stage at limit side 960.

Generates 1280x720 images (ICDAR2015's size) with dark text-like bars on a light background,
runs the same Predictor the CLI uses with a freshly initialised, fused RepViT-DB model (and the
same model exported to a temporary ONNX file by `openocr-det export`'s code), and prints a
Markdown table with one row per backend and batch size. Weights do not change the cost, except
post-processing, which depends on how many regions the map has: the random model's map has ~none,
so post-processing is also timed on a map with 30 boxes per image.

    .venv/bin/python benchmarks/bench_predict.py [--images 16] [--batch-sizes 1 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch

from openocr_cli.data.resize import Normalizer, ResizeSpec
from openocr_cli.export.onnx_export import ExportOptions, export_onnx
from openocr_cli.inference.backends.onnx_backend import OnnxBackend
from openocr_cli.inference.backends.torch_backend import TorchBackend, resolve_device
from openocr_cli.inference.predictor import Predictor
from openocr_cli.inference.results import StageTimes
from openocr_cli.model import build_detector
from openocr_cli.postprocess import DBPostProcess


def make_images(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        image = np.full((720, 1280, 3), 220, np.uint8)
        for _ in range(30):
            x, y = int(rng.integers(0, 1100)), int(rng.integers(0, 680))
            w, h = int(rng.integers(40, 180)), int(rng.integers(12, 40))
            cv2.rectangle(image, (x, y), (x + w, y + h), (30, 30, 30), -1)
        path = folder / f"img_{i}.jpg"
        cv2.imwrite(str(path), image)
        paths.append(str(path))
    return paths


def bench_postprocess(runs: int = 20) -> float:
    """ms per image of DBPostProcess on a 544x960 map holding 30 rotated text boxes."""
    rng = np.random.default_rng(1)
    prob = np.zeros((544, 960), np.float32)
    for row in range(6):
        for col in range(5):
            centre = (96.0 + 180 * col, 45.0 + 90 * row)
            size = (float(rng.uniform(60, 150)), float(rng.uniform(12, 30)))
            rect = (centre, size, float(rng.uniform(-15, 15)))
            cv2.fillPoly(prob, [cv2.boxPoints(rect).astype(np.int32)], 0.9)
    post = DBPostProcess()
    start = time.perf_counter()
    for _ in range(runs):
        boxes = post(prob, 720, 1280)
    assert len(boxes) == 30, len(boxes)
    return 1000 * (time.perf_counter() - start) / runs


def run(backend, paths: list[str], batch_size: int) -> tuple[float, float, float, float]:
    """(images/s, preprocess, inference, postprocess ms/img) of one Predictor pass after a warm-up."""
    predictor = Predictor(backend, ResizeSpec(960, "max"), Normalizer(), DBPostProcess(), batch_size=batch_size)
    list(predictor.run(paths[: max(batch_size, 2)]))  # warm-up
    start = time.perf_counter()
    results = list(predictor.run(paths))
    wall = time.perf_counter() - start
    assert len(results) == len(paths) and all(r.error is None for r in results)
    ms = sum((r.times for r in results), StageTimes()).ms_per_image()
    return len(paths) / wall, ms["preprocess"], ms["inference"], ms["postprocess"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = resolve_device(args.device)
    model = build_detector().eval().fuse()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.images)
        onnx_path = Path(tmp) / "det_model.onnx"
        export_onnx(model, onnx_path, ExportOptions(), {})
        backends = [(f"torch ({device.type})", TorchBackend(model, device, channels_last=device.type == "cpu"))]
        runtime = OnnxBackend.load(onnx_path, args.device)
        backends.append((f"onnxruntime ({runtime.providers[0].replace('ExecutionProvider', '')})", runtime))
        for name, backend in backends:
            for bs in args.batch_sizes:
                rows.append((name, bs, *run(backend, paths, bs)))

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__} "
          f"(default threads), {args.images} images 1280x720 -> 544x960\n")
    print("| backend | batch | images/s | preprocess ms/img | inference ms/img | postprocess ms/img |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, bs, ips, pre, inf, post in rows:
        print(f"| {name} | {bs} | {ips:.2f} | {pre:.1f} | {inf:.1f} | {post:.1f} |")
    print(f"\npost-processing a map with 30 text boxes: {bench_postprocess():.1f} ms/img")


if __name__ == "__main__":
    main()
