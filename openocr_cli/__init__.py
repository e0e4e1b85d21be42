"""openocr-det: OpenOCR's RepViT-DB text detector as a Python library and one command-line tool.

    from openocr_cli import Detector
    results = Detector("best.pth").predict("scans/")

The public names load on first use, so `import openocr_cli` stays cheap (no torch, no onnxruntime).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from openocr_cli._version import __version__

# public name -> the module that defines it
_PUBLIC = {
    "Detector": "openocr_cli.api.detector",
    "Result": "openocr_cli.inference.results",
    "EvalResult": "openocr_cli.evaluation.evaluator",
    "Setting": "openocr_cli.inference.resolve",
    "InferenceOptions": "openocr_cli.inference.options",
    "UserError": "openocr_cli.errors",
    "MissingFileError": "openocr_cli.errors",
    "ImageReadError": "openocr_cli.errors",
    "train": "openocr_cli.api.training",
    "resume": "openocr_cli.api.training",
    "TrainResult": "openocr_cli.api.training",
    "TrainingInterrupted": "openocr_cli.training.trainer",
}
__all__ = ["Detector", "EvalResult", "ImageReadError", "InferenceOptions", "MissingFileError", "Result", "Setting",
           "TrainResult", "TrainingInterrupted", "UserError", "__version__", "resume", "train"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from openocr_cli.api.detector import Detector
    from openocr_cli.api.training import TrainResult, resume, train
    from openocr_cli.errors import ImageReadError, MissingFileError, UserError
    from openocr_cli.evaluation.evaluator import EvalResult
    from openocr_cli.inference.options import InferenceOptions
    from openocr_cli.inference.resolve import Setting
    from openocr_cli.inference.results import Result
    from openocr_cli.training.trainer import TrainingInterrupted


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'openocr_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
