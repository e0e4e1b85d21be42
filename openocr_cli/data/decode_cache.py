"""A decode cache for training images (`Train.dataset.cache`, `train --cache`): decode once, then read pixels.

Training reads every image once per epoch for hundreds of epochs; decoding is the same work every time.

- `none`: every read decodes the file (the default).
- `disk`: each decoded image is an uncompressed `.npy` file in a cache folder (default: `decoded/` in
  openocr-det's user cache folder, $OPENOCR_DET_HOME if set, shared by every run, check-data and
  bench_data.py), named by a hash of the image's absolute path, the decode flags and the OpenCV version,
  then a hash of its size and mtime_ns: an image that changes gets a new entry, and storing it deletes the
  entries of that image's earlier versions, so the folder does not grow with edits. Files are written
  atomically (a reader never sees half of one) and read memory-mapped, so the OS page cache serves them
  to every DataLoader worker and rank without copies. A file that cannot be read back as the array it
  should hold (truncated, a broken header) is decoded again and rewritten.
- `ram`: every image decoded into this process before the DataLoader starts its workers, which
  share the arrays copy-on-write (fork). The size is checked first against the available memory
  and the cache refused with the numbers when it does not fit. Where workers are not forked
  (spawn/forkserver start methods) each worker would hold a copy, so ram is refused there with
  workers > 0. The images are as they were when the run started.

Each cached array is exactly what DecodeImage's decode gives (`cv2.imdecode` with its flags, EXIF
orientation applied once), so the samples are bit-identical with and without the cache.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from openocr_cli.data.images import image_size
from openocr_cli.errors import UserError
from openocr_cli.fileio import atomic_path

log = logging.getLogger(__name__)

MODES = ("none", "ram", "disk")
RAM_MARGIN = 1.5  # the cache may take at most 1/1.5 of the available memory: the model, batches and workers need room
DISK_MARGIN = 1.1


def check_mode(value: object, key: str = "Train.dataset.cache") -> str:
    """`none` (also YAML null / false), `ram` or `disk`; anything else is a UserError naming the key."""
    if value is None or value is False:
        return "none"
    text = str(value).strip().lower()
    if text not in MODES:
        raise UserError(f"{key} is {value!r}; it must be one of none, ram or disk.")
    return text


def default_folder() -> Path:
    """The disk cache's folder: `decoded/` in openocr-det's cache folder ($OPENOCR_DET_HOME or the user cache)."""
    from openocr_cli.hub import cache_dir

    return cache_dir() / "decoded"


def available_memory() -> int:
    """Bytes this process may still take without swapping: MemAvailable, capped by a cgroup v2 memory limit."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 1 << 62  # unknown: do not refuse
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def _gb(size: float) -> str:
    """Bytes as GB, or MB below 1 GB."""
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


VERSION_MARK = "-"  # entry names: <image hash>-<size+mtime hash>.npy


@dataclass
class CacheSummary:
    """What a cache holds for one training set, for the run log."""

    mode: str
    images: int
    size: int  # bytes of decoded pixels for those images
    folder: Optional[Path] = None
    present: int = 0  # disk: images already in the folder

    def describe(self) -> str:
        if self.mode == "ram":
            return f"decode cache ram: {self.images} images, {_gb(self.size)} in memory"
        if self.mode == "disk":
            return (f"decode cache disk at {self.folder}: {self.images} images, {_gb(self.size)}; "
                    f"{self.present} already cached, {self.images - self.present} decoded during the first epoch")
        return "decode cache off"


