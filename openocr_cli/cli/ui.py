"""The rich console, progress bars and tables every subcommand shares, so output looks the same."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Optional

from rich.console import Console, ConsoleDimensions, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from openocr_cli.log import RUN_LOGGER
from openocr_cli.log import logger as library_logger

PIPE_WIDTH = 100_000  # "no limit" for output that is not a terminal: a line is never wrapped into two


class WholeValueConsole(Console):
    """A console that never cuts a value in two.

    Written to a pipe or a file (`| cat`, `> log`), lines are as long as they need (COLUMNS and the
    terminal the command runs in do not apply). In a terminal, text wraps between words, and a table
    wider than the terminal keeps its identifying columns whole (ui.table's `keys`): the terminal wraps
    the long line instead of rich cutting a value.
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        return size if self.is_terminal else ConsoleDimensions(PIPE_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)

    def print(self, *objects, **kwargs) -> None:
        kwargs.setdefault("crop", False)  # a table drawn wider than the terminal (_KeyedTable) is not cut
        super().print(*objects, **kwargs)


console = WholeValueConsole(highlight=False)
err_console = WholeValueConsole(stderr=True, highlight=False)


def progress(transient: bool = False) -> Progress:
    """A progress bar for counted work (images, batches); disabled when NO_PROGRESS is set."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=bool(os.environ.get("OPENOCR_DET_NO_PROGRESS")),
    )


class _RateColumn(TextColumn):
    """images/s over rich's recent window (blank until measured)."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} img/s")


def rate_progress() -> Progress:
    """progress() with images/s: for long inference runs (predict), whose total may be set once counted."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=bool(os.environ.get("OPENOCR_DET_NO_PROGRESS")),
    )


class DownloadBar:
    """The download bar on stderr (hub's DownloadProgress): the file name, bytes, speed and eta.

    The CLI makes it the hub's default at start-up (hub.set_default_progress(DownloadBar)); the hub hides
    it when OPENOCR_DET_NO_PROGRESS is set or the caller passes show_progress=False.
    """

    def __init__(self, description: str, total: Optional[int] = None):
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=err_console,
        )
        self._task = self._bar.add_task(description, total=total, visible=False)

    def __enter__(self) -> DownloadBar:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.__exit__(*exc_info)

    def update(self, completed: int, total: Optional[int]) -> None:
        self._bar.update(self._task, total=total, completed=completed, visible=True)


class _KeyedTable(Table):
    """A table whose no-wrap (identifying) columns are never shortened: when the width cannot hold them
    with the other columns wrapped, the table is drawn at its natural width, wider than the terminal."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        needed = Measurement.get(console, options.update_width(PIPE_WIDTH), self)
        if needed.minimum > options.max_width:
            options = options.update_width(needed.maximum)
        yield from super().__rich_console__(console, options)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]], keys: int = 1) -> Table:
    """A two-or-more column table; numbers are right-aligned. The first `keys` columns name a row: they
    are never wrapped or cut, however narrow the terminal."""
    t = _KeyedTable(title=title, title_justify="left")
    for i, name in enumerate(columns):
        t.add_column(name, justify="left" if i == 0 else "right", no_wrap=i < keys)
    for row in rows:
        t.add_row(*(str(c) for c in row))
    return t


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}")


def _plain_warning(message: str) -> Text:
    """What warn() prints, for plain text (no markup in `message`)."""
    return Text.assemble(("warning:", "yellow"), " ", message)


def error(message: str) -> None:
    """Errors always reach stderr, even from a quiet (non-zero rank) process.

    `message` is plain text (a UserError's), shown as written: `[u'c']` is not taken for markup.
    """
    WholeValueConsole(stderr=True, highlight=False).print(Text.assemble(("error:", "bold red"), " ", message))


class ConsoleLogHandler(logging.Handler):
    """Shows the library's log records (the "openocr_cli" logger) on stderr the way the commands print.

    WARNING and above look like warn() ("warning: ..."), INFO is a plain line. Messages are plain text,
    printed as written (no rich markup). A record may carry a table, `extra={"table": (title, columns,
    rows)}`: it is shown as that table (ui.table) instead of its message, so the message should say the
    same in plain text for other logging handlers. Printing goes through err_console, so a quiet
    console (non-zero DDP ranks, quiet_unless_main) shows nothing. train.log's lines (its child
    log.RUN_LOGGER) are left to the training display, which shows the run its own way.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == RUN_LOGGER:
            return
        try:
            spec = getattr(record, "table", None)
            if spec is not None:
                title, columns, rows = spec
                err_console.print(table(escape(str(title)), [escape(str(c)) for c in columns],
                                        ([escape(str(c)) for c in row] for row in rows)))
            elif record.levelno >= logging.WARNING:
                err_console.print(_plain_warning(record.getMessage()))
            else:
                err_console.print(Text(record.getMessage()))
        except Exception:
            self.handleError(record)


def install_console_logging() -> ConsoleLogHandler:
    """Show the library's notes (INFO) and warnings on stderr; calling it again adds no second handler."""
    library_logger.setLevel(logging.INFO)
    for handler in library_logger.handlers:
        if isinstance(handler, ConsoleLogHandler):
            return handler
    handler = ConsoleLogHandler()
    library_logger.addHandler(handler)
    return handler


def quiet_unless_main(is_main: bool) -> None:
    """In distributed runs only rank 0 prints progress, tables and warnings."""
    console.quiet = err_console.quiet = not is_main
