"""Writing a file so that a reader never sees half of it: write a temporary sibling, then rename it over.

One helper for every writer (checkpoints, ONNX files, plots, JSON, downloads): the temporary file sits in
the target's folder (a rename across file systems is not atomic), carries the process id (two runs may
write the same target), and is removed when the writer fails. A killed writer cannot remove it: the next run
in that folder does (`remove_stale_temporaries`), once the process id in its name is gone.
"""

from __future__ import annotations

import os
import re
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


_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the `.NAME.PID.tmp` files atomic_path left in `folder` when process PID was killed (that process is
    gone); the removed paths."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        found = _TEMPORARY.match(name)
        if found and int(found.group(1)) != os.getpid() and not process_alive(int(found.group(1))):
            path = Path(folder) / name
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def why_not_a_file(path: str | os.PathLike) -> str:
    """How a path that should name a file is not one, for a message: "is a folder, not a file" or "does not exist"."""
    return "is a folder, not a file" if Path(path).is_dir() else "does not exist"


def unwritable_reason(path: str | os.PathLike, folder: bool = False) -> str | None:
    """Why an output (a file, or a folder with `folder`) could not be created at `path`, found before the work
    that makes it (None: nothing in the way that can be seen now). Only existing paths are looked at."""
    path = Path(path)
    if path.exists():
        if path.is_dir() != folder:
            return "is a folder" if path.is_dir() else "is a file, not a folder"
        return None if os.access(path, os.W_OK) else "is not writable"
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        return f"cannot be created: {parent} is a file, not a folder"
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None
