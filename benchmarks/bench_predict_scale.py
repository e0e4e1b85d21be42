"""Large predict runs: start-up time and peak memory over many tiny files, a resumed run against a full one,
and how fast a huge folder starts (the lazy listing against collect_images).

The model is a stand-in ONNX graph (sigmoid of the channel mean, as the tests use), so the figures are the
pipeline's own cost (listing, decoding, writing, resume scan), not the network's. Every predict run is a
separate process, its peak RSS from os.wait4.

    .venv/bin/python benchmarks/bench_predict_scale.py [--files 100000] [--listing 1000000] [--work /tmp/bench_scale]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parents[1]


def stand_in_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "H", "W"])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0),
                               helper.make_node("Sigmoid", ["m"], ["y"])], "stand-in", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tiny_files(folder: Path, count: int) -> Path:
    """`count` 16x16 PNGs with one bright bar each (one box per image)."""
    folder.mkdir(parents=True, exist_ok=True)
    if sum(1 for _ in os.scandir(folder)) == count:
        return folder
    image = np.full((16, 16, 3), 20, np.uint8)
    image[5:11, 2:14] = 240
    data = cv2.imencode(".png", image)[1].tobytes()
    for i in range(count):
        (folder / f"img_{i:07d}.png").write_bytes(data)
    return folder


def predict(folder: Path, model: Path, out: Path, *extra: str, kill_at_lines: int = 0) -> dict:
    """One `openocr-det predict` process: seconds to its first result line, wall seconds, peak RSS (MB)."""
    env = dict(os.environ, OPENOCR_DET_NO_PROGRESS="1", OPENOCR_DET_OFFLINE="1")
    argv = [sys.executable, "-m", "openocr_cli", "predict", str(folder), "--onnx-model", str(model), "--device",
            "cpu", "--no-vis", "--batch-size", "16", "--threads", "1", "--output", str(out), *extra]
    results = out / ("det_results.jsonl" if "jsonl" in extra else "det_results.txt")
    if "--resume" not in extra:
        shutil.rmtree(out, ignore_errors=True)
    before = results.stat().st_size if results.exists() else 0
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first, waited = None, (0, 0, None)
    while True:  # os.wait4 reaps the process with its rusage (Popen.poll would reap it without)
        waited = os.wait4(proc.pid, os.WNOHANG)
        if waited[0]:
            break
        size = results.stat().st_size if results.exists() else 0
        if first is None and size > before:
            first = time.perf_counter() - start
        if kill_at_lines and first is not None and _lines(results) >= kill_at_lines:
            proc.send_signal(signal.SIGKILL)
            waited = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    _, status, usage = waited
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    proc.stderr.close()
    return {"first_line_s": first, "wall_s": wall, "rss_mb": usage.ru_maxrss / 1024,
            "exit": os.waitstatus_to_exitcode(status), "lines": _lines(results)}


def _lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def listing_start(folder: Path, lazy: bool) -> dict:
    """Seconds to the first input path and peak RSS of a fresh process listing `folder`."""
    code = ("import resource, sys, time\n"
            "t = time.perf_counter()\n"
            + ("from openocr_cli.data import listing\nlisting.check_sources([sys.argv[1]])\n"
               "first = next(listing.iter_files([sys.argv[1]]))\n" if lazy else
               "from openocr_cli.data.images import collect_images\nfirst = collect_images([sys.argv[1]])[0]\n")
            + "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
    base = subprocess.run([sys.executable, "-c", "import resource, openocr_cli.data.listing, openocr_cli.data.images;"
                           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"],
                          capture_output=True, text=True, check=True, cwd=REPO)
    got = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True,
                         cwd=REPO)
    seconds, rss = map(float, got.stdout.split())
    return {"first_s": seconds, "rss_mb": rss, "import_rss_mb": float(base.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000, help="tiny images for the predict runs")
    parser.add_argument("--listing", type=int, default=1_000_000, help="empty files, listing test (0: skip)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_scale"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = stand_in_model(args.work / "stand_in.onnx")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    if args.listing:
        folder = args.work / f"empty_{args.listing}"
        folder.mkdir(exist_ok=True)
        if sum(1 for _ in os.scandir(folder)) != args.listing:
            for i in range(args.listing):
                open(folder / f"img_{(i * 7919) % 1_000_003:07d}.png", "wb").close()
        print(f"\nA folder of {args.listing:,} files, to the first input path (fresh process each):\n")
        print("| listing | first path | peak RSS | RSS of the imports alone |\n|---|---:|---:|---:|")
        for lazy, name in ((False, "collect_images (before)"), (True, "data/listing.py (predict now)")):
            r = listing_start(folder, lazy)
            print(f"| {name} | {r['first_s']:.1f} s | {r['rss_mb']:.0f} MB | {r['import_rss_mb']:.0f} MB |")

    folder = tiny_files(args.work / f"tiny_{args.files}", args.files)
    print(f"\npredict over {args.files:,} tiny PNGs (16x16), stand-in model, --no-vis --batch-size 16:\n")
    print("| run | first line after | wall | images/s | peak RSS |\n|---|---:|---:|---:|---:|")
    rows = []
    full = predict(folder, model, args.work / "out_full")
    rows.append(("full run", full, args.files))
    small = tiny_files(args.work / "tiny_1000", 1000)
    rows.append(("full run, 1,000 files (memory baseline)", predict(small, model, args.work / "out_small"), 1000))
    jsonl = predict(folder, model, args.work / "out_jsonl", "--format", "jsonl")
    rows.append(("full run, --format jsonl", jsonl, args.files))
    half = args.files // 2
    killed = predict(folder, model, args.work / "out_resume", kill_at_lines=half)
    rows.append((f"killed (SIGKILL) after {killed['lines']:,} lines", killed, killed["lines"]))
    resumed = predict(folder, model, args.work / "out_resume", "--resume")
    rows.append((f"--resume: the other {args.files - killed['lines']:,}", resumed, args.files - killed["lines"]))
    for name, r, images in rows:
        first = "-" if r["first_line_s"] is None else f"{r['first_line_s']:.1f} s"
        print(f"| {name} | {first} | {r['wall_s']:.1f} s | {images / r['wall_s']:.0f} | {r['rss_mb']:.0f} MB |")
    same = (args.work / "out_resume" / "det_results.txt").read_bytes() == \
        (args.work / "out_full" / "det_results.txt").read_bytes()
    print(f"\nresumed file == full run's file: {same}; resumed wall / full wall = "
          f"{resumed['wall_s'] / full['wall_s']:.2f}")


if __name__ == "__main__":
    main()
