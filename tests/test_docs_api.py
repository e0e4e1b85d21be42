"""The Python API page's examples (docs/python-api.md) run as written (in a folder holding the files they name)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import cv2

from tests.conftest import REPO, label_line, make_constant_checkpoint
from tests.test_api import page
from tests.test_onnx_backend import tiny_model


def page_python_blocks() -> list[str]:
    text = (REPO / "docs" / "python-api.md").read_text(encoding="utf-8")
    # training is run from Python by tests/test_api_training.py (50 epochs on a real set is no test)
    return [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "openocr_cli.train(" not in b]


def test_python_api_page_examples_run(tmp_path):
    blocks = page_python_blocks()
    assert len(blocks) >= 5
    make_constant_checkpoint(tmp_path / "best.pth")
    tiny_model(tmp_path / "det.onnx")
    (tmp_path / "scans").mkdir()
    cv2.imwrite(str(tmp_path / "scans" / "a.png"), page(0))
    cv2.imwrite(str(tmp_path / "scans" / "b.jpg"), page(1))
    (tmp_path / "data").mkdir()
    cv2.imwrite(str(tmp_path / "data" / "x.png"), page(2))
    (tmp_path / "data" / "test_label.txt").write_text(
        label_line("x.png", [{"transcription": "w", "points": [[10, 10], [250, 10], [250, 170], [10, 170]]}]))
    env = dict(os.environ, MPLBACKEND="Agg", OPENOCR_DET_OFFLINE="1", PYTHONPATH=str(REPO))
    # one interpreter, each example in a namespace of its own (as if pasted into a fresh session)
    runner = "import json, sys, traceback\nfor n, code in enumerate(json.load(sys.stdin), 1):\n" \
             "    try:\n        exec(compile(code, f'python-api.md example {n}', 'exec'), {'__name__': '__main__'})\n" \
             "    except Exception:\n        traceback.print_exc()\n        sys.exit(n)\n"
    proc = subprocess.run([sys.executable, "-c", runner], input=json.dumps(blocks), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"docs/python-api.md example {proc.returncode} failed:\n{proc.stderr}"
    assert (tmp_path / "detections.png").is_file() and (tmp_path / "crop_0.png").is_file()
