"""The public error types. The CLI prints a UserError as a one-paragraph message and exits with its code.

Python callers can catch them by the standard type they also are: a missing input is a
`FileNotFoundError`, an image that cannot be decoded is a `ValueError`.
"""

from __future__ import annotations

import errno
import shutil
from typing import Optional


class UserError(Exception):
    """A clear, actionable message about bad input (file, line, flag) - never shown as a traceback."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the caller named does not exist (raised before any work starts)."""

    def __init__(self, message: str, exit_code: int = 1):
        UserError.__init__(self, message, exit_code)


class SettingError(UserError, ValueError):
    """A setting outside its range (a threshold, unclip_ratio, a size): exit code 2 on the command line, and a
    ValueError for Python callers; the server answers it with 422."""

    def __init__(self, message: str, exit_code: int = 2):
        UserError.__init__(self, message, exit_code)


class ImageReadError(ValueError):
    """A file (or in-memory image) that exists but cannot be decoded as an image; the message names it."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (runtimes raise multi-line reports), else its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_no_space(exc: BaseException) -> bool:
    """A write failed because the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def disk_full(folder, needed: Optional[int] = None) -> UserError:
    """The one message for a full disk: the folder, what is free, what the write needed (when known)."""
    try:
        free = f"{shutil.disk_usage(folder).free / 1024 ** 2:,.1f} MB free"
    except OSError:
        free = "free space unknown"
    need = f", about {needed / 1024 ** 2:,.1f} MB needed" if needed else ""
    return UserError(f"the disk holding {folder} is full ({free}{need}); nothing was left half-written. Free some "
                     "space there or choose another folder, then run the command again.")
