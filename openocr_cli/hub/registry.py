"""The named pretrained models: which file each name means, where it is published, what input it expects.

Kept apart from the download code so that looking a name up (every --weights option does) needs no
network machinery, and so that adding a release is a one-place change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from openocr_cli.constants import IMAGENET_MEAN, IMAGENET_STD
from openocr_cli.errors import UserError

RELEASE = "develop0.0.1"

# Tried in this order; the first that answers wins. `{file}` is the entry's file name.
MIRRORS: list[tuple[str, str]] = [
    ("GitHub release", f"https://github.com/Topdu/OpenOCR/releases/download/{RELEASE}/{{file}}"),
    ("Hugging Face", "https://huggingface.co/topdu/OpenOCR/resolve/main/{file}"),
    ("ModelScope", "https://www.modelscope.cn/models/topdktu/OpenOCR/resolve/master/{file}"),
]


@dataclass(frozen=True)
class Preprocess:
    """The input a set of weights was trained on, so it travels with the file rather than with a config.

    mean[i]/std[i] apply to the i-th channel as the pixels arrive, in channel_order (the test-time resize is
    the config's: released weights use repvit_db.yml's).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "BGR"

    def as_metadata(self) -> dict[str, str]:
        """The normalisation in the form an exported ONNX model states it (inference/backends/onnx_metadata.py)."""
        return {"mean": json.dumps(list(self.mean)), "std": json.dumps(list(self.std)),
                "channel_order": self.channel_order}


# What OpenOCR's repvit_db.yml uses for both released files: ImageNet's RGB statistics applied
# positionally to BGR images, the way the weights were trained (see openocr_cli.constants).
OPENOCR_DB_PREPROCESS = Preprocess(IMAGENET_MEAN, IMAGENET_STD)


@dataclass(frozen=True)
class ModelEntry:
    """One downloadable file. size/sha256 are None when not published (checked on first use instead)."""

    name: str
    filename: str
    format: str  # "pth" or "onnx"
    description: str
    size: Optional[int] = None
    sha256: Optional[str] = None
    preprocess: Preprocess = OPENOCR_DB_PREPROCESS

    def urls(self) -> list[tuple[str, str]]:
        """(mirror label, URL) pairs in the order they are tried."""
        return [(label, template.format(file=self.filename)) for label, template in MIRRORS]


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry("repvit", "openocr_det_repvit_ch.pth", "pth",
                   f"OpenOCR RepViT-DB detector weights, Chinese/English (release {RELEASE})"),
        ModelEntry("repvit-onnx", "openocr_det_model.onnx", "onnx",
                   f"The same detector exported to ONNX by OpenOCR (release {RELEASE})"),
    )
}


def model_names() -> str:
    return ", ".join(MODELS)


def get_entry(name: str) -> Optional[ModelEntry]:
    """The registry entry for a name (case-insensitive) or a released file name, or None.

    OpenOCR's configs name the weights by file (`openocr_det_repvit_ch.pth`); when no such local
    file exists, that name resolves to the cached release file, as OpenOCR's own tools do.
    """
    key = name.strip().lower()
    if key in MODELS:
        return MODELS[key]
    bare = key.removeprefix("./")
    return next((e for e in MODELS.values() if e.filename.lower() == bare), None)


def lookup(name: str) -> ModelEntry:
    """Like get_entry, but an unknown name is a UserError listing the known ones."""
    entry = get_entry(name)
    if entry is None:
        raise UserError(f"unknown model name {name!r}. Known names: {model_names()} "
                        "(see `openocr-det download --list`).")
    return entry
