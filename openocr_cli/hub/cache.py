"""The model cache on disk: where it is, which files an entry leaves there, and whether they are intact.

Each entry is cached as `<file>`, with `<file>.json` beside it holding the size and sha256 seen on the
first download (trust on first use: the release does not publish hashes), so a file that changes later
is noticed and fetched again. A download in progress lives in `<file>.part` (+ `.part.json`, what the
server said about it, for resuming), and `<file>.lock` serialises concurrent downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import platformdirs

from openocr_cli.fileio import atomic_write_text
from openocr_cli.hub.registry import ModelEntry, lookup

APP_NAME = "openocr-det"


def cache_dir() -> Path:
    """Where models are kept: $OPENOCR_DET_HOME, else the per-user cache folder of the app."""
    home = os.environ.get("OPENOCR_DET_HOME", "").strip()
    if home:
        return Path(home).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class EntryFiles:
    """The paths one entry uses in the cache."""

    final: Path
    part: Path
    part_meta: Path
    record: Path
    lock: Path


def entry_files(entry: ModelEntry) -> EntryFiles:
    final = cache_dir() / entry.filename
    return EntryFiles(final, final.with_name(final.name + ".part"), final.with_name(final.name + ".part.json"),
                      final.with_name(final.name + ".json"), final.with_name(final.name + ".lock"))


def read_json(path: Path) -> dict:
    """The JSON object in a file, or {} if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict) -> None:
    """Write atomically, so a reader never sees half a record."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_download(entry: ModelEntry, files: EntryFiles, sha: str, url: Optional[str]) -> None:
    """Remember the cached file's size, sha256 and origin in its .json record."""
    st = files.final.stat()
    write_json(files.record, {
        "name": entry.name, "file": entry.filename, "size": st.st_size, "sha256": sha,
        "mtime_ns": st.st_mtime_ns, "url": url,
        "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def discard_partial(files: EntryFiles) -> None:
    for path in (files.part, files.part_meta):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def check_cache(entry: ModelEntry, files: EntryFiles, expected_sha: Optional[str] = None
                ) -> tuple[Optional[Path], Optional[str]]:
    """(path, None) if the cached file is good, (None, why) if present but bad, (None, None) if absent."""
    try:
        st = files.final.stat()
    except OSError:
        return None, None
    record = read_json(files.record)
    if entry.size is not None and st.st_size != entry.size:
        return None, f"its size {st.st_size:,} B is not the published {entry.size:,} B"
    if isinstance(record.get("size"), int) and st.st_size != record["size"]:
        return None, f"its size {st.st_size:,} B differs from the {record['size']:,} B recorded when it was downloaded"
    sha = record.get("sha256")
    if not sha or record.get("mtime_ns") != st.st_mtime_ns:
        # Modified since recorded (or never recorded): hash it, it is cheap next to loading a model.
        actual = sha256_file(files.final)
        if sha and actual != sha:
            return None, "its sha256 differs from the one recorded when it was downloaded"
        try:  # first sight of a file put there by hand (trust on first use), or only touched
            record_download(entry, files, actual, record.get("url"))
        except OSError:
            pass
        sha = actual
    if entry.sha256 and sha != entry.sha256:
        return None, f"its sha256 {sha} is not the published {entry.sha256}"
    if expected_sha and sha != expected_sha:
        return None, f"its sha256 {sha} is not the expected {expected_sha}"
    return files.final, None


def cache_status(name: str) -> tuple[str, Optional[int]]:
    """("cached" | "corrupt" | "partial" | "missing", size in bytes if known) for `download --list`."""
    entry = lookup(name)
    files = entry_files(entry)
    path, problem = check_cache(entry, files)
    if path is not None:
        return "cached", path.stat().st_size
    if problem is not None:
        return "corrupt", entry.size
    if files.part.exists():
        return "partial", files.part.stat().st_size
    return "missing", entry.size
