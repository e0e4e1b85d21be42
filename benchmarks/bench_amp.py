"""Mixed precision on this machine: float32 against bfloat16 (docs/guides/mixed-precision.md).

Three measurements, each side by side so that a shared machine's load hits both precisions alike:

* `step`: the training step in one process (RepViT-DB from random init, channels-last, forward + DB loss +
  backward + fused Adam, as the trainer runs it), float32 and bf16 autocast alternating step by step;
  samples/s of each and their ratio (median of the per-pair ratios).
* `predict`: whole `openocr-det predict` processes (start-up included) on generated 640x480 images, float32
  and bf16 alternating, with the torch backend and, with --openvino, with OpenVINO on an IR exported from the
  same weights; with --labels, `eval --precision bf16` on that labelled set (hmean drop and its interval).
* `convergence`: `openocr-det train` from scratch on a generated set at --amp off and --amp bf16 (same seed,
  same epochs, evaluated every epoch); the best hmean of each.

    .venv/bin/python benchmarks/bench_amp.py step --steps 8 --batch-size 4 --crop 320
    .venv/bin/python benchmarks/bench_amp.py predict --images 60 --rounds 2 --openvino
    .venv/bin/python benchmarks/bench_amp.py predict --weights run/best.pth --labels data/test_label.txt
    .venv/bin/python benchmarks/bench_amp.py convergence --work /tmp/amp-conv --epochs 12
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OPENOCR_DET_OFFLINE": "1", "OPENOCR_DET_NO_PROGRESS": "1"}


def step(a) -> dict:
    import torch

    from openocr_cli.model import build_detector
    from openocr_cli.training.loss import DBLoss

    torch.manual_seed(0)
    model = build_detector().to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    loss_fn = DBLoss()
    n, c = a.batch_size, a.crop
    images = torch.randn(n, 3, c, c).contiguous(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(1)
    labels = [torch.rand(n, c, c, generator=gen), torch.ones(n, c, c),
              (torch.rand(n, c, c, generator=gen) > 0.8).float(), torch.ones(n, c, c)]

    def one(dtype) -> float:
        start = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with autocast:
            preds = model(images)
        loss = loss_fn(preds, labels)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    one(None), one(torch.bfloat16)  # warm-up: oneDNN builds its kernels at the first step of each
    pairs = []
    for i in range(a.steps):
        order = [None, torch.bfloat16] if i % 2 == 0 else [torch.bfloat16, None]
        times = {str(d): one(d) for d in order}
        pairs.append((times["None"], times["torch.bfloat16"]))
        print(f"step {i + 1}: fp32 {pairs[-1][0]:.2f} s, bf16 {pairs[-1][1]:.2f} s", flush=True)
    fp32 = statistics.median(p[0] for p in pairs)
    bf16 = statistics.median(p[1] for p in pairs)
    result = {"batch_size": n, "crop": c, "steps": a.steps, "fp32_samples_per_s": n / fp32,
              "bf16_samples_per_s": n / bf16, "ratio": statistics.median(p[0] / p[1] for p in pairs)}
    print(f"training step, batch {n}, {c}x{c}: fp32 {n / fp32:.2f} samples/s, bf16 {n / bf16:.2f} samples/s, "
          f"bf16 / fp32 = {result['ratio']:.2f}x (median of {a.steps} interleaved pairs)")
    return result


def _cli(*args: str, log: Optional[Path] = None) -> float:
    """Seconds a whole `python -m openocr_cli ARGS` process takes (start-up included)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "openocr_cli", *args], env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if log is not None:
        log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode:
        raise SystemExit(f"openocr-det {' '.join(args[:3])} ... failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-2000:]}")
    return seconds


