"""A predict run that can be killed and resumed, split into shards, and written as it goes.

* `OUTPUT/run.json` records what decides the output (model file's sha256, resolved settings, sources, shard,
  format, drawing); `differences` compares a resume's record with it.
* `scan_output` reads the results file a killed run left: it keeps every complete line, cuts a torn last one
  (no newline, or not a valid line), and returns the recorded images as 128-bit digests (16 bytes an image,
  `Recorded.has`), so a resumed run skips them without holding their names.
* `Shard` splits the sorted input files into contiguous index ranges, so shard 1's file, then shard 2's, ...
  concatenated are the unsharded file byte for byte.
* `ResultWriter` appends one line per image (det_results.txt or JSONL), line-buffered, drawing first: a line in
  the file means its image and drawing are complete.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from openocr_cli.data.pdf import split_page_ref
from openocr_cli.errors import UserError
from openocr_cli.inference.options import InferenceOptions
from openocr_cli.inference.results import Result
from openocr_cli.log import logger as log

RUN_NAME = "run.json"
RESULT_NAMES = {"txt": "det_results.txt", "jsonl": "det_results.jsonl"}
RECORD_VERSION = 1
UNSAFE_NAME_CHARACTERS = "\t\r\n"  # each would split or end a det_results.txt record
VIS_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# resolved settings that do not change a box: where it ran (compared by kind), the model's name (its sha256 is)
_NOT_COMPARED = {"model", "device"}


# -- shards ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (1-based): the files [floor((i-1) T / N), floor(i T / N)) of the T sorted inputs."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'I/N' with 1 <= I <= N; ValueError says what is wrong."""
        left, sep, right = text.strip().partition("/")
        try:
            index, count = int(left), int(right)
        except ValueError:
            index = count = 0
        if not sep or count < 1 or index < 1:
            raise ValueError(f"'{text}' is not I/N with 1 <= I <= N (e.g. 1/4: the first of 4 shards).")
        if index > count:
            raise ValueError(f"'{text}': shard {index} of {count} does not exist (I must be at most N).")
        return cls(index, count)

    def bounds(self, total: int) -> tuple[int, int]:
        return (self.index - 1) * total // self.count, self.index * total // self.count

    def select(self, files: Iterable[str], total: int) -> Iterator[str]:
        start, stop = self.bounds(total)
        return islice(files, start, stop)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# -- run.json ------------------------------------------------------------------------------------------------
def model_sha256(options: InferenceOptions) -> str:
    """sha256 of the model file a run uses (an OpenVINO IR: of the .xml and its .bin)."""
    from openocr_cli.hub import resolve_weights

    name = options.model_name()
    path = Path(name).expanduser() if name.lower().endswith(".xml") else resolve_weights(name)
    digest = hashlib.sha256()
    for part in (path, path.with_suffix(".bin")) if path.suffix.lower() == ".xml" else (path,):
        with open(part, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def device_kind(device: Any) -> str:
    """cpu / cuda / gpu from a device or execution provider name (cuda:1 and cuda:0 give the same boxes)."""
    text = str(device).lower()
    return next((kind for kind in ("cuda", "gpu", "cpu") if kind in text), text)


def run_record(*, options: InferenceOptions, settings: dict[str, dict], sha256: str, fmt: str, sources: list[str],
               recursive: bool, shard: Optional[Shard], files: Optional[int], vis: bool, devices: list[str],
               extra: Optional[dict] = None) -> dict:
    """What run.json holds for a run starting now (`settings`: Detector.describe(); `files`: a shard's count)."""
    values = {key: item["value"] for key, item in settings.items() if key not in _NOT_COMPARED}
    values.update(device=device_kind(settings.get("device", {}).get("value", "")), tile=options.tile,
                  tile_overlap=options.tile_overlap, pdf_dpi=options.pdf_dpi, fuse=options.fuse,
                  non_strict=options.non_strict, overrides=list(options.overrides))
    return {
        "version": RECORD_VERSION,
        "status": "running",
        "format": fmt,
        "results": RESULT_NAMES[fmt],
        "sources": list(sources),
        "recursive": recursive,
        "shard": None if shard is None else str(shard),
        "shard_files": files,
        "vis": vis,
        "model": {"name": options.model_name(), "sha256": sha256},
        "settings": {**values, **(extra or {})},
        "devices": devices,
        "started": now(),
    }


def differences(recorded: dict, current: dict) -> list[str]:
    """What a resume would change: one 'name: recorded X, now Y' per differing value (empty: it may resume)."""
    out = []

    def differ(name: str, old: Any, new: Any) -> None:
        if _comparable(old) != _comparable(new):
            out.append(f"{name}: recorded {_show(old)}, now {_show(new)}")

    differ("--format", recorded.get("format"), current["format"])
    differ("SOURCE", recorded.get("sources"), current["sources"])
    differ("--recursive", recorded.get("recursive"), current["recursive"])
    differ("--shard", recorded.get("shard"), current["shard"])
    if recorded.get("shard_files") is not None and current["shard_files"] is not None:
        differ("input files (the listing changed, so the shards would not add up)", recorded["shard_files"],
               current["shard_files"])
    differ("drawing (--no-vis)", recorded.get("vis"), current["vis"])
    differ("model file sha256", (recorded.get("model") or {}).get("sha256"), current["model"]["sha256"])
    old, new = recorded.get("settings") or {}, current["settings"]
    for key in sorted(set(old) | set(new)):
        differ(key, old.get(key), new.get(key))
    return out


def read_run(output: Path) -> Optional[dict]:
    path = output / RUN_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} ({exc}); it records the run in {output}. Choose another --output, "
                        "or delete the folder to start again.") from None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise UserError(f"{path} is not a run record this version writes. Choose another --output.", exit_code=2)
    return record


