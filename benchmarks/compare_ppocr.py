#!/usr/bin/env python3
"""Compare openocr-det's `--preset ppocr-v5` boxes with PaddleOCR 2.x's own TextDetector on a folder of images.

Both sides run the same ONNX DB detector. The PaddleOCR side runs in its own interpreter (--paddle-python,
a venv with paddlepaddle + paddleocr 2.10 installed); the openocr-det side runs `python -m openocr_cli predict`
with --openocr-python, once with --preset ppocr-v5 and once without a preset.

PaddleOCR's TextDetector.predict() post-processes in two steps: DBPostProcess.boxes_from_bitmap (boxes in
source pixels + scores) and then TextDetector.filter_tag_det_res (vertex re-ordering, clipping to w-1/h-1,
dropping boxes <= 3 px wide or high). Both are recorded: "raw" = the DBPostProcess output, "final" = what
TextDetector returns. Scores only exist at the raw stage (DBPostProcess drops them from its return value).

Usage:
  python3 compare_ppocr.py --model det.onnx --images DIR --paddle-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

# Runs inside the PaddleOCR interpreter; prints one JSON object {image_path: {...}}.
PADDLE_SIDE = r'''
import sys, os, json, importlib.util
import numpy as np
import cv2
root = os.path.dirname(importlib.util.find_spec("paddleocr").origin)
sys.path.insert(0, root)  # paddleocr's own "tools" / "ppocr" packages, as its __init__ does
import tools.infer.utility as utility
from tools.infer.predict_det import TextDetector

model, paths = sys.argv[1], sys.argv[2:]
args = utility.init_args().parse_args([])
args.use_onnx = True
args.use_gpu = False
args.det_algorithm = "DB"
args.det_model_dir = model
args.det_limit_side_len = 736
args.det_limit_type = "min"
args.det_db_thresh = 0.3
args.det_db_box_thresh = 0.6
args.det_db_unclip_ratio = 1.5
args.det_db_score_mode = "fast"
args.use_dilation = False
args.det_box_type = "quad"
det = TextDetector(args)

post = det.postprocess_op
captured = []
orig = post.boxes_from_bitmap
def recording(pred, bitmap, dest_w, dest_h):
    boxes, scores = orig(pred, bitmap, dest_w, dest_h)
    captured.append({"boxes": np.asarray(boxes).reshape(-1, 4, 2).astype(int).tolist(),
                     "scores": [float(s) for s in scores],
                     "map_hw": list(pred.shape)})
    return boxes, scores
post.boxes_from_bitmap = recording

out = {}
for p in paths:
    img = cv2.imread(p)
    captured.clear()
    final, _ = det(img)  # TextDetector.__call__ (use_slice=False) -> predict
    raw = captured[0]
    out[p] = {"hw": list(img.shape[:2]), "map_hw": raw["map_hw"], "raw": raw["boxes"], "raw_scores": raw["scores"],
              "final": np.asarray(final).reshape(-1, 4, 2).round().astype(int).tolist()}
print("JSON" + json.dumps(out))
'''


def run_paddle(python: str, model: str, paths: list[str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix="_paddle_side.py", delete=False) as f:
        f.write(PADDLE_SIDE)
    try:
        res = subprocess.run([python, f.name, model, *paths], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("JSON")), None)
    if res.returncode != 0 or line is None:
        sys.exit(f"PaddleOCR side failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(line[4:])


def run_openocr(python: str, model: str, images: str, preset: str | None) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [python, "-m", "openocr_cli", "predict", images, "-w", model, "--device", "cpu", "--no-vis",
               "--output", out]
        if preset:
            cmd += ["--preset", preset]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"openocr-det failed (rc {res.returncode}): {' '.join(cmd)}\n{res.stderr[-3000:]}")
        result = {}
        with open(os.path.join(out, "det_results.txt"), encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                path, dets = line.rstrip("\n").split("\t", 1)
                dets = json.loads(dets)
                result[os.path.basename(path)] = ([d["points"] for d in dets], [d["score"] for d in dets])
        return result


def quad_diff(a, b) -> int:
    """Max |coordinate difference| between two quads, over the 4 cyclic vertex orders (start corner may differ)."""
    best = None
    for k in range(4):
        d = max(abs(a[i][j] - b[(i + k) % 4][j]) for i in range(4) for j in range(2))
        best = d if best is None else min(best, d)
    return best


def match(ref, ref_scores, test, test_scores):
    """Greedy one-to-one matching by smallest quad_diff. Returns (exact, matched pairs, unmatched ref, unmatched test,
    max coord diff over pairs, max score diff over pairs)."""
    pairs = sorted(((quad_diff(r, t), i, j) for i, r in enumerate(ref) for j, t in enumerate(test)))
    used_r, used_t, chosen = set(), set(), []
    for d, i, j in pairs:
        if i in used_r or j in used_t or d > 10:  # farther than 10 px: not the same box
            continue
        used_r.add(i), used_t.add(j), chosen.append((d, i, j))
    exact = sum(1 for d, i, j in chosen if ref[i] == test[j])
    max_d = max((d for d, _, _ in chosen), default=0)
    max_s = None
    if ref_scores is not None:
        max_s = max((abs(ref_scores[i] - test_scores[j]) for _, i, j in chosen), default=0.0)
    return exact, len(chosen), len(ref) - len(chosen), len(test) - len(chosen), max_d, max_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="DB detector ONNX file")
    ap.add_argument("--images", required=True, help="folder of images")
    ap.add_argument("--paddle-python", required=True, help="python with paddlepaddle + paddleocr 2.x")
    ap.add_argument("--openocr-python", default=sys.executable, help="python with openocr-det (default: this one)")
    ap.add_argument("--show-boxes", action="store_true", help="print every unmatched/different box")
    a = ap.parse_args()

    exts = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
    paths = sorted(os.path.join(a.images, n) for n in os.listdir(a.images) if n.lower().endswith(exts))
    paddle = {os.path.basename(k): v for k, v in run_paddle(a.paddle_python, a.model, paths).items()}
    oo = run_openocr(a.openocr_python, a.model, a.images, "ppocr-v5")
    oo_plain = run_openocr(a.openocr_python, a.model, a.images, None)

    print("P.raw = PaddleOCR DBPostProcess output; P.final = TextDetector return (after filter_tag_det_res)")
    print("O.v5 = openocr-det --preset ppocr-v5; O.none = no preset. Columns: boxes; exact matches; "
          "matched within 10px; max px diff; max score diff")
    hdr = (f"{'image':20} {'size':>9} {'map':>9} {'P.raw':>5} {'P.fin':>5} {'O.v5':>4} {'O.none':>6} | "
           f"{'v5~raw exact/match/maxpx/maxscore':>34} | {'v5~final match/maxpx/onlyO/onlyP':>34} | "
           f"{'none~raw exact/match':>20}")
    print(hdr)
    print("-" * len(hdr))
    all_identical = True
    for name in sorted(paddle):
        p = paddle[name]
        ob, os_ = oo.get(name, ([], []))
        nb, ns = oo_plain.get(name, ([], []))
        e, m, ur, ut, md, ms = match(p["raw"], p["raw_scores"], ob, os_)
        fe, fm, fur, fut, fmd, _ = match(p["final"], None, ob, os_)
        ne, nm, _, _, _, _ = match(p["raw"], p["raw_scores"], nb, ns)
        identical = e == len(p["raw"]) == len(ob) and (ms is None or ms < 1e-5)
        all_identical &= identical
        size = f"{p['hw'][1]}x{p['hw'][0]}"
        mp = f"{p['map_hw'][1]}x{p['map_hw'][0]}"
        print(f"{name[:20]:20} {size:>9} {mp:>9} {len(p['raw']):>5} {len(p['final']):>5} {len(ob):>4} {len(nb):>6} | "
              f"{f'{e}/{m}/{md}/{ms:.1e}':>34} | {f'{fm}/{fmd}/{fut}/{fur}':>34} | {f'{ne}/{nm}':>20}")
        if a.show_boxes:
            pk = {json.dumps(b) for b in p["raw"]}
            for b, s in zip(ob, os_):
                if json.dumps(b) not in pk:
                    print(f"    only openocr (vs raw): {b} score {s}")
            ok = {json.dumps(b) for b in ob}
            for b, s in zip(p["raw"], p["raw_scores"]):
                if json.dumps(b) not in ok:
                    print(f"    only paddle raw: {b} score {s:.6f}")
            for b in p["final"]:
                if not any(quad_diff(b, x) == 0 for x in ob):
                    print(f"    paddle final not in openocr: {b}")
            for b, s in zip(ob, os_):
                if not any(quad_diff(b, x) == 0 for x in p["final"]):
                    print(f"    openocr box dropped by TextDetector.filter_tag_det_res: {b} score {s}")
            same_order = sum(1 for b in p["final"] if b in ob)
            print(f"    final boxes with identical vertex order in openocr: {same_order}/{len(p['final'])}")
    print("\nRESULT: openocr-det --preset ppocr-v5 boxes", "IDENTICAL to" if all_identical else "DIFFER from",
          "PaddleOCR DBPostProcess boxes (as sets, scores within 1e-5)")


if __name__ == "__main__":
    main()
