"""The probability maps of one model pass, kept exactly (float32) for `eval --tune`.

Quantised or downscaled copies would make the search score something else than `eval` does, so
maps stay float32: in memory up to a budget (OPENOCR_DET_TUNE_MEMORY_MB, default 2048), beyond it
in .npy files in a temporary folder, read back memory-mapped. Each entry also keeps the source size
post-processing scaled boxes to, so a cached map gives exactly the boxes `eval` produced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from openocr_cli.errors import UserError

MEMORY_ENV = "OPENOCR_DET_TUNE_MEMORY_MB"
DEFAULT_MEMORY_MB = 2048


def memory_budget() -> int:
    """Bytes of maps kept in RAM; the rest goes to disk."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if not raw:
        return DEFAULT_MEMORY_MB * 2**20
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise UserError(f"{MEMORY_ENV}={raw!r} is not a number of megabytes; set it to e.g. 1024 (0 keeps every "
                        "map on disk), or unset it for the default 2048.", exit_code=2)
    return int(value * 2**20)


@dataclass
class CachedMap:
    """One image's map (an array, or the .npy file it was spilled to) and its source size."""

    index: int
    data: Union[np.ndarray, str]
    src_hw: tuple[int, int]
    shape: tuple[int, int]

    def load(self) -> np.ndarray:
        return self.data if isinstance(self.data, np.ndarray) else np.load(self.data, mmap_mode="r")


class MapCache:
    """Maps by sample index; `add` is the `on_map` hook of `evaluate_model`. Use as a context manager
    (or call `close`) so spilled files are removed."""

    def __init__(self, budget: Optional[int] = None):
        self.budget = memory_budget() if budget is None else budget
        self.maps: list[CachedMap] = []
        self.in_memory = 0
        self.on_disk = 0
        self._folder: Optional[Path] = None

    def add(self, result) -> None:
        prob = np.ascontiguousarray(result.prob_map, dtype=np.float32)
        if prob.ndim != 2:
            raise ValueError(f"expected an (h, w) map, got shape {prob.shape}")
        if self.in_memory + prob.nbytes <= self.budget:
            self.maps.append(CachedMap(result.index, prob.copy() if prob.base is not None else prob, result.src_hw,
                                       prob.shape))
            self.in_memory += prob.nbytes
            return
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="openocr-det-tune-"))
        path = self._folder / f"{result.index}.npy"
        try:
            np.save(path, prob)
        except OSError as exc:
            raise UserError(f"cannot spill probability maps to {self._folder} ({exc.strerror}); free disk space, "
                            f"point TMPDIR elsewhere, or raise {MEMORY_ENV}.") from None
        self.maps.append(CachedMap(result.index, str(path), result.src_hw, prob.shape))
        self.on_disk += prob.nbytes

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> MapCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
