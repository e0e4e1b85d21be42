"""Settings as named layers: each source of values built once, the value and its source from one lookup.

A layer is (source name, {key: value}); `layered` stacks them, highest first, into one ChainMap whose entries are
`Setting(value, source)`, so `chain["box_thresh"]` says both what the value is and which layer gave it.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One resolved value and the layer it came from."""

    value: Any
    source: str


def layered(*layers: tuple[str, Mapping[str, Any]]) -> ChainMap[str, Setting]:
    """The layers, highest first, as one lookup of Setting(value, source)."""
    return ChainMap(*({key: Setting(value, name) for key, value in values.items()} for name, values in layers))


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values a caller gave: None means "not given" and leaves the key to the layers below."""
    return {key: value for key, value in values.items() if value is not None}
