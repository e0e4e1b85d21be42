"""ICDAR2015 ground truth: a folder of `gt_<image stem>.txt`, one `x1,y1,...,x4,y4,transcription` per line.

The transcription is everything after the eighth comma (it may contain commas); files may carry a BOM
and CRLF ends (the published ones do). Writing takes quadrilaterals only, unless --min-rect replaces
other polygons by their minimum-area rectangle.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import numpy as np

from openocr_cli.formats.label_model import (
    Dataset,
    Format,
    ImageLabels,
    Number,
    Region,
    WriteOptions,
    image_stem,
    is_ignore_text,
    number,
    pair_up,
    read_gt_files,
)
from openocr_cli.postprocess import mini_box

COORDINATES = 8
DECIMALS = 2


def read(source: Path, images_dir: Optional[Path]) -> Dataset:
    return read_gt_files(source, images_dir, ("gt_",), _lines, parse_line)


def _lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    for n, line in enumerate(lines, 1):
        if line.strip():
            yield n, line


def parse_line(line: str) -> Region:
    fields = line.split(",", COORDINATES)
    if len(fields) < COORDINATES:
        raise ValueError(f"expected x1,y1,x2,y2,x3,y3,x4,y4,transcription; got {len(fields)} field(s)")
    values = [number(v) for v in fields[:COORDINATES]]
    text = fields[COORDINATES] if len(fields) > COORDINATES else ""
    return Region(pair_up(values[0::2], values[1::2]), text, is_ignore_text(text))


def entry(image: str) -> str:
    return f"gt_{image_stem(image)}.txt"


def check(image: ImageLabels, options: WriteOptions) -> list[str]:
    reasons = []
    for n, region in enumerate(image.regions, 1):
        if len(region.points) != 4 and not options.min_rect:
            reasons.append(f"region {n} has {len(region.points)} points but icdar2015 holds quadrilaterals only "
                           "(--min-rect writes each polygon's minimum-area rectangle instead)")
        if "\n" in region.label or "\r" in region.label:
            reasons.append(f"region {n}: the transcription contains a line break, which icdar2015 cannot store")
    return reasons


def quad(points: list[list[Number]]) -> list[list[Number]]:
    """The polygon itself when it has 4 points, else its minimum-area rectangle (ints when the input is)."""
    if len(points) == 4:
        return points
    corners = mini_box(np.asarray(points, dtype=np.float32))[0]
    exact = all(isinstance(v, int) for p in points for v in p)
    return [[int(round(float(v))) if exact else round(float(v), DECIMALS) for v in p] for p in corners]


def write(images: list[ImageLabels], target: Path, options: WriteOptions) -> None:
    target.mkdir()
    for image in images:
        lines = [",".join([*(str(v) for p in quad(r.points) for v in p), r.label]) + "\n" for r in image.regions]
        with open(target / entry(image.image), "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)


FORMAT = Format("icdar2015", "folder of gt_<image>.txt files: x1,y1,...,x4,y4,transcription", read,
                source_is_dir=True, write=write, output_is_dir=True, entry=entry, check=check)