def write_run(output: Path, record: dict) -> None:
    from openocr_cli.fileio import atomic_write_text

    record["updated"] = now()
    try:
        atomic_write_text(output / RUN_NAME, json.dumps(record, indent=2) + "\n")
    except OSError as exc:
        raise _write_error(output / RUN_NAME, exc) from None


def _write_error(path: Path, exc: OSError) -> UserError:
    return UserError(f"cannot write {path}: {exc.strerror or exc}. What was written so far is kept; free space or "
                     "fix the folder, then run the same command with --resume.")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _comparable(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples and lists alike, as run.json stores them


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


# -- the results file a killed run left ------------------------------------------------------------------------
@dataclass
class Recorded:
    """The images a results file holds, as sorted 128-bit digests of their names (16 bytes an image)."""

    images: int = 0
    errors: list[str] = field(default_factory=list)  # JSONL records of unreadable images: reported again
    torn_bytes: int = 0
    _high: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    _low: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    def has(self, name: str) -> bool:
        high, low = _digest(name.encode("utf-8", "surrogateescape"))
        start = np.searchsorted(self._high, high, "left")
        stop = np.searchsorted(self._high, high, "right")
        return bool(np.any(self._low[start:stop] == low))


def _digest(data: bytes) -> tuple[np.uint64, np.uint64]:
    raw = hashlib.blake2b(data, digest_size=16).digest()
    return np.uint64(int.from_bytes(raw[:8], "little")), np.uint64(int.from_bytes(raw[8:], "little"))


def scan_output(path: Path, fmt: str, visit: Optional[Callable[[str], None]] = None) -> Recorded:
    """Read a results file, cut a torn last line off it (the file is truncated to its last complete line), and
    return what it holds; `visit(name)` is called per recorded image in file order (vis/ names).

    Only the last line can be torn (lines are appended in order); a malformed line before it means the file
    was edited or is not predict's, and is refused naming the line.
    """
    recorded = Recorded()
    if not path.is_file():
        return recorded
    digests = bytearray()
    end = 0
    with open(path, "rb") as f:
        lines = iter(f)
        line, number = next(lines, None), 0
        while line is not None:  # one line of look-ahead: only the last line's JSON is parsed in full
            number += 1
            following = next(lines, None)
            last = following is None
            parsed = _parse_line(line, fmt, strict=last) if line.endswith(b"\n") else None
            if parsed is None:
                if not last:
                    raise UserError(f"{path}:{number} is not a {fmt} result line, so the file was edited or not "
                                    "written by predict; resume needs predict's own file. Choose another --output.")
                break
            name, error = parsed
            digests += hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=16).digest()
            if error is not None:
                recorded.errors.append(error)
            elif visit is not None:
                visit(name)
            recorded.images += 1
            end += len(line)
            line = following
    size = path.stat().st_size
    if size > end:
        os.truncate(path, end)
        recorded.torn_bytes = size - end
    pairs = np.frombuffer(bytes(digests), dtype="<u8").reshape(-1, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    recorded._high, recorded._low = pairs[order, 0].copy(), pairs[order, 1].copy()
    return recorded


def _parse_line(raw: bytes, fmt: str, strict: bool) -> Optional[tuple[str, Optional[str]]]:
    """(image name, error or None) of one line, None if it is not one. Lines before the last are only split
    (their JSON was complete when the next line began); `strict` parses the last line's JSON too."""
    text = raw.decode("utf-8", "surrogateescape").rstrip("\n")
    if fmt == "txt":
        name, tab, boxes = text.partition("\t")
        if not tab or not name:
            return None
        if strict:
            try:
                if not isinstance(json.loads(boxes), list):
                    return None
            except ValueError:
                return None
        return name, None
    if not strict and text.startswith('{"image": "') and '"error": ' not in text:
        try:
            name, _ = json.JSONDecoder().raw_decode(text, 10)
            return (name, None) if isinstance(name, str) else None
        except ValueError:
            pass
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("image"), str):
        return None
    error = record.get("error")
    return record["image"], None if error is None else str(error)


