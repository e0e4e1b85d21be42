"""Prediction files as `predict` writes them (or any detector written that way): `eval --predictions` scores them
and `convert --from ppocr` converts them.

Two layouts, told apart by the first line that is not blank (a `.jsonl` name settles it too):
  det_results.txt    image_path<TAB>[{"points": [[x, y], ...], "score": s}, ...]   (OpenOCR's format)
  det_results.jsonl  {"image": path, "detections": [{"points": ..., "score": s}, ...]}  (`predict --format jsonl`;
                     a record with an "error" is an image predict could not read: it has no prediction)
Every line is checked; problems are listed as `file:line: reason` together, so one pass fixes the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openocr_cli.data.labels import MAX_REPORTED_PROBLEMS, NOT_UTF8, label_lines
from openocr_cli.errors import UserError
from openocr_cli.fileio import why_not_a_file

TXT_SHAPE = 'image_path<TAB>[{"points": [[x, y], ...], "score": s}, ...]'
JSONL_SHAPE = '{"image": path, "detections": [{"points": [[x, y], ...], "score": s}, ...]}'


@dataclass
class Predictions:
    """Polygons by image path as written in the file, and the images the run recorded as unreadable."""

    boxes: dict[str, list[np.ndarray]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


def read_predictions(file: Path) -> Predictions:
    """Read det_results.txt or det_results.jsonl; any malformed line is a UserError listing each as file:line."""
    file = Path(file)
    if not file.is_file():
        raise UserError(f"predictions file {file} {why_not_a_file(file)}. Create one with `openocr-det predict`.")
    out = Predictions()
    problems: list[str] = []
    jsonl = None if file.suffix.lower() != ".jsonl" else True  # None until a line says which layout
    lines = 0
    for number, raw in label_lines(file, kind="predictions file"):
        if not raw.strip():
            continue
        lines += 1
        if jsonl is None:
            jsonl = is_jsonl(raw)
        try:
            path, boxes, error = _jsonl_line(raw) if jsonl else _txt_line(raw)
            if NOT_UTF8 in path:
                raise ValueError("the image path is not UTF-8 text; save the file as UTF-8")
            if error is not None:
                out.unreadable.append(path)
                continue
            out.boxes[path] = [box_polygon(box, n) for n, box in enumerate(boxes, 1)]
        except ValueError as exc:
            problems.append(f"{file}:{number}: {exc}")
    if problems:
        listed = "\n".join(f"  {p}" for p in problems[:MAX_REPORTED_PROBLEMS])
        more = len(problems) - MAX_REPORTED_PROBLEMS
        listed += f"\n  ... and {more} more" if more > 0 else ""
        raise UserError(f"{len(problems)} malformed prediction line(s):\n{listed}\n"
                        f"Each line must be `{JSONL_SHAPE if jsonl else TXT_SHAPE}`.")
    if not lines:  # predict writes a line for every image, one without boxes included
        raise UserError(f"predictions file {file} has no lines (it is empty, or blank lines only), while predict "
                        "writes one for every image, boxes or none. Pass the det_results.txt (or .jsonl) of a "
                        "finished predict run.")
    return out


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None


def _txt_line(raw: str) -> tuple[str, list, None]:
    path, tab, text = raw.partition("\t")
    if not tab:
        raise ValueError("no TAB between the image path and the JSON list")
    boxes = _loads(text)
    if not isinstance(boxes, list):
        raise ValueError('expected a JSON list of {"points": ...} objects after the TAB')
    return path, boxes, None


def is_jsonl(first_line: str) -> bool:
    """Whether a file whose first line that is not blank is this holds det_results.jsonl records."""
    return first_line.lstrip().startswith("{")


def jsonl_record(raw: str) -> dict:
    """One det_results.jsonl line as its object: an "image" path, "detections" (a list, [] when absent), and
    "error", "width", "height" as written; ValueError (the reason) for anything else."""
    record = _loads(raw)
    if not isinstance(record, dict) or not isinstance(record.get("image"), str) or not record["image"]:
        raise ValueError('expected a JSON object with an "image" path (det_results.jsonl, one object per line)')
    record.setdefault("detections", [])
    if not isinstance(record["detections"], list):
        raise ValueError('"detections" must be a JSON list of {"points": ...} objects')
    return record


def _jsonl_line(raw: str) -> tuple[str, list, object]:
    record = jsonl_record(raw)
    return record["image"], record["detections"], record.get("error")


def box_polygon(box: object, n: int) -> np.ndarray:
    """Box `n`'s points as a (P, 2) float64 array; a score, when there is one, must be a finite number."""
    points = box.get("points") if isinstance(box, dict) else None
    try:
        arr = np.asarray(points, dtype=np.float64) if isinstance(points, list) else None
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 3 or not np.isfinite(arr).all():
        raise ValueError(f'box {n}: "points" must be a list of at least 3 [x, y] pairs of finite numbers')
    score = box.get("score", 0.0)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ValueError(f'box {n}: "score" must be a finite number, got {score!r}')
    return arr
