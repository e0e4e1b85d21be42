"""The one in-memory label model every format reads into and writes from (N formats: N readers, N writers).

Points keep the numbers exactly as read (ints stay ints), so a round trip changes nothing. Image paths are
'/'-separated and relative to the dataset's image root; readers collect `where: reason` problems instead of
stopping at the first one, so a user sees every bad entry at once.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional, Union

from openocr_cli.data.images import is_image_name
from openocr_cli.data.labels import IGNORE_TRANSCRIPTIONS

Number = Union[int, float]
DEFAULT_IGNORE_TEXT = "###"
DEFAULT_IMAGE_SUFFIX = ".jpg"


@dataclass
class Region:
    """One text region: its polygon as written, its transcription, whether it is "do not care" and, for
    predictions (det_results.txt, Label Studio predictions), the detector's score."""

    points: list[list[Number]]
    text: str = ""
    ignore: bool = False
    score: Optional[float] = None

    @property
    def label(self) -> str:
        """The transcription a text-only format stores: ignored regions keep their own mark, else '###'."""
        if self.ignore and self.text not in IGNORE_TRANSCRIPTIONS:
            return DEFAULT_IGNORE_TEXT
        return self.text


@dataclass
class ImageLabels:
    """All regions of one image (none for a background image); size when the source states it."""

    image: str
    regions: list[Region] = field(default_factory=list)
    width: Optional[int] = None
    height: Optional[int] = None
    source: str = ""


@dataclass
class Problem:
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Dataset:
    """What a reader returns: the images in source order, the folder their paths are relative to, problems."""

    images: list[ImageLabels]
    root: Path
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class WriteOptions:
    min_rect: bool = False
    image_root: Optional[Path] = None  # where the images are (formats that link them into their output)


Reader = Callable[[Path, Optional[Path]], Dataset]
Writer = Callable[[list[ImageLabels], Path, WriteOptions], None]


def _same_path(image: str) -> str:
    return image


def _no_reasons(image: ImageLabels, options: WriteOptions) -> list[str]:
    return []


@dataclass(frozen=True)
class Format:
    """A label format: its reader (source -> Dataset) and, unless read-only, its writer and what it refuses.

    `entry` names the file or entry an image is written to (two images may not share one); `check` lists the
    reasons an image cannot be written; `needs_size` asks for image sizes before writing.
    """

    name: str
    summary: str
    read: Reader
    source_is_dir: bool
    write: Optional[Writer] = None
    output_is_dir: bool = False
    entry: Callable[[str], str] = _same_path
    check: Callable[[ImageLabels, WriteOptions], list[str]] = _no_reasons
    needs_size: bool = False


def is_ignore_text(text: str) -> bool:
    return text in IGNORE_TRANSCRIPTIONS


def positive_int(value: object) -> Optional[int]:
    """An image width/height as stated in a file, or None when absent or not a positive integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def number(text: str) -> Number:
    """'12' -> 12, '12.5' -> 12.5; ValueError naming the text otherwise."""
    value = text.strip()
    try:
        return int(value)
    except ValueError:
        pass
    try:
        result = float(value)
    except ValueError:
        raise ValueError(f"coordinate {text.strip()!r} is not a number") from None
    if not math.isfinite(result):
        raise ValueError(f"coordinate {text.strip()!r} is not a finite number")
    return result


def as_points(pairs: object, minimum: int = 3) -> list[list[Number]]:
    """Validate a JSON list of [x, y] pairs (at least `minimum`, finite numbers) and return it unchanged."""
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise ValueError("points must be a list of [x, y] pairs")
    if len(pairs) < minimum:
        raise ValueError(f"a polygon needs at least {minimum} points, got {len(pairs)}")
    for x, y in pairs:
        for v in (x, y):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"coordinate {v!r} is not a finite number")
    return [[x, y] for x, y in pairs]


def pair_up(xs: list[Number], ys: list[Number]) -> list[list[Number]]:
    """Separate x and y lists -> [[x, y], ...], validated like as_points."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x values but {len(ys)} y values")
    return as_points([[x, y] for x, y in zip(xs, ys)])


