"""Post-processing values from outside the config: `--postprocess FILE`, a checkpoint, ONNX metadata.

Only the three values `eval --tune` searches (thresh, box_thresh, unclip_ratio) travel this way.
Order, lowest first: the packaged config, the checkpoint's saved config (its `PostProcess`
section) or the ONNX model's metadata `postprocess`, an explicit --config (which replaces both), the
--postprocess file, `-o PostProcess.KEY=...`, and the --thresh / --box-thresh / --unclip-ratio flags:
`layered_params` stacks them as named layers (inference/layers.py) and reads value and source in one lookup.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from openocr_cli import config as cfgmod
from openocr_cli.constants import POSTPROCESS_KEYS
from openocr_cli.errors import UserError
from openocr_cli.inference.layers import given, layered

TUNABLE = ("thresh", "box_thresh", "unclip_ratio")



def _problem(key: str, value: Any) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return f"{key} must be a number, got {value!r}"
    if key == "unclip_ratio" and value <= 0:
        return f"unclip_ratio must be above 0, got {value!r}"
    if key != "unclip_ratio" and not 0 <= value <= 1:
        return f"{key} must be between 0 and 1, got {value!r}"
    return None


def read_postprocess_file(path: Path) -> dict[str, float]:
    """The `tuned` object of an `eval --tune --json` file, or a flat object with those keys."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--postprocess {path} does not exist. Write one with `openocr-det eval --tune --json "
                        f"{path.name}`, or a JSON object like {{\"thresh\": 0.3, \"box_thresh\": 0.6, "
                        "\"unclip_ratio\": 1.5}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--postprocess {path} cannot be read ({getattr(exc, 'strerror', None) or exc}).") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"--postprocess {path}:{exc.lineno}: not valid JSON ({exc.msg}). Pass the file "
                        "`eval --tune --json` wrote, or a JSON object with thresh, box_thresh, unclip_ratio.") \
            from None
    where = f"--postprocess {path}"
    if isinstance(data, dict) and "tuned" in data:
        data, where = data["tuned"], f"--postprocess {path} (its \"tuned\" object)"
    if not isinstance(data, dict) or not any(k in data for k in TUNABLE):
        raise UserError(f"{where} has no post-processing values: expected an object with a \"tuned\" object (as "
                        "`eval --tune --json` writes) or with any of thresh, box_thresh, unclip_ratio.")
    return check_values(data, where)


def check_values(data: Mapping[str, Any], where: str) -> dict[str, float]:
    """The tunable values of `data` as floats; an invalid one is a UserError naming `where` and the key."""
    unknown = sorted(set(data) - set(TUNABLE))
    if unknown and where == "postprocess=":
        raise UserError(f"postprocess= takes {', '.join(TUNABLE)}; {', '.join(map(str, unknown))} is not one of them.",
                        exit_code=2)
    values = {}
    for key in TUNABLE:
        if key in data:
            problem = _problem(key, data[key])
            if problem:
                raise UserError(f"{where}: {problem}. Fix the value or remove the key.")
            values[key] = float(data[key])
    return values


def from_saved_config(saved: Optional[Mapping]) -> dict[str, float]:
    """Valid values of a checkpoint's saved config `PostProcess` section (anything else is ignored)."""
    section = (saved or {}).get("PostProcess") if isinstance(saved, Mapping) else None
    return _valid(section)


def from_metadata(metadata: Mapping[str, str]) -> dict[str, float]:
    """Valid values of an ONNX model's `postprocess` metadata; other exporters' unreadable values are ignored."""
    try:
        section = json.loads(metadata.get("postprocess", ""))
    except (TypeError, ValueError):
        return {}
    return _valid(section)


def _valid(section: Any) -> dict[str, float]:
    if not isinstance(section, Mapping):
        return {}
    return {k: float(section[k]) for k in TUNABLE if k in section and _problem(k, section[k]) is None}


def override_keys(overrides: Sequence[str]) -> set[str]:
    """PostProcess keys set with -o (they rank above the file, like flags)."""
    keys = set()
    for text in overrides:
        parts, value = cfgmod.parse_override(text)
        if parts[0] == "PostProcess" and len(parts) == 2:
            keys.add(parts[1])
        elif parts == ["PostProcess"] and isinstance(value, dict):
            keys.update(str(k) for k in value)
    return keys


def layered_params(cfg: dict, overrides: Sequence[str], layers: Sequence[tuple[str, Mapping[str, float]]],
                   flags: Mapping[str, Any], explicit: str = "flag") -> tuple[dict, dict[str, str]]:
    """DBPostProcess keyword arguments with every layer applied, and where each value came from (`explicit`
    names the flags' layer; keys nothing sets keep DBPostProcess's defaults and the source "default").

    `cfg` has the -o overrides applied; `layers` (the model's values, the postprocess= file) are lowest first.
    """
    config = cfgmod.postprocess_params(cfg)
    chain = layered((explicit, given(flags)), ("-o", {k: config[k] for k in override_keys(overrides) if k in config}),
                    *reversed(layers), ("config", config))
    return ({key: setting.value for key, setting in chain.items()},
            {key: chain[key].source if key in chain else "default" for key in POSTPROCESS_KEYS})
