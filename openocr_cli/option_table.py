"""How an option is declared once: its Python default, its flag, its help and its range.

A field of an options dataclass (inference/options.py's InferenceOptions, training/jobs.py's TrainOptions)
made with `option(...)` is at the same time a keyword of the Python API (`Detector(box_thresh=0.5)`,
`openocr_cli.train(epochs=3)`) and a flag of every command that takes it (`--box-thresh`): the command line's
Typer options are built from this metadata (cli/options.py), the Python keywords are checked against the
fields (unknown ones raise TypeError with a suggestion), and a declared range is checked here for both.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from openocr_cli.errors import UserError
from openocr_cli.suggest import did_you_mean


class OptionError(UserError, ValueError):
    """A keyword argument whose value is outside its declared range (a ValueError for Python callers)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


@dataclass(frozen=True)
class Flag:
    """The command-line side of one option.

    `names`: the flag and its short forms (default: the field's name in kebab case, `box_thresh` -> --box-thresh);
    `low` / `high`: the inclusive range (given to Typer and checked for Python callers by `check_ranges`);
    `choices`: the values a text option takes; `cli_type`: the command line's type when it differs from the
    Python one (e.g. "--mean 0.5,0.5,0.5" is a text parsed into three numbers: `parse="three_floats"`).
    """

    help: str
    names: tuple[str, ...] = ()
    low: Optional[float] = None
    high: Optional[float] = None
    choices: tuple[str, ...] = ()
    metavar: Optional[str] = None
    cli_type: Any = None
    parse: Optional[str] = None

    def flag_names(self, name: str) -> tuple[str, ...]:
        return self.names or ("--" + name.replace("_", "-"),)


def option(default: Any, help: str, **flag: Any) -> Any:
    """A dataclass field that is an option: `box_thresh: Optional[float] = option(None, "Minimum box score.",
    low=0, high=1)`."""
    return dataclasses.field(default=default, metadata={"flag": Flag(help, **flag)})


def flags_of(cls: type) -> dict[str, tuple[dataclasses.Field, Flag]]:
    """{name: (field, Flag)} for every option of an options dataclass, in declaration order."""
    return {f.name: (f, f.metadata["flag"]) for f in dataclasses.fields(cls) if "flag" in f.metadata}


def check_keywords(given: Iterable[str], allowed: Iterable[str], where: str) -> None:
    """TypeError naming the first unknown keyword, with the nearest allowed one."""
    allowed = list(allowed)
    for name in given:
        if name not in allowed:
            raise TypeError(f"{where} got an unexpected keyword argument {name!r}{did_you_mean(name, allowed)}")


def check_ranges(values: Mapping[str, Any], cls: type, spell=lambda name: f"{name}=") -> None:
    """OptionError for a value outside its declared range or choices (None means "not given" and passes)."""
    table = flags_of(cls)
    for name, value in values.items():
        if value is None or name not in table:
            continue
        flag = table[name][1]
        label = spell(name)
        if flag.choices and str(getattr(value, "value", value)) not in flag.choices:
            raise OptionError(f"{label}{value!r} is not one of {', '.join(flag.choices)}.")
        problem = range_problem(flag, value)
        if problem is not None:
            raise OptionError(f"{label}{value!r} {problem}.")


def range_problem(flag: Flag, value: Any) -> Optional[str]:
    """Why `value` is not in the flag's declared range ("is not a finite number", "is out of range: ..."), or None
    (also when the flag declares no range)."""
    if flag.low is None and flag.high is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return "is not a finite number"
    if (flag.low is not None and value < flag.low) or (flag.high is not None and value > flag.high):
        return f"is out of range: {_range_text(flag)}"
    return None


def _range_text(flag: Flag) -> str:
    if flag.high is None:
        return f"it must be at least {flag.low:g}"
    if flag.low is None:
        return f"it must be at most {flag.high:g}"
    return f"it must be between {flag.low:g} and {flag.high:g}"
