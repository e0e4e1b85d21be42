"""Total-Text's text ground truth (read only): `poly_gt_<image>.txt` files of Python-repr records

    x: [[115 503 494 115]], y: [[322 346 426 404]], ornt: [u'h'], transcriptions: [u'nauGHTY']

A long polygon wraps onto the following lines, so a record runs until the next line starting with `x:`.
Transcription `#` (or orientation `#`) marks a do-not-care region.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from openocr_cli.formats.label_model import Dataset, Format, Region, number, pair_up, read_gt_files

IGNORE_MARK = "#"
RECORD = re.compile(r"x:\s*\[\[(?P<x>[^\]]*)\]\]\s*,\s*y:\s*\[\[(?P<y>[^\]]*)\]\]\s*,\s*"
                    r"ornt:\s*(?P<ornt>\[[^\]]*\])\s*,\s*transcriptions:\s*(?P<text>\[.*\])\s*$")
SEPARATORS = re.compile(r"[\s,]+")
EXPECTED = "expected `x: [[...]], y: [[...]], ornt: [u'c'], transcriptions: [u'text']`"


def read(source: Path, images_dir: Optional[Path]) -> Dataset:
    return read_gt_files(source, images_dir, ("poly_gt_", "gt_"), _records, parse_record)


def _records(lines: list[str]) -> Iterator[tuple[int, str]]:
    start, parts = 0, []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("x:") or not parts:
            if parts:
                yield start, " ".join(parts)
            start, parts = n, []
        parts.append(line.strip())
    if parts:
        yield start, " ".join(parts)


def parse_record(record: str) -> Region:
    match = RECORD.match(record)
    if match is None:
        raise ValueError(f"not a Total-Text record: {EXPECTED}")
    xs = [number(v) for v in SEPARATORS.split(match["x"].strip()) if v]
    ys = [number(v) for v in SEPARATORS.split(match["y"].strip()) if v]
    ornt, text = _string(match["ornt"], "ornt"), _string(match["text"], "transcriptions")
    return Region(pair_up(xs, ys), text, IGNORE_MARK in (text, ornt))


def _string(field: str, name: str) -> str:
    """`[u'text']` -> 'text' (Python 2 repr, single or double quotes)."""
    try:
        value = ast.literal_eval(field)
    except (ValueError, SyntaxError):
        raise ValueError(f"{name} {field!r} is not a quoted string list: {EXPECTED}") from None
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], str):
        raise ValueError(f"{name} must hold exactly one string, got {field!r}")
    return value[0]


FORMAT = Format("totaltext", "Total-Text text ground truth (poly_gt_<image>.txt), read only", read,
                source_is_dir=True)
