"""OpenOCR-style YAML configuration: the packaged default, user files read unchanged, `-o` overrides.

The layout is OpenOCR's (`Global`, `Architecture`, `PostProcess`, `Train`, `Eval`, ...), so a
user's existing `repvit_db.yml` works as it is; accessors below pull out the few values the
drivers need, with OpenOCR's defaults where a key is absent.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from openocr_cli.config_schema import check_config
from openocr_cli.constants import IMAGENET_MEAN, IMAGENET_STD, POSTPROCESS_KEYS
from openocr_cli.errors import MissingFileError, UserError
from openocr_cli.fileio import why_not_a_file

DEFAULT_CONFIG_NAME = "repvit_db.yml"


def default_config_path() -> Path:
    return Path(str(resources.files("openocr_cli") / "configs" / DEFAULT_CONFIG_NAME))


def load_config(path: Optional[Path] = None) -> dict:
    """Read a YAML config (default: the packaged repvit_db.yml); YAML errors name file and line."""
    path = Path(path) if path is not None else default_config_path()
    if not path.is_file():
        raise MissingFileError(f"config file {path} {why_not_a_file(path)}. Pass an OpenOCR-style YAML file to "
                               "--config, or leave --config out to use the packaged repvit_db.yml.")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}). Fix the file and retry.") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file; --config expects a YAML file.") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: a config must be a YAML mapping with sections like Global and Architecture.")
    check_config(cfg, str(path))
    cfg.setdefault("filename", path.stem)
    return cfg


_EXPONENT_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`Global.epoch_num=10` -> (["Global", "epoch_num"], 10); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override '{text}' must look like Key.sub=value (for example -o Global.epoch_num=10).",
                        exit_code=2)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _EXPONENT_NUMBER.match(value.strip()):  # YAML 1.1 reads 1e9 as text
        value = float(value)
    return key.split("."), value


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of `cfg` with every `Key.sub=value` applied (dicts merged, other values replaced).

    Each override is checked against the config schema as it is applied, so a misspelled key is a
    usage error (exit 2) that names that -o.
    """
    cfg = copy.deepcopy(cfg)
    for text in overrides:
        _apply_one(cfg, text)
        check_config(cfg, f"-o {text}", exit_code=2)
    return cfg


def override_texts(overrides: Union[Sequence[str], Mapping[str, Any], None]) -> tuple[str, ...]:
    """-o texts from a list of `Key.sub=value` strings or a mapping {"Key.sub": value} (the Python API's forms;
    a non-string value is written as JSON, which YAML reads back as the same value)."""
    if overrides is None:
        return ()
    if isinstance(overrides, Mapping):
        return tuple(f"{key}={value if isinstance(value, str) else json.dumps(value)}"
                     for key, value in overrides.items())
    if isinstance(overrides, str):
        return (overrides,)
    return tuple(overrides)


def _apply_one(cfg: dict, text: str) -> None:
    parts, value = parse_override(text)
    node: Any = cfg
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[_list_index(node, part, text)]
            continue
        if not isinstance(node.get(part), (dict, list)):
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, text)] = value
    elif isinstance(node.get(last), dict) and isinstance(value, dict):
        node[last] = _merge(node[last], value)
    else:
        node[last] = value


def _list_index(node: list, part: str, text: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise UserError(f"override '{text}': '{part}' is not an index of a list of {len(node)} items.", exit_code=2)
    return int(part)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def find_transform(cfg: dict, section: str, name: str) -> Optional[dict]:
    """Parameters of transform `name` in `<section>.dataset.transforms` ({} if it has none), else None."""
    ops = (((cfg.get(section) or {}).get("dataset") or {}).get("transforms")) or []
    for op in ops:
        if isinstance(op, dict) and name in op:
            return dict(op[name] or {})
    return None


def resize_params(cfg: dict) -> dict:
    """DetResizeForTest parameters of the Eval pipeline (OpenOCR's defaults when absent)."""
    params = find_transform(cfg, "Eval", "DetResizeForTest")
    return params if params is not None else {"limit_side_len": 960, "limit_type": "max"}


def normalize_params(cfg: dict) -> dict:
    """Mean/std of the Eval NormalizeImage op (ImageNet statistics when absent)."""
    params = find_transform(cfg, "Eval", "NormalizeImage") or {}
    return {
        "mean": [float(v) for v in params.get("mean", IMAGENET_MEAN)],
        "std": [float(v) for v in params.get("std", IMAGENET_STD)],
    }


def postprocess_params(cfg: dict) -> dict:
    """DBPostProcess keyword arguments from the PostProcess section (name and unknown keys dropped)."""
    section = cfg.get("PostProcess") or {}
    return {k: section[k] for k in POSTPROCESS_KEYS if k in section}
