"""Huge images: the default resize vs full resolution vs tiles, on mosaics of generated text renders.

Each mosaic is a ROWS x COLS grid of generated 384x512 text images (labels shifted along), so a
6x6 mosaic is 2304x3072 with text 12-55 px tall, the size of a phone photo or a scan. Every
configuration runs `openocr-det eval` as a fresh process on the same mosaics: the default (limit side
960), full resolution (--limit-side-len = the mosaic's longer side), --tile 960 and --tile auto. Printed:
hmean, wall seconds and peak RSS (the process's own, os.wait4) per configuration.

    .venv/bin/python benchmarks/bench_tiles.py --weights best.pth [--mosaics 3] [--grid 6x6]
        [--backend onnx|openvino] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from bench_vs_openocr import timed  # one process, timed and measured (benchmarks/ is on sys.path)

PY = sys.executable


def mosaics(folder: Path, count: int, rows: int, cols: int, seed: int) -> tuple[Path, int, int]:
    """`count` mosaics and their label file in `folder`; returns (label file, height, width)."""
    from openocr_cli.data.synth import generate

    synth = generate(folder / "parts", num_train=0, num_test=count * rows * cols, seed=seed, size=(384, 512))
    lines = synth.data_dir.joinpath("test_label.txt").read_text(encoding="utf-8").splitlines()
    out = []
    for m in range(count):
        canvas = np.zeros((rows * 384, cols * 512, 3), np.uint8)
        regions = []
        for k in range(rows * cols):
            rel, _, labels = lines[m * rows * cols + k].partition("\t")
            y, x = (k // cols) * 384, (k % cols) * 512
            canvas[y:y + 384, x:x + 512] = cv2.imread(str(synth.data_dir / rel))
            for region in json.loads(labels):
                region["points"] = [[px + x, py + y] for px, py in region["points"]]
                regions.append(region)
        name = f"mosaic{m}.png"
        cv2.imwrite(str(folder / name), canvas)
        out.append(f"{name}\t{json.dumps(regions)}\n")
    label = folder / "label.txt"
    label.write_text("".join(out), encoding="utf-8")
    return label, rows * 384, cols * 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="a trained checkpoint (exported to ONNX here)")
    parser.add_argument("--mosaics", type=int, default=3)
    parser.add_argument("--grid", default="6x6", help="ROWSxCOLS of 384x512 renders per mosaic")
    parser.add_argument("--backend", choices=("onnx", "openvino"), default="onnx")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.grid.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="bench-tiles-") as tmp:
        tmp = Path(tmp)
        label, h, w = mosaics(tmp / "data", args.mosaics, rows, cols, args.seed)
        model = tmp / ("det.xml" if args.backend == "openvino" else "det.onnx")
        fmt = ["--format", "openvino"] if args.backend == "openvino" else []
        subprocess.run([PY, "-m", "openocr_cli", "export", "-w", str(args.weights), "--output", str(model), *fmt],
                       check=True, capture_output=True)
        flag = "--openvino-model" if args.backend == "openvino" else "--onnx-model"
        base = [PY, "-m", "openocr_cli", "eval", flag, str(model), "--data-dir", str(tmp / "data"), "--label-file",
                str(label), "--device", "cpu"]
        configs = {"default (limit side 960)": [],
                   f"full resolution (--limit-side-len {max(h, w)})": ["--limit-side-len", str(max(h, w))],
                   "--tile 960": ["--tile", "960"], "--tile auto": ["--tile", "auto"]}
        rows_out = []
        for name, extra in configs.items():
            out = tmp / f"{len(rows_out)}.json"
            wall, peak = timed([*base, *extra, "--json", str(out)], tmp)
            rows_out.append({"config": name, "hmean": json.loads(out.read_text())["hmean"], "seconds": wall,
                             "peak_rss_mb": peak})
    print(f"{args.mosaics} mosaics of {h}x{w} ({rows}x{cols} renders of 384x512), {args.backend} backend, "
          f"each configuration one eval process\n")
    print("| configuration | hmean | seconds | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for row in rows_out:
        print(f"| {row['config']} | {row['hmean']:.4f} | {row['seconds']:.1f} | {row['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"size": [h, w], "rows": rows_out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
