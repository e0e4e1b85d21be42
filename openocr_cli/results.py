"""det_results.txt: `image_path<TAB>[{"points": [[x, y], ...], "score": s}, ...]`, one line per image.

OpenOCR's format plus a score, so OpenOCR tooling still reads it; `read_predictions` lets `eval`
score any detector's output written this way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from openocr_cli.errors import UserError
from openocr_cli.postprocess import Detection

BOX_COLOR_BGR = (255, 255, 0)


def format_line(path: str, detections: Iterable[Detection]) -> str:
    boxes = [{"points": np.asarray(d.points).astype(int).tolist(), "score": round(float(d.score), 6)}
             for d in detections]
    return f"{path}\t{json.dumps(boxes)}\n"


def write_line(f: TextIO, path: str, detections: Iterable[Detection]) -> None:
    f.write(format_line(path, detections))
    f.flush()


def read_predictions(file: Path) -> dict[str, list[np.ndarray]]:
    """image path -> list of (P, 2) polygons; malformed lines are reported as file:line."""
    file = Path(file)
    if not file.is_file():
        raise UserError(f"predictions file {file} does not exist. Create one with `openocr-det predict`.")
    out: dict[str, list[np.ndarray]] = {}
    problems = []
    with open(file, encoding="utf-8", errors="replace") as f:
        for number, raw in enumerate(f, 1):
            raw = raw.rstrip("\r\n")
            if not raw.strip():
                continue
            path, sep, text = raw.partition("\t")
            try:
                if not sep:
                    raise ValueError("no TAB between the image path and the JSON list")
                boxes = json.loads(text)
                if not isinstance(boxes, list):
                    raise ValueError("expected a JSON list of {\"points\": ...} objects")
                polys = []
                for n, box in enumerate(boxes, 1):
                    points = box.get("points") if isinstance(box, dict) else None
                    arr = np.asarray(points, dtype=np.float64) if points is not None else None
                    if arr is None or arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 3:
                        raise ValueError(f"box {n}: \"points\" must be a list of at least 3 [x, y] pairs")
                    polys.append(arr)
            except (ValueError, TypeError) as exc:
                reason = f"not valid JSON ({exc.msg})" if isinstance(exc, json.JSONDecodeError) else str(exc)
                problems.append(f"{file}:{number}: {reason}")
                continue
            out[path] = polys
    if problems:
        listed = "\n".join(f"  {p}" for p in problems[:20])
        raise UserError(f"{len(problems)} malformed prediction line(s):\n{listed}\n"
                        "Each line must be `image_path<TAB>[{\"points\": [[x, y], ...]}]`.")
    return out


def draw_detections(image: np.ndarray, detections: Iterable[Detection]) -> np.ndarray:
    """Closed polylines in OpenOCR's colour (BGR 255,255,0), thickness 2, on a copy of the image."""
    canvas = image.copy()
    polys = [np.asarray(d.points, dtype=np.int32).reshape(-1, 1, 2) for d in detections]
    if polys:
        cv2.polylines(canvas, polys, isClosed=True, color=BOX_COLOR_BGR, thickness=2)
    return canvas
