"""The RepViT-DB detector as one module, and its construction from OpenOCR's `Architecture` config.

Only the released architecture is built: the checkpoint's key names and shapes depend on it,
so any other YAML value is reported as a UserError instead of silently building something else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch import nn

from openocr_cli.errors import UserError
from openocr_cli.model.head import DBHead
from openocr_cli.model.neck import RSEFPN
from openocr_cli.model.repvit import RepViTBackbone, reparameterize


class DBDetector(nn.Module):
    """backbone -> neck -> head; attribute names are the state_dict key prefixes."""

    def __init__(self, neck_channels: int = 96, shortcut: bool = True, k: float = 50):
        super().__init__()
        self.backbone = RepViTBackbone()
        self.neck = RSEFPN(self.backbone.out_channels, neck_channels, shortcut)
        self.head = DBHead(neck_channels, k)
        self.is_fused = False

    def forward(self, x: torch.Tensor, data: Any = None) -> torch.Tensor:
        """Train: (N,3,H,W) = cat[P, T, B]. Eval: (N,1,H,W) = P. `data` is accepted and ignored."""
        return self.head(self.neck(self.backbone(x)))

    def fuse(self) -> DBDetector:
        """Re-parameterise the backbone for inference (in place, idempotent); neck and head untouched.

        Call after loading the (unfused) weights and switching to eval: the fused keys no longer
        match checkpoints, and BN statistics are frozen into the convs.
        """
        if not self.is_fused:
            reparameterize(self.backbone)
            self.is_fused = True
        return self


SUPPORTED = {
    "model_type": "det",
    "algorithm": ("DB_mobile", "DB"),
    "Backbone.name": "RepSVTR_det",
    "Backbone.in_channels": 3,
    "Neck.name": "RSEFPN",
    "Neck.out_channels": 96,
    "Head.name": "DBHead",
}


def _unsupported(key: str, value: Any, expected: Any) -> UserError:
    if isinstance(expected, tuple):
        wanted = " or ".join(repr(e) for e in expected)
    else:
        wanted = repr(expected)
    return UserError(f"Architecture.{key} is {value!r}, but openocr-det only supports {wanted} "
                     f"(OpenOCR's RepViT-DB detector, configs/det/dbnet/repvit_db.yml).")


def _section(arch: Mapping, name: str) -> Mapping:
    section = arch.get(name) or {}
    if not isinstance(section, Mapping):
        raise UserError(f"Architecture.{name} must be a mapping (e.g. name: ...), got {section!r}.")
    return section


def _check(key: str, value: Any) -> None:
    expected = SUPPORTED[key]
    allowed = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) or value not in allowed:  # bool: YAML `true` must not pass as 1
        raise _unsupported(key, value, expected)


def build_detector(arch: Optional[Mapping] = None) -> DBDetector:
    """Build the detector from an OpenOCR `Architecture` mapping (None = repvit_db.yml defaults)."""
    return DBDetector(**detector_options(arch))


def detector_options(arch: Optional[Mapping] = None) -> dict:
    """Check an `Architecture` mapping's values and return DBDetector's arguments.

    Unknown keys are caught earlier by the config schema (openocr_cli/config_schema.py).
    """
    arch = arch or {}
    if not isinstance(arch, Mapping):
        raise UserError(f"Architecture must be a mapping, got {type(arch).__name__}.")
    for key in ("model_type", "algorithm"):
        if arch.get(key) is not None:
            _check(key, arch[key])
    if arch.get("Transform") is not None:
        raise UserError(f"Architecture.Transform is {arch['Transform']!r}, but openocr-det supports "
                        "no input transform module (leave it empty).")

    backbone, neck, head = (_section(arch, n) for n in ("Backbone", "Neck", "Head"))
    for section_name, section in (("Backbone", backbone), ("Neck", neck), ("Head", head)):
        for field, value in section.items():
            key = f"{section_name}.{field}"
            if key in SUPPORTED:
                _check(key, value)

    shortcut = neck.get("shortcut", True)
    if not isinstance(shortcut, bool):
        raise UserError(f"Architecture.Neck.shortcut is {shortcut!r}; use true or false.")
    k = head.get("k", 50)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or k <= 0:
        raise UserError(f"Architecture.Head.k is {k!r}; it must be a positive number (default 50).")
    return {"neck_channels": 96, "shortcut": shortcut, "k": float(k)}
