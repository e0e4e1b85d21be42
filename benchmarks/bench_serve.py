"""Load on `openocr-det serve` over loopback: requests/s and latency per concurrency level, and memory.

One server process runs the model; N client threads (persistent HTTP connections, bodies encoded up front)
each send a bounded number of detect requests. Per level: images/s, p50/p95/p99 latency, errors, and the
server's RSS after it. The reference is `openocr-det benchmark` on the same images, model and threads (its
images/s: decode + resize + forward + post-process of a whole pass). A soak at 8 clients then sends thousands
of requests and reports the RSS growth. Client and server share the machine's cores, as they would on one
host, so the service ratio is, if anything, understated.

    .venv/bin/python benchmarks/bench_serve.py [--onnx-model det.onnx | --openvino-model det.xml]
        [--images 32] [--size 480x640] [--threads 2] [--levels 1,2,4,8,16] [--requests 160] [--soak 2000]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_vs_openocr import PY, export, make_weights

from tests.serving import Server, multipart, rss_mb


def reference_images_per_s(model_flag: list[str], images: Path, threads: int, runs: int, out: Path) -> float:
    """`openocr-det benchmark` for the same model, images and threads: images/s of a whole pass."""
    cmd = [PY, "-m", "openocr_cli", "benchmark", *model_flag, "--images", str(images), "--threads", str(threads),
           "--device", "cpu", "--runs", str(runs), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"benchmark failed: {proc.stderr[-2000:]}")
    return json.loads(out.read_text())["rows"][0]["images_per_s"]


def load(port: int, bodies: list[tuple[bytes, str]], clients: int, requests: int) -> dict:
    """`requests` detect calls spread over `clients` threads; latencies in ms, errors by status."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            body, kind = bodies[n % len(bodies)]
            start = time.perf_counter()
            try:
                conn.request("POST", "/v1/detect", body=body, headers={"Content-Type": kind})
                response = conn.getresponse()
                data = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                status, data = type(exc).__name__, b""
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                if status == 200 and data.startswith(b'{"detections"'):
                    latencies.append(elapsed)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    return {"clients": clients, "requests": requests, "ok": len(latencies), "errors": errors,
            "images_per_s": len(latencies) / wall, "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "mean_ms": statistics.fmean(latencies) if latencies else float("nan")}


def median_row(rounds: list[dict]) -> dict:
    """The round with the median images/s, errors summed over every round."""
    row = dict(sorted(rounds, key=lambda r: r["images_per_s"])[len(rounds) // 2])
    errors: dict[str, int] = {}
    for r in rounds:
        for status, n in r["errors"].items():
            errors[status] = errors.get(status, 0) + n
    row["errors"], row["requests"], row["rounds"] = errors, sum(r["requests"] for r in rounds), len(rounds)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx-model", type=Path, help="default: a random-init RepViT-DB exported to ONNX fp32")
    parser.add_argument("--openvino-model", type=Path)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", default="480x640", help="image size HxW")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--levels", default="1,2,4,8,16")
    parser.add_argument("--requests", type=int, default=160, help="requests per concurrency level")
    parser.add_argument("--soak", type=int, default=2000, help="requests at 8 clients for the memory check")
    parser.add_argument("--runs", type=int, default=3, help="timed passes of each `benchmark` reference run")
    parser.add_argument("--rounds", type=int, default=3, help="reference + load rounds, interleaved; medians")
    parser.add_argument("--serve-args", default="", help="more `serve` flags, e.g. \"--max-batch 1\"")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))

    from openocr_cli.data.synth import generate

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = Path(tmp)
        images = generate(tmp / "data", num_train=0, num_test=args.images, seed=0, size=(h, w)).data_dir / "test"
        if args.openvino_model is not None:
            model_flag = ["--openvino-model", str(args.openvino_model)]
        else:
            model = args.onnx_model
            if model is None:
                model = tmp / "fp32.onnx"
                export(make_weights(tmp / "weights.pth"), model, [])
            model_flag = ["--onnx-model", str(model)]
        bodies = [multipart({"image": (p.name, p.read_bytes())}) for p in sorted(images.iterdir())]

        levels = [int(v) for v in args.levels.split(",")]
        with Server(*model_flag, "--threads", str(args.threads), "--max-queue", str(max(levels) * 4),
                    *args.serve_args.split()) as srv:
            pid = srv.proc.pid
            load(srv.port, bodies, 2, 2 * len(bodies))  # warm: every image size seen, allocator settled
            rss_start = rss_mb(pid)
            rows, references = [], []
            for _ in range(args.rounds):  # the reference and the service interleaved: noise hits both alike
                references.append(reference_images_per_s(model_flag, images, args.threads, args.runs,
                                                         tmp / "bench.json"))
                for clients in levels:
                    row = load(srv.port, bodies, clients, args.requests)
                    row["rss_mb"] = rss_mb(pid)
                    rows.append(row)
            rows = [median_row([r for r in rows if r["clients"] == clients]) for clients in levels]
            reference = statistics.median(references)
            soak_start = rss_mb(pid)
            soak = load(srv.port, bodies, 8, args.soak)
            soak["rss_before_mb"], soak["rss_after_mb"] = soak_start, rss_mb(pid)
            code = srv.stop()
        if code != 0:
            sys.exit(f"serve exited {code}:\n{srv.output()[-2000:]}")

    print(f"\n`openocr-det benchmark` reference ({' '.join(model_flag[:1])}, --threads {args.threads}, "
          f"{args.images} images {args.size}): {reference:.1f} images/s (median of {args.rounds} runs, interleaved "
          "with the load rounds; each row is the median round)\n")
    print("| clients | images/s | vs benchmark | p50 ms | p95 ms | p99 ms | errors | server RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        errors = sum(row["errors"].values())
        print(f"| {row['clients']} | {row['images_per_s']:.1f} | {row['images_per_s'] / reference:.0%} | "
              f"{row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['p99_ms']:.0f} | {errors} | {row['rss_mb']:.0f} |")
    growth = soak["rss_after_mb"] - soak["rss_before_mb"]
    print(f"\nsoak: {soak['ok']} requests at 8 clients, {sum(soak['errors'].values())} errors, "
          f"{soak['images_per_s']:.1f} images/s; server RSS {soak['rss_before_mb']:.0f} -> "
          f"{soak['rss_after_mb']:.0f} MB ({growth:+.0f} MB; {rss_start:.0f} MB after warm-up)")
    if args.json is not None:
        args.json.write_text(json.dumps({"reference_images_per_s": reference, "levels": rows, "soak": soak,
                                         "rss_after_warm_up_mb": rss_start}, indent=2))


if __name__ == "__main__":
    main()
