"""Typer entry point: one small registration per subcommand; the work lives in cli/commands/ and the library below."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Optional

import typer

from openocr_cli._version import __version__
from openocr_cli.cli.ui import DownloadBar, error, install_console_logging
from openocr_cli.errors import UserError, disk_full, is_no_space
from openocr_cli.hub import set_default_progress


def _no_value_type(ctx: object = None) -> None:
    return None


def _flags_without_type(params: list) -> list:
    """Typer's rich help prints a flag's type beside it (`--version <bool>`), but a flag takes no value:
    its type column is left empty, as for --help in the plain help."""
    for param in params:
        if getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.display_type_rich = _no_value_type
    return params


class _Command(typer.core.TyperCommand):
    def get_params(self, ctx):
        return _flags_without_type(super().get_params(ctx))


class _Group(typer.core.TyperGroup):
    def get_params(self, ctx):
        return _flags_without_type(super().get_params(ctx))


app = typer.Typer(
    cls=_Group,
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


DEBUG_ENV = "OPENOCR_DET_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help=f"On an error, also print the full chained traceback (or set {DEBUG_ENV}=1)."
    ),
) -> None:
    """OpenOCR text detection (DBNet + RepViT): predict, eval, and more."""
    if debug:  # the environment carries it to torchrun workers too
        os.environ[DEBUG_ENV] = "1"


def _print_traceback(exc: BaseException) -> None:
    """The whole chain, including causes our messages normally hide (`raise ... from None`)."""
    seen: set[int] = set()
    link: Optional[BaseException] = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__suppress_context__ = False
        link = link.__cause__ or link.__context__
    traceback.print_exception(exc, file=sys.stderr)


# command name -> (module in openocr_cli.cli.commands, function, extra Typer settings)
COMMANDS = {
    "download": ("download", "download", {}),
    "train": ("train", "train", {}),
    "resume": ("train", "resume", {}),
    "eval": ("evaluate", "evaluate", {}),
    "predict": ("predict", "predict", {"no_args_is_help": True}),
    "export": ("export", "export", {}),
    "check-data": ("check_data", "check_data_command", {}),
    "convert": ("convert", "convert", {"no_args_is_help": True}),
    "benchmark": ("benchmark", "benchmark", {}),
    "serve": ("serve", "serve", {}),
}
_registered: set[str] = set()


def invoked_command(argv: list[str]) -> Optional[str]:
    """The subcommand named on the command line (the first word that is not an option), or None."""
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    return word if word in COMMANDS else None


def register(names: Optional[list[str]] = None) -> None:
    """Add the named subcommands (default: all) to the app, importing only their modules.

    main() registers just the one being run: the other command modules cost about 0.1 s of imports, a
    twentieth of a short `predict` run; `--help` and anything unrecognised get every command.
    """
    import importlib

    for name in names or list(COMMANDS):
        if name in _registered:
            continue
        module, function, settings = COMMANDS[name]
        command = getattr(importlib.import_module(f"openocr_cli.cli.commands.{module}"), function)
        app.command(name, cls=_Command, **settings)(command)
        _registered.add(name)


def _optional_values(argv: list[str]) -> list[str]:
    """`eval --tune SPEC` / `--tune=SPEC` -> `--tune --tune-ranges SPEC`: Typer has no option with an optional
    value, and a bare `--tune` must keep working. SPEC is recognised by its NAME=START:STOP:STEP form."""
    if "eval" not in argv:
        return argv
    out = []
    args = iter(argv)
    for arg in args:
        if arg.startswith("--tune="):
            out += ["--tune", "--tune-ranges", arg[len("--tune="):]]
            continue
        out.append(arg)
        if arg == "--tune":
            following = next(args, None)
            if following is None:
                break
            if "=" in following and not following.startswith("-"):
                out.append("--tune-ranges")
            out.append(following)
    return out


# What each package the lean ONNX-only install leaves out is needed for (docs/guides/export.md: lean install).
OPTIONAL_PACKAGES = {
    "torch": "PyTorch (training, export, the torch backend)",
    "torchvision": "torchvision",
    "onnx": "the onnx package (export, reading model metadata)",
    "albumentations": "albumentations (training augmentation)",
    "matplotlib": "matplotlib (training plots)",
    "onnxruntime": "onnxruntime (the ONNX backend, export verification)",
}


def main() -> None:
    """Run the app; a UserError becomes a one-paragraph message and its exit code, not a traceback
    (unless --debug / OPENOCR_DET_DEBUG=1 asks for it). Typer turns usage errors into exit code 2.
    The library's log records (notes, warnings) and download progress are shown on stderr from here on.
    """
    install_console_logging()
    set_default_progress(DownloadBar)
    try:
        sys.argv[1:] = _optional_values(sys.argv[1:])
        command = invoked_command(sys.argv[1:])
        register([command] if command is not None else None)
        app()
    except UserError as exc:
        if debug_enabled():
            _print_traceback(exc)
        error(str(exc))
        sys.exit(exc.exit_code)
    except OSError as exc:
        if not is_no_space(exc):
            raise
        if debug_enabled():
            _print_traceback(exc)
        error(str(disk_full(os.path.dirname(exc.filename) if exc.filename else os.getcwd())))
        sys.exit(1)
    except KeyboardInterrupt:
        error("interrupted.")
        sys.exit(130)
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if package not in OPTIONAL_PACKAGES:
            raise
        if debug_enabled():
            _print_traceback(exc)
        error(f"this needs {OPTIONAL_PACKAGES[package]}, which is not installed here (an ONNX-only install runs "
              f"predict and eval with --onnx-model). Install it (pip install {package}), or install openocr-det "
              "with all its dependencies.")
        sys.exit(1)


def run() -> None:
    """`main()`, then exit without the interpreter's teardown (the console script, cli/entry.py, ends here).

    Unloading PyTorch at interpreter exit touches about 125 MB more memory (peak RSS 645 MB instead
    of 519 MB after `import torch`, measured with /usr/bin/time) and takes time; by then every
    file we write is closed, so the streams and log handlers are flushed and the process ends.
    torchrun's workers end the same way, after leaving the process group: the teardown of a
    process group's threads at interpreter exit could abort a rank after a clean stop.
    """
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
