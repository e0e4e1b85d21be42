"""The commands' options built from the option tables, and set-up shared by the inference commands.

`inference_command` gives predict, eval, benchmark and serve one Typer option per InferenceOptions field
(inference/options.py): the flag, help, default and range are the table's, so a new option is one field there.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import typing
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from openocr_cli.cli.ui import err_console
from openocr_cli.data.labels import labelled_data  # noqa: F401 (the commands' name for it)
from openocr_cli.errors import UserError
from openocr_cli.fileio import atomic_write_text, unwritable_reason
from openocr_cli.inference.options import DEFAULT_WEIGHTS, InferenceOptions  # noqa: F401 (the commands use both)
from openocr_cli.option_table import Flag, flags_of, range_problem


def _three_floats(value: Optional[str]) -> Optional[tuple[float, float, float]]:
    """Typer callback: '0.5,0.5,0.5' -> (0.5, 0.5, 0.5); anything else is a usage error."""
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        numbers = ()
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise typer.BadParameter(f"'{value}' is not three comma-separated finite numbers (e.g. 0.485,0.456,0.406).")
    return numbers  # type: ignore[return-value]


PARSERS = {"three_floats": _three_floats}  # Flag.parse -> the Typer callback that reads the text


def _finite_float(flag: Flag) -> Callable[[str], float]:
    """Typer's parser for a float flag: NaN and inf are refused by name (Typer's own range check calls NaN out of
    range, and without a range lets it through to fail later), then the flag's range is checked, in the words
    the Python API uses (option_table.range_problem)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not a number.") from None
        problem = "is not a finite number" if not math.isfinite(value) else range_problem(flag, value)
        if problem is not None:
            raise typer.BadParameter(f"{text} {problem}.")
        return value

    return parse


def float_option(*names: str, min: Optional[float] = None, max: Optional[float] = None, **kwargs: Any) -> Any:
    """typer.Option for a float flag declared in a command: finite, within [min, max] (shown by --help)."""
    return typer.Option(*names, min=min, max=max, parser=_finite_float(Flag("", low=min, high=max)), **kwargs)


@functools.cache
def _choices(cls: type, name: str) -> type[Enum]:
    """The Enum Typer shows as [a|b|c] for an option with choices (made once per option)."""
    return Enum(name.title().replace("_", ""), [(c, c) for c in flags_of(cls)[name][1].choices], type=str)


def typer_option(cls: type, name: str, **change: Any) -> tuple[Any, Any]:
    """(the command line's type, typer.Option with the default) for option `name` of an options dataclass
    (option_table.py); `change` replaces the default or help for one command."""
    field, flag = flags_of(cls)[name]
    default = change.get("default", field.default)
    extra: dict[str, Any] = {"help": change.get("help", flag.help)}
    if flag.low is not None:
        extra["min"] = flag.low
    if flag.high is not None:
        extra["max"] = flag.high
    if flag.metavar is not None:
        extra["metavar"] = flag.metavar
    if flag.parse is not None:
        extra["callback"] = PARSERS[flag.parse]
    if flag.choices:
        extra["case_sensitive"] = False
        kind = Optional[_choices(cls, name)]
    else:
        kind = flag.cli_type if flag.cli_type is not None else typing.get_type_hints(cls)[name]
        if kind in (float, Optional[float]) and flag.parse is None:
            extra["parser"] = _finite_float(flag)  # the range stays in extra too, for --help's [0<=x<=1]
    cli_default = None if default == () else default  # a repeatable option: None when not given
    return kind, typer.Option(cli_default, *flag.flag_names(name), **extra)


def annotated(cls: type, name: str) -> Any:
    """`Annotated[type, typer.Option(...)]` for option `name`, for a command that takes it on its own."""
    kind, info = typer_option(cls, name)
    info.default = ...  # Annotated: the command gives the default
    return Annotated[kind, info]


def options_command(cls: type, names: Iterable[str], **changes: dict[str, Any]) -> Callable:
    """Decorate a command whose parameter `options: cls` stands for the options `names` of the table `cls`:
    Typer sees one option per name in its place (type, flag, help, default, range from the table; `changes`
    give one command its own default or help: `fuse={"default": False, "help": ...}`), and the command gets
    them as one `cls` object."""
    names = tuple(names)
    unknown = set(names) - set(flags_of(cls)) | set(changes) - set(names)
    assert not unknown, f"not options of {cls.__name__} this command takes: {sorted(unknown)}"

    def wrap(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        params = []
        for param in signature.parameters.values():
            if param.name != "options":
                params.append(param)
                continue
            for name in names:
                kind, info = typer_option(cls, name, **changes.get(name, {}))
                params.append(inspect.Parameter(name, param.kind, default=info, annotation=kind))

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names}
            return command(**kwargs, options=cls(**{k: v for k, v in given.items() if v is not None}))

        run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return wrap


ALL_INFERENCE = tuple(flags_of(InferenceOptions))


def inference_command(*, without: Iterable[str] = (), **changes: dict[str, Any]) -> Callable:
    """`options_command` for InferenceOptions: every inference option but those `without`."""
    assert set(without) <= set(ALL_INFERENCE), f"not inference options: {sorted(set(without) - set(ALL_INFERENCE))}"
    return options_command(InferenceOptions, [n for n in ALL_INFERENCE if n not in set(without)], **changes)


Weights = annotated(InferenceOptions, "weights")
ConfigPath = annotated(InferenceOptions, "config")
Overrides = annotated(InferenceOptions, "overrides")
NonStrict = annotated(InferenceOptions, "non_strict")
PostprocessFile = annotated(InferenceOptions, "postprocess")


def check_outputs(**flags: tuple[Optional[Path], bool]) -> None:
    """Refuse, before any work, an output flag whose path cannot be written: `json=(path, False)` for a file,
    `report=(path, True)` for a folder (a long evaluation is not lost to a typo in --json)."""
    for name, (path, folder) in flags.items():
        reason = unwritable_reason(path, folder) if path is not None else None
        if reason is not None:
            raise UserError(f"--{name.replace('_', '-')} {path} {reason}; choose another path.", exit_code=2)


def write_json(path: Path, data: dict) -> None:
    """The --json output of a command, with a clear error when the file cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}.") from None


def report_unreadable(failures: list[str], what: str = "could not be read") -> None:
    """The closing list of images a command skipped, and exit 1 (every inference command ends this way)."""
    if not failures:
        return
    err_console.print(f"[red]{len(failures)} image(s) {what}:[/red]")
    for failure in failures:
        err_console.print(f"  {failure}", markup=False)
    raise typer.Exit(1)

