"""The public error types. The CLI prints a UserError as a one-paragraph message and exits with its code.

Python callers can catch them by the standard type they also are: a missing input is a
`FileNotFoundError`, an image that cannot be decoded is a `ValueError`.
"""


class UserError(Exception):
    """A clear, actionable message about bad input (file, line, flag) - never shown as a traceback."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the caller named does not exist (raised before any work starts)."""

    def __init__(self, message: str, exit_code: int = 1):
        UserError.__init__(self, message, exit_code)


class ImageReadError(ValueError):
    """A file (or in-memory image) that exists but cannot be decoded as an image; the message names it."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (runtimes raise multi-line reports), else its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
