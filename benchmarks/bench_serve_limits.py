"""`openocr-det serve` under the attacks of issue 35, measured with a real RepViT-DB model over loopback.

1. Tiles (D1): a 47 KB 7000x7000 PNG asking tile=64 (refused at once), then one asking tile=960 (81 tiles, within
   --max-tiles) with --timeout-s 10; meanwhile a normal page is sent: its latency. Then the same tiled request
   again and SIGTERM while it runs: seconds until the process exits (the promise: --timeout-s + 5).
2. Memory (D2): twelve concurrent 7000x7000 PNGs at the default --max-pixels-in-flight: the server's peak RSS,
   its RSS before and 3 s after, and how many were answered 200 / 503.
3. Slow clients (D3): --max-queue 2, two connections trickling their bodies a byte at a time, and 35 normal
   requests over about 20 s: the share answered 200.

    .venv/bin/python benchmarks/bench_serve_limits.py [--onnx-model det.onnx] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_vs_openocr import export, make_weights

from tests.serving import Server, rss_mb

TIMEOUT_S = 10


def huge_png() -> bytes:
    return cv2.imencode(".png", np.zeros((7000, 7000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


def page_png() -> bytes:
    image = np.full((480, 640, 3), 30, np.uint8)
    for k in range(5):
        cv2.putText(image, f"line {k} of text", (20, 60 + 80 * k), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (230, 230, 230), 3)
    return cv2.imencode(".png", image)[1].tobytes()


def timed(call, *args, **kw):
    start = time.monotonic()
    result = call(*args, **kw)
    return result, time.monotonic() - start


def tiles(model_flag: list[str], threads: str) -> dict:
    big, page = huge_png(), page_png()
    with Server(*model_flag, "--threads", threads, "--timeout-s", str(TIMEOUT_S)) as srv:
        (refused, _, _), refused_s = timed(srv.detect, big, query="tile=64", timeout=120)
        with ThreadPoolExecutor(2) as pool:
            tiled = pool.submit(timed, srv.detect, big, query="tile=960", timeout=120)
            time.sleep(3)
            (normal, _, _), normal_s = timed(srv.detect, page, timeout=120)
            (tiled_status, _, _), tiled_s = tiled.result()
        with ThreadPoolExecutor(1) as pool:
            pool.submit(srv.detect, big, query="tile=960", timeout=120)
            time.sleep(3)
            start = time.monotonic()
            code = srv.stop(timeout=120)
            stop_s = time.monotonic() - start
    return {"tile64_status": refused, "tile64_s": round(refused_s, 2), "tiled960_status": tiled_status,
            "tiled960_s": round(tiled_s, 2), "normal_during_tiles_status": normal, "normal_during_tiles_s":
            round(normal_s, 2), "sigterm_exit_code": code, "sigterm_to_exit_s": round(stop_s, 2),
            "promise_s": TIMEOUT_S + 5}


def memory(model_flag: list[str], threads: str) -> dict:
    big = huge_png()
    with Server(*model_flag, "--threads", threads, "--timeout-s", "300") as srv:  # no 504 on a shared machine
        info = srv.get("/v1/info")[2]["limits"]
        srv.detect(page_png())
        idle = rss_mb(srv.proc.pid)
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: srv.detect(big, timeout=600)[0], range(12)))
        time.sleep(3)
        after, peak = rss_mb(srv.proc.pid), rss_mb(srv.proc.pid, "VmHWM")
        srv.stop()
    return {"max_pixels_in_flight": info["max_pixels_in_flight"],
            "statuses": {str(code): answers.count(code) for code in sorted(set(answers))},
            "idle_mb": round(idle), "peak_mb": round(peak), "after_3s_mb": round(after)}


def trickle(port: int, stop: threading.Event) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000\r\n\r\n")
        try:
            while not stop.is_set():
                sock.sendall(b" ")
                time.sleep(0.5)
        except OSError:
            return


def slow_clients(model_flag: list[str], threads: str) -> dict:
    page = page_png()
    with Server(*model_flag, "--threads", threads, "--max-queue", "2") as srv:
        stop = threading.Event()
        trick = [threading.Thread(target=trickle, args=(srv.port, stop), daemon=True) for _ in range(2)]
        for t in trick:
            t.start()
        time.sleep(1)
        statuses = []
        start = time.monotonic()
        for _ in range(35):
            statuses.append(srv.detect(page, timeout=60)[0])
            time.sleep(20 / 35)
        stop.set()
        srv.stop()
    return {"legitimate": len(statuses), "ok": statuses.count(200), "share_ok": round(statuses.count(200) / 35, 3),
            "seconds": round(time.monotonic() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx-model", type=Path, help="default: a random-init RepViT-DB exported to ONNX fp32")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp:
        model = args.onnx_model
        if model is None:
            model = Path(tmp) / "fp32.onnx"
            export(make_weights(Path(tmp) / "weights.pth"), model, [])
        flag = ["--onnx-model", str(model)]
        results = {"tiles": tiles(flag, args.threads), "memory": memory(flag, args.threads),
                   "slow_clients": slow_clients(flag, args.threads)}
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
