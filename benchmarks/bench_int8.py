"""int8 accuracy where it matters: on labelled images the calibration never saw.

Exports one checkpoint four ways (ONNX float32, onnxruntime int8, OpenVINO IR float32, NNCF int8),
the int8 ones calibrated and checked on a labelled calibration set (`export --int8 --calib-data
LABELS`, the guard of docs/guides/export.md), then evaluates every model on a held-out
labelled set and prints each int8 model's hmean drop against the float32 model of its runtime,
with what the export's guard decided. The goal: the guard passes, and the held-out drop is
below 0.5 points.

Without --calib/--held-out, two synthetic sets are generated (seeds 2 and 3, 384x512, like the
`make bench` training set of seed 1); pass a checkpoint trained on that kind of data.

    .venv/bin/python benchmarks/bench_int8.py --weights best.pth [--calib calib/test_label.txt --calib-dir calib]
        [--held-out held/test_label.txt --held-out-dir held] [--calib-images 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PY = sys.executable


def labelled_set(label: Path | None, folder: Path | None, tmp: Path, name: str, seed: int, count: int):
    if label is not None:
        return label, folder or label.parent
    from openocr_cli.data.synth import generate

    synth = generate(tmp / name, num_train=0, num_test=count, seed=seed, size=(384, 512))
    return synth.data_dir / "test_label.txt", synth.data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--calib", type=Path, help="labelled calibration set (label file)")
    parser.add_argument("--calib-dir", type=Path)
    parser.add_argument("--held-out", type=Path, help="labelled held-out set (label file)")
    parser.add_argument("--held-out-dir", type=Path)
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--held-out-images", type=int, default=60, help="synthetic held-out images")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from openocr_cli import Detector

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        tmp = Path(tmp)
        calib, calib_dir = labelled_set(args.calib, args.calib_dir, tmp, "calib", 2, args.calib_images)
        held, held_dir = labelled_set(args.held_out, args.held_out_dir, tmp, "held", 3, args.held_out_images)
        int8 = ["--int8", "--calib-data", str(calib), "--data-dir", str(calib_dir),
                "--calib-images", str(args.calib_images)]
        models = {"onnx fp32": ("fp32.onnx", []), "onnx int8": ("int8.onnx", int8),
                  "openvino fp32": ("fp32.xml", ["--format", "openvino"]),
                  "openvino int8": ("int8.xml", ["--format", "openvino", *int8])}
        rows = []
        for name, (file, extra) in models.items():
            proc = subprocess.run([PY, "-m", "openocr_cli", "export", "-w", str(args.weights), "--output",
                                   str(tmp / file), *extra], capture_output=True, text=True)
            decision = "-" if "--int8" not in extra else \
                "passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
            if not (tmp / file).is_file():
                sys.exit(f"export of {name} wrote nothing: {proc.stderr[-2000:]}")
            backend = "openvino" if file.endswith(".xml") else "onnx"
            hmean = Detector(str(tmp / file), backend=backend, device="cpu").evaluate(held, held_dir).hmean
            rows.append({"model": name, "guard": decision, "hmean": hmean})
        by_name = {row["model"]: row for row in rows}
        print(f"held-out: {held} ({args.held_out_images if args.held_out is None else 'given'} images); "
              f"calibration: {calib}, {args.calib_images} images\n")
        print("| model | export guard | held-out hmean | drop vs fp32, points |")
        print("|---|---|---:|---:|")
        for row in rows:
            fp32 = by_name[row["model"].split()[0] + " fp32"]["hmean"]
            row["drop_points"] = 100 * (fp32 - row["hmean"])
            drop = "" if row["model"].endswith("fp32") else f"{row['drop_points']:.2f}"
            print(f"| {row['model']} | {row['guard']} | {row['hmean']:.4f} | {drop} |")
        if args.json:
            args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