def image_index(images_dir: Optional[Path]) -> dict[str, str]:
    """Image file stem -> file name in images_dir, to give ground-truth files named by stem their extension."""
    if images_dir is None:
        return {}
    names = sorted(n for n in os.listdir(images_dir) if is_image_name(n))
    index: dict[str, str] = {}
    for name in names:
        index.setdefault(os.path.splitext(name)[0], name)
    return index


def gt_image_name(file: Path, prefixes: tuple[str, ...], index: dict[str, str]) -> str:
    """`gt_img_1.txt` -> `img_1.jpg`: the stem without its prefix, with the matching image's extension."""
    stem = file.stem
    for prefix in prefixes:
        if stem.startswith(prefix):
            stem = stem[len(prefix):]
            break
    return index.get(stem, stem + DEFAULT_IMAGE_SUFFIX)


def image_stem(image: str) -> str:
    return PurePosixPath(image).stem


def read_gt_files(source: Path, images_dir: Optional[Path], prefixes: tuple[str, ...],
                  records: Callable[[list[str]], Iterator[tuple[int, str]]],
                  parse: Callable[[str], Region]) -> Dataset:
    """Shared reader for one-ground-truth-file-per-image formats (icdar2015, totaltext).

    `records` groups a file's lines into (first line number, record text); `parse` turns one into a Region.
    """
    index = image_index(images_dir)
    dataset = Dataset([], images_dir or (source if source.is_dir() else source.parent))
    for file in text_files(source):
        try:
            lines = decode_lines(file)
        except ValueError as exc:
            dataset.problems.append(Problem(f"{file}:1", str(exc)))
            continue
        image = ImageLabels(gt_image_name(file, prefixes, index), source=str(file))
        for line, record in records(lines):
            try:
                image.regions.append(parse(record))
            except ValueError as exc:
                dataset.problems.append(Problem(f"{file}:{line}", str(exc)))
        dataset.images.append(image)
    return dataset


def text_files(source: Path) -> list[Path]:
    """A single ground-truth file, or every .txt file of a folder (sorted)."""
    if source.is_file():
        return [source]
    return sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() == ".txt")


def decode_lines(file: Path) -> list[str]:
    """The lines of a UTF-8 text file without BOM and CR/LF ends; ValueError if it is not UTF-8."""
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    return [line.rstrip("\r") for line in text.split("\n")]


class BadFile(Exception):
    """A whole input file is unusable; carries the problem to report."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def load_json(file: Path) -> object:
    """Parse a UTF-8 JSON file (BOM allowed); BadFile names the line of a syntax error."""
    try:
        return json.loads(file.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise BadFile(Problem(str(file), f"not UTF-8 text (byte {exc.start})")) from None
    except json.JSONDecodeError as exc:
        raise BadFile(Problem(f"{file}:{exc.lineno}", f"not valid JSON ({exc.msg}, column {exc.colno})")) from None


def json_shape(data: object) -> Optional[str]:
    """The format a parsed JSON label file looks like, by its top-level keys (None when none fits)."""
    if isinstance(data, dict):
        if isinstance(data.get("data_list"), list):
            return "mmocr"
        if isinstance(data.get("images"), list):
            return "coco"
        if isinstance(data.get("shapes"), list):
            return "labelme"
        if data and all(isinstance(v, dict) and "polygons" in v for v in data.values()):
            return "doctr"
    if isinstance(data, list) and data and all(isinstance(t, dict) and "data" in t for t in data):
        return "labelstudio"
    return None


def not_this_format(where: str, data: object, name: str, expected: str) -> Problem:
    """A whole file that is not `name`'s, naming the --from it looks like when its keys say so."""
    shape = json_shape(data)
    hint = f"; it looks like {shape}'s format: convert it with --from {shape}" if shape and shape != name else ""
    return Problem(where, f"not {expected}{hint}")


def image_size(path: Path) -> Optional[tuple[int, int]]:
    """(width, height) from the image header, or None when the file is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError):
        return None
