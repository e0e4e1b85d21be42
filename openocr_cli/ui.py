"""The rich console, progress bars and tables every subcommand shares, so output looks the same."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


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


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    """A two-or-more column table; numbers are right-aligned."""
    t = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        t.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*(str(c) for c in row))
    return t


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}")


def error(message: str) -> None:
    """Errors always reach stderr, even from a quiet (non-zero rank) process."""
    Console(stderr=True, highlight=False).print(f"[bold red]error:[/bold red] {message}")


def quiet_unless_main(is_main: bool) -> None:
    """In distributed runs only rank 0 prints progress, tables and warnings."""
    console.quiet = err_console.quiet = not is_main
