"""'Did you mean ...?' hints for misspelled config keys, transform parameters and names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Optional


def closest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The valid choice nearest to `word` (case-insensitive), or None when nothing is close."""
    options = {str(c).lower(): str(c) for c in choices}
    match = difflib.get_close_matches(str(word).lower(), list(options), n=1, cutoff=0.6)
    return options[match[0]] if match else None


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """' (did you mean `PREFIXchoice`?)' for the closest choice, or '' when there is none."""
    match = closest(word, choices)
    return f" (did you mean `{prefix}{match}`?)" if match else ""
