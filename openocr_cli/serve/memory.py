"""The server's memory budget: how many decoded pixels may be in flight at once, and handing freed memory back.

A decoded image costs about BYTES_PER_PIXEL bytes per pixel while it is in flight (the BGR array, the decoder's
own buffer and, tiled, the float32 probability map), so the default budget is a quarter of the machine's memory
at that rate, and never less than one image of --max-pixels. After a burst, glibc keeps the freed heap pages
mapped; `return_free_memory` asks it to give them back, so the server's RSS returns near its idle level.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

BYTES_PER_PIXEL = 16
MEMORY_SHARE = 0.25


def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a small machine
        return 4 * 1024 ** 3


def default_pixels_in_flight(max_pixels: int) -> int:
    return max(int(max_pixels), int(machine_memory_bytes() * MEMORY_SHARE / BYTES_PER_PIXEL))


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def return_free_memory() -> None:
    """glibc's malloc_trim(0): freed heap pages back to the system (nothing elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