class DecodeCache:
    """Decoded images by path: `image(path)` -> HWC uint8 array (read-only), or None if the file does not decode.

    `decode` turns a file's bytes into the array (DecodeImage's decode); `flags` names that decode in
    the disk key. `available` returns the bytes of free memory (injectable for tests).
    """

    def __init__(self, mode: str, decode: Callable[[bytes], Optional[np.ndarray]], flags: int = cv2.IMREAD_COLOR,
                 folder: Optional[Path] = None, available: Callable[[], int] = available_memory):
        self.mode = check_mode(mode)
        self.decode, self.flags = decode, flags
        self.folder = Path(folder) if folder is not None else (default_folder() if self.mode == "disk" else None)
        self.available = available
        self.ram: dict[str, Optional[np.ndarray]] = {}
        self.hits = self.misses = 0

    def __getstate__(self) -> dict:  # a spawned worker gets the settings, not a filled RAM dict (refused anyway)
        state = dict(self.__dict__)
        state["available"] = available_memory
        return state

    # ---------------------------------------------------------------------------------------------
    def prepare(self, paths: Sequence[Path], sizes: Sequence[Optional[tuple[int, int]]], workers: int = 0,
                threads: int = 2) -> CacheSummary:
        """Before the DataLoader starts: check the room needed (from the images' (height, width)), and for ram
        decode every image now. Returns the summary for the run log; UserError when it does not fit."""
        unique: dict[str, int] = {}
        for path, size in zip(paths, sizes):
            height, width = (size or image_size(Path(path))) or (0, 0)
            unique[str(Path(path).absolute())] = int(height) * int(width) * 3
        need = sum(unique.values())
        summary = CacheSummary(self.mode, len(unique), need, self.folder)
        if self.mode == "ram":
            self._check_ram(need, len(unique), workers)
            with ThreadPoolExecutor(max(1, threads)) as pool:  # cv2.imdecode releases the GIL
                decoded = list(pool.map(self._decode_file, unique))
            for key, image in zip(unique, decoded):
                if image is not None:
                    image.setflags(write=False)
                self.ram[key] = image
            summary.size = sum(a.nbytes for a in decoded if a is not None)
        elif self.mode == "disk":
            assert self.folder is not None
            self.folder.mkdir(parents=True, exist_ok=True)
            missing = 0
            for key, size in unique.items():
                entry = self._entry(key)
                if entry is not None and entry.is_file():
                    summary.present += 1
                else:
                    missing += size
            free = shutil.disk_usage(self.folder).free
            if missing * DISK_MARGIN > free:
                raise UserError(f"--cache disk needs {_gb(missing)} more for {len(unique) - summary.present} decoded "
                                f"images in {self.folder}, but that disk has {_gb(free)} free. Free some space, set "
                                "OPENOCR_DET_HOME to a folder on a larger disk, or use --cache none.")
        return summary

    def _check_ram(self, need: int, images: int, workers: int) -> None:
        # the start method in force, or the platform's default (the first listed), without fixing it
        method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
        if workers > 0 and method != "fork":
            raise UserError(f"--cache ram with {workers} loader workers needs forked workers (which share the "
                            f"decoded images), but this platform starts them with '{method}', so each would hold "
                            "its own copy. "
                            "Use --cache disk (the OS page cache shares it), or --workers 0.")
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))  # torchrun: one copy per local rank
        available = int(self.available())
        total = need * ranks
        if total * RAM_MARGIN > available:
            per_rank = f" x {ranks} processes on this machine" if ranks > 1 else ""
            raise UserError(f"--cache ram needs {_gb(total)} for {images} decoded images{per_rank} (plus a "
                            f"{RAM_MARGIN - 1:.0%} margin: {_gb(total * RAM_MARGIN)}), but only {_gb(available)} of "
                            "memory is available; it would push the machine into swap. Use --cache disk (the page "
                            "cache holds what fits and reads the rest from disk), or --cache none.")

    # ---------------------------------------------------------------------------------------------
    def image(self, path: Path) -> Optional[np.ndarray]:
        """The decoded pixels of `path` (read-only), decoding (and, for disk, storing) them on a miss."""
        key = str(Path(path).absolute())
        if self.mode == "ram":
            if key in self.ram:
                self.hits += 1
                return self.ram[key]
            self.misses += 1
            return self._decode_file(key)  # not listed at prepare(): decoded, not kept (workers would each copy it)
        if self.mode == "disk":
            return self._from_disk(key)
        return self._decode_file(key)

    def _decode_file(self, key: str) -> Optional[np.ndarray]:
        with open(key, "rb") as f:
            raw = f.read()
        return self.decode(raw) if raw else None

    def _entry(self, key: str) -> Optional[Path]:
        try:
            st = os.stat(key)
        except OSError:
            return None
        source = hashlib.sha1(f"{key}\0{self.flags}\0{cv2.__version__}".encode("utf-8", "surrogateescape"))
        version = hashlib.sha1(f"{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
        assert self.folder is not None
        return self.folder / source.hexdigest()[:2] / f"{source.hexdigest()}{VERSION_MARK}{version}.npy"

    def _from_disk(self, key: str) -> Optional[np.ndarray]:
        entry = self._entry(key)
        if entry is None:  # the image itself is gone: the caller reports it as an unreadable sample
            return self._decode_file(key)
        try:
            image = np.load(entry, mmap_mode="r", allow_pickle=False)
            if image.dtype == np.uint8 and image.ndim == 3:
                self.hits += 1
                return image
            log.warning("decode cache: %s holds a %s %s array, not an image; decoding %s again", entry, image.dtype,
                        image.shape, key)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, EOFError) as exc:  # truncated or overwritten from outside: never trusted
            log.warning("decode cache: %s is unreadable (%s); decoding %s again", entry, exc, key)
        self.misses += 1
        image = self._decode_file(key)
        if image is not None:
            self._store(entry, image)
        return image

    def _store(self, entry: Path, image: np.ndarray) -> None:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(entry) as tmp, open(tmp, "wb") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(image), allow_pickle=False)
        except OSError as exc:  # a full or read-only disk costs speed, not the run
            log.warning("decode cache: cannot write %s (%s); the image is decoded on every read", entry, exc)
            return
        source = entry.name.split(VERSION_MARK)[0]
        for stale in entry.parent.glob(f"{source}{VERSION_MARK}*.npy"):  # the same image before it changed
            if stale != entry:
                stale.unlink(missing_ok=True)  # a reader that has it memory-mapped keeps its pages