def predict(a) -> dict:

    work = a.work or Path(tempfile.mkdtemp(prefix="bench-amp-"))
    images = work / "images"
    if not images.is_dir():
        images.mkdir(parents=True)
        _make_images(images, a.images)
    weights = a.weights
    if weights is None:
        import torch

        from openocr_cli.model import build_detector

        torch.manual_seed(0)
        weights = work / "random.pth"
        torch.save(build_detector().state_dict(), weights)
    routes = [("torch", ["--weights", str(weights)])]
    if a.openvino:
        xml = work / "model.xml"
        if not xml.is_file():
            _cli("export", "--weights", str(weights), "--format", "openvino", "--output", str(xml))
        routes.append(("openvino", ["--openvino-model", str(xml)]))
    result: dict = {"images": a.images, "size": "640x480"}
    for name, model in routes:
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for r in range(a.rounds):
            for precision in (["fp32", "bf16"] if r % 2 == 0 else ["bf16", "fp32"]):
                out = work / f"out-{name}-{precision}"
                seconds = _cli("predict", str(images), *model, "--device", "cpu", "--precision", precision,
                               "--output", str(out), "--no-vis", log=out.with_suffix(".log"))
                times[precision].append(seconds)
                print(f"round {r + 1}: {name} {precision}: {seconds:.1f} s", flush=True)
        ratio = statistics.median(f / b for f, b in zip(times["fp32"], times["bf16"]))
        result[name] = {"fp32_s": statistics.median(times["fp32"]), "bf16_s": statistics.median(times["bf16"]),
                        "ratio": ratio}
        print(f"{name}: fp32 {result[name]['fp32_s']:.1f} s, bf16 {result[name]['bf16_s']:.1f} s for {a.images} "
              f"images, bf16 / fp32 = {ratio:.2f}x faster (whole processes)")
    if a.labels is not None:
        report = work / "eval-bf16.json"
        _cli("eval", "--weights", str(weights), "--data-dir", str(a.labels.parent), "--label-file", str(a.labels),
             "--device", "cpu", "--precision", "bf16", "--json", str(report))
        check = json.loads(report.read_text())["precision_check"]
        result["hmean"] = check
        lo, hi = check["interval"]
        print(f"hmean fp32 {check['fp32_hmean']:.4f}, bf16 {check['hmean']:.4f}: drop {check['drop']:+.2f} points "
              f"(95% interval {lo:+.2f} to {hi:+.2f}), verdict {check['decision']}")
    return result


def _make_images(folder: Path, count: int) -> None:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(count):
        image = np.full((480, 640, 3), 220, np.uint8)
        for _ in range(20):
            x, y = int(rng.integers(0, 560)), int(rng.integers(0, 450))
            w, h = int(rng.integers(30, 120)), int(rng.integers(10, 30))
            cv2.rectangle(image, (x, y), (x + w, y + h), (30, 30, 30), -1)
        cv2.imwrite(str(folder / f"img_{i:03d}.jpg"), image)


def convergence(a) -> dict:
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-amp-conv-"))
    data = work / "data"
    if not (data / "train_label.txt").is_file():
        subprocess.run([sys.executable, "-m", "openocr_cli.data.synth", str(data), "--train", str(a.train),
                        "--test", "16", "--seed", "0", "--size", "240x320"], env=ENV, check=True,
                       capture_output=True)
    result = {}
    for amp in ("off", "bf16"):
        run = work / f"run-{amp}"
        _cli("train", "--data-dir", str(data), "--train-label", str(data / "train_label.txt"), "--eval-label",
             str(data / "test_label.txt"), "--weights", "none", "--device", "cpu", "--epochs", str(a.epochs),
             "--batch-size", "8", "--workers", "1", "--lr", "0.002", "--seed", "1", "--output", str(run),
             "--overwrite", "-o", "Train.dataset.transforms.4.EastRandomCropData.size=[192, 192]",
             "-o", "Eval.dataset.transforms.2.DetResizeForTest.limit_side_len=320", "--amp", amp,
             log=work / f"train-{amp}.log")
        result[amp] = best_hmeans(run)
    for amp, row in result.items():
        print(f"--amp {amp}: best hmean {row['best']:.4f} (epoch {row['epoch']}); per epoch "
              f"{', '.join(f'{h:.3f}' for h in row['per_epoch'])}")
    return result


def best_hmeans(run: Path) -> dict:
    """The per-epoch evaluation hmeans of a run (its metrics.jsonl) and the best of them."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r["hmean"] for r in rows if r.get("type") == "eval" and not r.get("baseline")]
    best = max(range(len(evals)), key=lambda i: evals[i])
    return {"best": evals[best], "epoch": best + 1, "per_epoch": evals}


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("step", help="training step, fp32 and bf16 interleaved in one process")
    s.add_argument("--steps", type=int, default=8)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--crop", type=int, default=480)
    s = sub.add_parser("predict", help="whole predict processes, fp32 and bf16 alternating")
    s.add_argument("--images", type=int, default=60)
    s.add_argument("--rounds", type=int, default=2)
    s.add_argument("--weights", type=Path, help="a checkpoint (default: random weights; speed does not depend on them)")
    s.add_argument("--labels", type=Path, help="a label file: also eval --precision bf16 on it (needs --weights)")
    s.add_argument("--openvino", action="store_true", help="also OpenVINO fp32 against bf16 (an IR of the weights)")
    s.add_argument("--work", type=Path)
    s = sub.add_parser("convergence", help="train from scratch at --amp off and bf16, same seed and epochs")
    s.add_argument("--epochs", type=int, default=12)
    s.add_argument("--train", type=int, default=32, help="generated training images")
    s.add_argument("--work", type=Path)
    p.add_argument("--json", type=Path, help="write the figures as JSON")
    a = p.parse_args(argv)
    result = {"step": step, "predict": predict, "convergence": convergence}[a.what](a)
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