# -- writing ---------------------------------------------------------------------------------------------------
def jsonl_record(result: Result) -> dict:
    """One image's JSONL object: image, width, height, detections (as det_results.txt), tiling and error when
    there is one (an unreadable image: width and height null, no detections)."""
    h, w = result.src_hw if result.src_hw is not None and result.error is None else (None, None)
    record: dict[str, Any] = {"image": result.source, "width": w, "height": h, "detections": result.to_json()}
    if result.tiling is not None:
        record["tiling"] = result.tiling
    if result.error is not None:
        record["error"] = result.error
    return record


def vis_extension(path: Optional[str]) -> str:
    """The drawing's file type: the image's own when OpenCV writes it, else PNG (PDF pages too)."""
    ext = os.path.splitext(os.path.basename(path or ""))[1]  # doc.pdf#page=3: '.pdf#page=3'
    return ext if ext.lower() in VIS_EXTENSIONS else ".png"


def encode_vis(result: Result) -> Optional[bytes]:
    """The drawn image (Result.plot) encoded as vis/ stores it; None if it cannot be encoded."""
    ok, buf = cv2.imencode(vis_extension(result.path), result.plot())
    return buf.tobytes() if ok else None


class VisNames:
    """vis/ file names in input order: page N of doc.pdf is doc_pN.png; a base name met again gets `_1`, `_2`.

    The names used are kept (about 100 bytes an image; --no-vis keeps none); a resumed run replays the recorded
    images' names first (`reserve`), so its drawings are named as one uninterrupted run names them.
    """

    def __init__(self) -> None:
        self._used: set[str] = set()

    def reserve(self, name: str) -> str:
        page = split_page_ref(name)
        stem = os.path.splitext(os.path.basename(page[0] if page else name))[0]
        if page:
            stem = f"{stem}_p{page[1]}"
        ext = vis_extension(name)
        candidate, n = f"{stem}{ext}", 1
        while candidate in self._used:
            candidate, n = f"{stem}_{n}{ext}", n + 1
        self._used.add(candidate)
        return candidate


class ResultWriter:
    """Appends each result to the results file as one line and its drawing to vis/, in the order given.

    The drawing is saved before the line is written, so an image whose line is in the file is complete.
    """

    def __init__(self, output: Path, fmt: str, vis: bool, append: bool, names: Optional[VisNames] = None):
        self.fmt = fmt
        self.path = output / RESULT_NAMES[fmt]
        self.vis_dir = output / "vis" if vis else None
        self.names = names or VisNames()
        # line-buffered: each image's line is in the file as soon as the image is done
        try:
            self._file = open(self.path, "a" if append else "w", encoding="utf-8", errors="surrogateescape",
                              buffering=1)
        except OSError as exc:
            raise _write_error(self.path, exc) from None

    def write(self, result: Result, vis: Optional[bytes] = None) -> None:
        """One result; `vis` is its drawing already encoded (a device worker's), else it is drawn here. A full
        disk or an unwritable folder is a UserError (the lines before stay complete: --resume goes on). A name
        det_results.txt cannot hold (a TAB or line break would forge a record) becomes the result's error."""
        if self.fmt == "txt" and result.error is None and any(c in result.source for c in UNSAFE_NAME_CHARACTERS):
            result.error = (f"{result.source!r}: the file name contains a TAB or line break, which det_results.txt "
                            "cannot hold; rename the file or use --format jsonl")
        try:
            self._write(result, vis)
        except OSError as exc:
            raise _write_error(Path(exc.filename) if exc.filename else self.path, exc) from None

    def _write(self, result: Result, vis: Optional[bytes]) -> None:
        if result.error is None and self.vis_dir is not None:
            name = self.names.reserve(result.source)
            data = vis if vis is not None else encode_vis(result)
            if data is None:
                log.warning(f"could not encode the drawn image for {result.source}")
            else:
                with open(self.vis_dir / name, "wb") as f:
                    f.write(data)
        if self.fmt == "jsonl":
            self._file.write(json.dumps(jsonl_record(result), ensure_ascii=False) + "\n")
        elif result.error is None:
            self._file.write(result.to_line())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
