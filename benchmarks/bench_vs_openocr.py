"""Whole-process `predict` against OpenOCR's tools/infer_det.py: wall time and peak memory, same images, same weights.

Each command runs as a fresh process (start-up, imports, model load, every image, results file),
the commands interleaved run by run so that machine noise hits all of them alike; medians and
ratios to OpenOCR's torch run are printed. Peak RSS is each process's own (os.wait4).

Our side: predict with the torch backend (fp32), with the ONNX backend on a float32 and an int8
export of the same checkpoint (`export --int8`, calibrated on the benchmark images), and with the
OpenVINO backend on float32 and NNCF int8 IRs (`export --format openvino [--int8]`), and, on a CPU with native
bf16 (AVX-512 BF16 or AMX), torch and both IRs again with --precision bf16; all with --no-vis: det_results.txt
only, the work infer_det.py does by default.
OpenOCR's side needs a copy of its source tree (--openocr); without one only ours run.

    .venv/bin/python benchmarks/bench_vs_openocr.py --openocr /path/to/OpenOCR [--weights best.pth]
        [--images 60] [--size 480x640] [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
CONFIG = Path(__file__).resolve().parents[1] / "openocr_cli" / "configs" / "repvit_db.yml"


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process; a failure stops the benchmark with its output."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, NO_PROGRESS="1", OPENOCR_DET_OFFLINE="1"))
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{output.decode(errors='replace')[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def export(weights: Path, output: Path, extra: list[str]) -> None:
    """`openocr-det export`; an int8 model that fails its accuracy check (exit 1, file kept) still gets timed."""
    proc = subprocess.run([PY, "-m", "openocr_cli", "export", "-w", str(weights), "--output", str(output),
                           "--overwrite", *extra], capture_output=True, text=True)
    if proc.returncode != 0 and not (proc.returncode == 1 and output.is_file()):
        sys.exit(f"export failed ({proc.returncode}): {proc.stderr[-3000:]}")
    if proc.returncode == 1:
        print(f"note: {output.name} failed its int8 accuracy check (timed anyway): {proc.stderr.strip()[-300:]}")


def make_weights(path: Path) -> Path:
    """A freshly initialised RepViT-DB checkpoint in OpenOCR's dict layout (weights do not change the cost)."""
    import torch

    from openocr_cli.model import build_detector

    torch.manual_seed(0)
    torch.save({"epoch": 1, "global_step": 0, "state_dict": build_detector().state_dict(), "optimizer": None,
                "scheduler": None, "config": {}, "metrics": {}}, path)
    return path


def native_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX-512 BF16 or AMX), as `--precision bf16` requires."""
    import torch

    from openocr_cli.inference.backends.torch_backend import precision_problem

    return precision_problem("bf16", torch.device("cpu")) is None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openocr", type=Path, help="OpenOCR source tree (tools/infer_det.py)")
    parser.add_argument("--weights", type=Path, help="checkpoint (default: a random-init one)")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", default="480x640", help="image size HxW")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))

    from openocr_cli.data.synth import generate

    with tempfile.TemporaryDirectory(prefix="bench-vs-openocr-") as tmp:
        tmp = Path(tmp)
        synth = generate(tmp / "data", num_train=0, num_test=args.images, seed=0, size=(h, w))
        images = synth.data_dir / "test"
        weights = args.weights or make_weights(tmp / "weights.pth")
        ours = [PY, "-m", "openocr_cli"]
        calib = ["--int8", "--calib-data", str(images), "--calib-images", "16"]
        for name, extra in (("fp32.onnx", []), ("int8.onnx", calib), ("fp32.xml", ["--format", "openvino"]),
                            ("int8.xml", ["--format", "openvino", *calib])):
            export(weights, tmp / name, extra)
        commands = {
            "openocr-det predict, torch fp32": [*ours, "predict", str(images), "-w", str(weights), "--device", "cpu",
                                                "--output", str(tmp / "out_torch"), "--no-vis"],
            "openocr-det predict, onnx fp32": [*ours, "predict", str(images), "--onnx-model", str(tmp / "fp32.onnx"),
                                               "--device", "cpu", "--output", str(tmp / "out_fp32"), "--no-vis"],
            "openocr-det predict, onnx int8": [*ours, "predict", str(images), "--onnx-model", str(tmp / "int8.onnx"),
                                               "--device", "cpu", "--output", str(tmp / "out_int8"), "--no-vis"],
            **{f"openocr-det predict, openvino {name}": [
                *ours, "predict", str(images), "--openvino-model", str(tmp / f"{name}.xml"), "--device", "cpu",
                "--output", str(tmp / f"out_ov_{name}"), "--no-vis"] for name in ("fp32", "int8")},
        }
        if native_bf16():  # bf16 where the CPU runs it natively: torch autocast, OpenVINO's precision hint
            commands["openocr-det predict, torch bf16"] = [
                *ours, "predict", str(images), "-w", str(weights), "--device", "cpu",
                "--output", str(tmp / "out_torch_bf16"), "--no-vis", "--precision", "bf16"]
            for name in ("fp32", "int8"):
                commands[f"openocr-det predict, openvino {name} IR at bf16"] = [
                    *ours, "predict", str(images), "--openvino-model", str(tmp / f"{name}.xml"), "--device", "cpu",
                    "--output", str(tmp / f"out_ov_{name}_bf16"), "--no-vis", "--precision", "bf16"]
        if args.openocr is not None:
            infer = str(args.openocr.resolve() / "tools" / "infer_det.py")
            common = ["-o", f"Global.infer_img={images}", f"Global.pretrained_model={weights}", "Global.device=cpu"]
            commands = {"OpenOCR infer_det.py, torch": [PY, infer, "--c", str(CONFIG), *common],
                        "OpenOCR infer_det.py, onnx fp32": [PY, infer, "--c", str(CONFIG), *common,
                                                            "Global.backend=onnx",
                                                            f"Global.onnx_model_path={tmp / 'fp32.onnx'}"],
                        **commands}
        walls = {name: [] for name in commands}
        peaks = {name: [] for name in commands}
        for cmd in commands.values():  # warm-up: file cache, compiled bytecode
            timed(cmd, tmp)
        for _ in range(args.runs):
            for name, cmd in commands.items():
                wall, peak = timed(cmd, tmp)
                walls[name].append(wall)
                peaks[name].append(peak)

    base = next(iter(commands))
    base_wall = statistics.median(walls[base])
    rows = []
    print(f"{args.images} images {h}x{w}, {args.runs} interleaved runs each, medians; ratio = {base} / this\n")
    print("| command | wall s | images/s | peak RSS MB | speed ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in commands:
        wall, peak = statistics.median(walls[name]), statistics.median(peaks[name])
        rows.append({"command": name, "wall_s": wall, "peak_rss_mb": peak, "ratio": base_wall / wall})
        print(f"| {name} | {wall:.2f} | {args.images / wall:.1f} | {peak:.0f} | x{base_wall / wall:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"images": args.images, "size": [h, w], "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
