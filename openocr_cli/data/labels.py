"""Label files in OpenOCR/PaddleOCR detection format, parsed and validated line by line.

A line is `image_path<TAB>[{"transcription": str, "points": [[x, y], ...]}, ...]`. Regions whose
transcription is `###` or `*` are "do not care". Every problem is reported as `file:line: reason`
so a user can fix the file instead of guessing why a sample vanished.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from openocr_cli.data.pdf import split_page_ref
from openocr_cli.errors import MissingFileError, UserError
from openocr_cli.fileio import why_not_a_file

IGNORE_TRANSCRIPTIONS = frozenset({"###", "*"})
MAX_COORDINATE = 1_000_000  # px: a label point beyond it is no image's (a typo, or a unit other than pixels)
MAX_REPORTED_PROBLEMS = 20
NOT_UTF8 = "\ufffd"  # what label_lines puts in place of bytes that are not UTF-8


@dataclass
class LabelSample:
    """One labelled image: the path as written in the file, where it resolves, and its regions."""

    key: str
    image: Path
    polys: list[np.ndarray]
    texts: list[str]
    ignore: list[bool]
    source: str = ""
    line: int = 0
    size: Optional[tuple[int, int]] = None  # (height, width) as training decodes it, when validation read it


@dataclass
class LabelProblem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class LabelSet:
    samples: list[LabelSample] = field(default_factory=list)
    problems: list[LabelProblem] = field(default_factory=list)


def parse_regions(text: str) -> tuple[list[np.ndarray], list[str], list[bool]]:
    """Parse the JSON annotation field; raise ValueError with a user-readable reason."""
    try:
        regions = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"annotation is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(regions, list):
        raise ValueError("annotation must be a JSON list of {\"transcription\", \"points\"} objects")
    polys, texts, ignore = [], [], []
    for n, region in enumerate(regions, 1):
        if not isinstance(region, dict) or "points" not in region:
            raise ValueError(f"region {n} has no \"points\" key")
        polys.append(_parse_points(region["points"], n))
        text = region.get("transcription", "")
        text = "" if text is None else str(text)
        texts.append(text)
        ignore.append(text in IGNORE_TRANSCRIPTIONS)
    return polys, texts, ignore


def _parse_points(points: object, n: int) -> np.ndarray:
    if not isinstance(points, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
        raise ValueError(f"region {n}: \"points\" must be a list of [x, y] pairs")
    if len(points) < 3:
        raise ValueError(f"region {n}: a polygon needs at least 3 points, got {len(points)}")
    try:
        arr = np.array(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"region {n}: coordinates must be numbers") from None
    if any(isinstance(v, (bool, str)) for p in points for v in p) or not np.isfinite(arr).all():
        raise ValueError(f"region {n}: coordinates must be finite numbers")
    if np.abs(arr).max() > MAX_COORDINATE:
        raise ValueError(f"region {n}: coordinate {np.abs(arr).max():.6g} is beyond {MAX_COORDINATE:,} pixels; "
                         "points are pixel positions in the image")
    return arr.astype(np.float32)


def split_line(raw: str, delimiter: str = "\t") -> tuple[str, str]:
    """(image field, annotation field); ValueError if the delimiter is missing."""
    if delimiter not in raw:
        raise ValueError("no TAB between the image path and the annotation JSON")
    image, annotation = raw.split(delimiter, 2)[:2]
    if not image.strip():
        raise ValueError("empty image path")
    return image, annotation


def resolve_image_field(field_text: str, data_dir: Path) -> tuple[str, Path]:
    """Image path joined to data_dir. A JSON list of paths (OpenOCR allows it) resolves to its first one."""
    key = field_text
    if field_text.startswith("["):
        try:
            choices = json.loads(field_text)
            if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
                key = choices[0]
        except json.JSONDecodeError:
            pass
    return key, Path(os.path.join(str(data_dir), key))


def read_label_files(files: Iterable[Path], data_dir: Path, check_images: bool = True) -> LabelSet:
    """Parse every line of every file; collect samples and `file:line: reason` problems."""
    out = LabelSet()
    for file in files:
        file = Path(file)
        if not file.is_file():
            raise MissingFileError(f"label file {file} {why_not_a_file(file)}. Pass an existing file to --label-file.")
        for number, raw in label_lines(file):
            if not raw.strip():
                continue
            try:
                sample = _parse_line(raw, data_dir, check_images)
            except ValueError as exc:
                out.problems.append(LabelProblem(str(file), number, str(exc)))
                continue
            sample.source, sample.line = str(file), number
            out.samples.append(sample)
    return out


def _parse_line(raw: str, data_dir: Path, check_images: bool) -> LabelSample:
    image_field, annotation = split_line(raw)
    key, image = resolve_image_field(image_field, data_dir)
    polys, texts, ignore = parse_regions(annotation)
    if check_images and not image_exists(image):
        if NOT_UTF8 in key:
            raise ValueError(f"the image path {key!r} is not UTF-8 text ({NOT_UTF8} marks the bytes); save the label "
                             "file as UTF-8 (e.g. iconv -f GBK -t UTF-8 in.txt > out.txt)")
        raise ValueError(f"image {image} does not exist")
    return LabelSample(key=key, image=image, polys=polys, texts=texts, ignore=ignore)


def image_exists(image: Path) -> bool:
    """The image file, or for `doc.pdf#page=N` the PDF (the page is checked when read)."""
    if image.is_file():
        return True
    page = split_page_ref(str(image))
    return page is not None and os.path.isfile(page[0])


def check_data_dir(files: Iterable[Path], data_dir: Path, origin: str, flag: str = "--data-dir") -> None:
    """Refuse a data dir under which none or most of the labelled images are, with one message.

    A wrong folder (a forgotten `--data-dir`, the config's default taken instead) would otherwise show
    as one "does not exist" problem per line although every line is right. `origin` says where the
    folder came from (e.g. "from --data-dir", "the config's Eval.dataset.data_dir"); lines that do
    not parse and missing label files are left to the per-line reading.
    """
    files = [Path(f) for f in files]
    keys = [key for file in files if file.is_file() for key in _image_keys(file)]
    missing = [key for key in keys if not image_exists(Path(os.path.join(str(data_dir), key)))]
    if not keys or len(missing) * 2 <= len(keys):
        return
    names = ", ".join(f.name for f in files)
    where = f"the data dir {data_dir} ({origin})"
    if not data_dir.is_dir():
        what = f"{where} does not exist, so no image of {names} is found"
    elif len(missing) == len(keys):
        what = f"no image of {names} is under {where}"
    else:
        what = f"{len(missing)} of the {len(keys)} images of {names} are not under {where}"
    first = Path(os.path.join(str(data_dir), missing[0]))
    hint = _guess_data_dir(files, missing[0])
    example = f"{flag} (e.g. {flag} {hint})" if hint is not None else f"{flag} DIR"
    raise UserError(f"{what} ({first} does not exist, for one). Pass the folder the paths in {names} start from "
                    f"with {example}.")


def _image_keys(file: Path) -> Iterable[str]:
    """The image path of every line that has one (the rest are the per-line reading's problems)."""
    for _, raw in label_lines(file):
        try:
            yield resolve_image_field(split_line(raw)[0], Path("."))[0]
        except ValueError:
            continue


def label_lines(file: Path, kind: str = "label file") -> Iterable[tuple[int, str]]:
    """(1-based number, text) of each line of a UTF-8 text file (`kind` names it in errors), line ends and a
    leading byte-order mark (an editor's, invisible) removed; bytes that are not UTF-8 become U+FFFD. A UTF-16
    file is refused by name."""
    with open(file, "rb") as f:
        for number, raw_bytes in enumerate(f, 1):
            if number == 1:
                if raw_bytes.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw_bytes:
                    raise UserError(f"{kind} {file} is UTF-16 text (or holds NUL bytes); {kind}s are "
                                    "UTF-8. Save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 in.txt > out.txt).")
                raw_bytes = raw_bytes.removeprefix(b"\xef\xbb\xbf")
            yield number, raw_bytes.decode("utf-8", errors="replace").rstrip("\n").rstrip("\r")


def _guess_data_dir(files: list[Path], key: str) -> Optional[str]:
    """A folder the first missing path exists under: the current one, or one holding a label file (or above)."""
    candidates = [Path(".")] + [folder for f in files for folder in [f.parent, *f.parent.parents]]
    for folder in dict.fromkeys(candidates):
        if image_exists(folder / key):
            return str(folder)
    return None


def load_labels(files: Iterable[Path], data_dir: Path, check_images: bool = True) -> list[LabelSample]:
    """Like read_label_files, but any problem is fatal: all are listed, then a UserError is raised."""
    files = list(files)
    result = read_label_files(files, data_dir, check_images)
    if result.problems:
        shown = "\n".join(f"  {p}" for p in result.problems[:MAX_REPORTED_PROBLEMS])
        more = len(result.problems) - MAX_REPORTED_PROBLEMS
        extra = f"\n  ... and {more} more" if more > 0 else ""
        raise UserError(f"{len(result.problems)} malformed label line(s):\n{shown}{extra}\n"
                        "Each line must be `image_path<TAB>[{\"transcription\": ..., \"points\": [[x, y], ...]}]`; "
                        "fix these lines and retry.")
    if not result.samples:
        raise UserError(f"no labelled images in {', '.join(map(str, files))}: the file(s) are empty.")
    return result.samples


def labelled_data(cfg: dict, section: str, data_dir: Optional[Path],
                  label_files: Optional[list[Path]], images: bool = True) -> tuple[Path, list[Path]]:
    """--data-dir / --label-file, else the config's `<section>.dataset` values; no label file is a usage error.

    With `images`, a data dir under which most of the images are not is refused (check_data_dir).
    """
    dataset = (cfg.get(section) or {}).get("dataset") or {}
    origin = "from --data-dir" if data_dir is not None else f"the config's default, {section}.dataset.data_dir"
    data_dir = data_dir if data_dir is not None else Path(str(dataset.get("data_dir", ".")))
    files = label_files or [Path(str(p)) for p in dataset.get("label_file_list") or []]
    if not files:
        raise UserError(f"no label file: pass --label-file FILE (or set {section}.dataset.label_file_list in the "
                        "config).", exit_code=2)
    if images:
        check_data_dir(files, data_dir, origin)
    return data_dir, files
