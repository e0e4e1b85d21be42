"""The console script: start loading an OpenVINO model named on the command line, then run the app.

`predict` and `eval` with an OpenVINO model spend about 0.3 s reading and compiling it after 0.4 s of imports
that use one core. Started here, from the raw argv and before anything heavy is imported, the load overlaps
those imports (inference/prestart.py). Only exact flags are read; anything else (a registry name, a value
another flag sets) simply gets no prestart, and a prestart whose settings differ from what the command resolves
is not used.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

PRESTART_COMMANDS = ("predict", "eval")
NO_PRESTART_ENV = "OPENOCR_DET_NO_PRESTART"  # 1: load at the usual point only (timing the start-up itself)


def flag_value(argv: list[str], name: str) -> Optional[str]:
    """The last value given as `name VALUE` or `name=VALUE`, as the parser would keep it."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1:]
    return value


def openvino_load_args(argv: list[str]) -> Optional[tuple[str, Optional[str], Optional[int], str]]:
    """(model file, --device, --threads, --precision) when argv runs predict or eval on an OpenVINO file."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command not in PRESTART_COMMANDS or "--help" in argv or "-h" in argv:
        return None
    if flag_value(argv, "--onnx-model") is not None:  # the command refuses both, or runs onnxruntime
        return None
    model = flag_value(argv, "--openvino-model")
    weights = flag_value(argv, "--weights") or flag_value(argv, "-w")
    if model is None and weights is not None and weights.lower().endswith(".xml"):
        model = weights
    if model is None or not model.lower().endswith((".xml", ".onnx")) or not os.path.isfile(model):
        return None
    threads = flag_value(argv, "--threads")
    if threads is not None and not (threads.isdigit() and int(threads) > 0):
        return None
    return model, flag_value(argv, "--device"), int(threads) if threads else None, \
        flag_value(argv, "--precision") or "fp32"


def prestart(argv: list[str]) -> None:
    """Begin the OpenVINO load `argv` asks for; nothing when it names none, or when that fails (the command's own
    load then reports why)."""
    args = openvino_load_args(argv)
    if args is None or os.environ.get(NO_PRESTART_ENV, "").strip().lower() in ("1", "true", "yes"):
        return
    try:
        from openocr_cli.inference.backends.openvino_backend import begin_prestart

        begin_prestart(*args)
    except Exception:  # e.g. openvino not installed, an unreadable file: the command reports it
        return


def run() -> None:
    prestart(sys.argv[1:])
    from openocr_cli.cli.app import run as run_app

    run_app()
