"""Writing a file so that a reader never sees half of it: write a temporary sibling, then rename it over.

One helper for every writer (checkpoints, ONNX files, plots, JSON, downloads): the temporary file sits in
the target's folder (a rename across file systems is not atomic), carries the process id (two runs may
write the same target), and is removed when the writer fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an error it replaces `path`.

    `durable` also fsyncs the file and its folder, so the new file survives a power loss (checkpoints).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = False) -> None:
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)
