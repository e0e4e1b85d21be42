"""ICDAR Robust Reading Competition submissions (Challenge 4, task 4.1 and alike): `submit.zip` of `res_<stem>.txt`.

One file per image, flat in the zip, one `x1,y1,x2,y2,x3,y3,x4,y4` line per box: integers, no transcription,
UTF-8 without BOM, LF line ends, corners in the order the official evaluation calls clockwise (in image
coordinates, y down: TL, TR, BR, BL). The official script pairs `res_img_N.txt` with `gt_img_N.txt` by its
default file-name patterns, so images named `img_N.*` score with its defaults; other names need its `-p`
patterns. Polygons that are not quadrilaterals are refused unless `--min-rect` writes their minimum-area
rectangle. Reading takes such a zip (or a folder of res_*.txt files), an optional confidence after the corners
included, so a submission converts back to any other format.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Optional

from openocr_cli.formats.icdar2015 import quad
from openocr_cli.formats.label_model import (
    Dataset,
    Format,
    ImageLabels,
    Number,
    Problem,
    Region,
    WriteOptions,
    gt_image_name,
    image_index,
    image_stem,
    text_files,
)

PREFIX = "res_"
ZIP_NAME = "submit.zip"
MAX_MEMBER_BYTES = 16 * 1024 ** 2  # one image's boxes; a zip bomb's member is refused after this much
COORDINATES = 8
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_LINE = re.compile(r"^\s*" + r"\s*,\s*".join([r"(-?\d+)"] * COORDINATES) + r"\s*(?:,\s*([0-9.eE+-]+)\s*)?$")


def entry(image: str) -> str:
    return f"{PREFIX}{image_stem(image)}.txt"


def clockwise(points: Sequence[Sequence[Number]]) -> list[list[int]]:
    """Integer corners in the order the RRC scripts accept: the shoelace sum over edges of
    (x2 - x1) * (y2 + y1) must not be positive; a quad the other way round is reversed (same first corner)."""
    pts = [[int(round(float(x))), int(round(float(y)))] for x, y in points]
    edges = sum((pts[(i + 1) % len(pts)][0] - pts[i][0]) * (pts[(i + 1) % len(pts)][1] + pts[i][1])
                for i in range(len(pts)))
    return [pts[0], *reversed(pts[1:])] if edges > 0 else pts


def box_line(points: Sequence[Sequence[Number]], min_rect: bool) -> Optional[str]:
    """One submission line for a polygon, or None when it is not a quad and min_rect is off."""
    if len(points) != 4 and not min_rect:
        return None
    corners = clockwise(quad([list(p) for p in points]))
    return ",".join(str(v) for p in corners for v in p) + "\n"


def file_text(polygons: Iterable[Sequence[Sequence[Number]]], min_rect: bool) -> str:
    lines = [box_line(p, min_rect) for p in polygons]
    return "".join(line for line in lines if line is not None)


def check(image: ImageLabels, options: WriteOptions) -> list[str]:
    if options.min_rect:
        return []
    return [f"region {n} has {len(r.points)} points but an RRC submission holds quadrilaterals only "
            "(--min-rect writes each polygon's minimum-area rectangle instead)"
            for n, r in enumerate(image.regions, 1) if len(r.points) != 4]


def add_entry(archive: zipfile.ZipFile, name: str, text: str) -> None:
    """One res_<stem>.txt in the zip, with a fixed timestamp so the same boxes give the same bytes."""
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, text.encode("utf-8"))


def write(images: list[ImageLabels], target: Path, options: WriteOptions) -> None:
    with zipfile.ZipFile(target, "w") as archive:
        for image in images:
            add_entry(archive, entry(image.image), file_text((r.points for r in image.regions), options.min_rect))


def parse_line(line: str) -> Region:
    match = _LINE.match(line)
    if match is None:
        raise ValueError("expected x1,y1,x2,y2,x3,y3,x4,y4 (8 integers, optionally a confidence after them)")
    values = [int(v) for v in match.groups()[:COORDINATES]]
    score = float(match.group(COORDINATES + 1)) if match.group(COORDINATES + 1) else None
    return Region([[values[i], values[i + 1]] for i in range(0, COORDINATES, 2)], score=score)


def read(source: Path, images_dir: Optional[Path]) -> Dataset:
    """A submit.zip, a folder of res_<stem>.txt files, or one such file."""
    index = image_index(images_dir)
    dataset = Dataset([], images_dir or (source if source.is_dir() else source.parent))
    for where, name, raw in _members(source, dataset.problems):
        image = ImageLabels(gt_image_name(Path(name), (PREFIX,), index), source=where)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            dataset.problems.append(Problem(f"{where}:1", f"not UTF-8 text (byte {exc.start})"))
            continue
        for n, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    image.regions.append(parse_line(line.rstrip("\r")))
                except ValueError as exc:
                    dataset.problems.append(Problem(f"{where}:{n}", str(exc)))
        dataset.images.append(image)
    return dataset


def _members(source: Path, problems: list[Problem]) -> Iterable[tuple[str, str, bytes]]:
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if info.is_dir():
                    continue
                name = PurePosixPath(info.filename).name
                if not name.lower().endswith(".txt"):
                    problems.append(Problem(f"{source}: {info.filename}", "not a res_<image>.txt file"))
                    continue
                with archive.open(info) as member:  # the declared size may lie: read at most the cap
                    data = member.read(MAX_MEMBER_BYTES + 1)
                if len(data) > MAX_MEMBER_BYTES:
                    problems.append(Problem(f"{source}: {info.filename}", _too_large(info.file_size)))
                    continue
                yield f"{source}: {info.filename}", name, data
        return
    for file in text_files(source):
        if file.stat().st_size > MAX_MEMBER_BYTES:
            problems.append(Problem(str(file), _too_large(file.stat().st_size)))
            continue
        yield str(file), file.name, file.read_bytes()


def _too_large(size: int) -> str:
    return (f"{size:,} bytes, over the {MAX_MEMBER_BYTES // 1024 ** 2} MB a res_<image>.txt may be (about 400,000 "
            "boxes); not read")


FORMAT = Format("rrc", "ICDAR Robust Reading submission: submit.zip of res_<image>.txt, x1,y1,...,x4,y4", read,
                source_is_dir=True, write=write, entry=entry, check=check)
