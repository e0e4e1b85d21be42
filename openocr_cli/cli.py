"""Typer entry point: one small registration per subcommand; the work lives in commands/ and engine/."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from openocr_cli import __version__
from openocr_cli.errors import UserError
from openocr_cli.ui import error

app = typer.Typer(
    name="openocr-det",
    help="Fine-tune, evaluate, run and export OpenOCR's RepViT-DB text detector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"openocr-det {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """OpenOCR text detection (DBNet + RepViT): predict, eval, and more."""


def _register() -> None:
    from openocr_cli.commands import download, evaluate, export, predict, train

    app.command("download")(download.download)
    app.command("train")(train.train)
    app.command("resume")(train.resume)
    app.command("eval")(evaluate.evaluate)
    app.command("predict", no_args_is_help=True)(predict.predict)
    app.command("export")(export.export)


_register()


def main() -> None:
    """Run the app; a UserError becomes a one-paragraph message and its exit code, not a traceback.

    Typer itself turns usage errors into exit code 2 with the usage line.
    """
    try:
        app()
    except UserError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error("interrupted.")
        sys.exit(130)
