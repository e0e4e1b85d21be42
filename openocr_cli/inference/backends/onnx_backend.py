"""The forward pass on onnxruntime, behind the same Backend interface as TorchBackend.

Pre- and post-processing stay in the Predictor, so an ONNX file gives the boxes the PyTorch
model gives. Any DB-style detector works (our exports, OpenOCR's `openocr_det_model.onnx`,
PaddleOCR's det models): one NCHW float image input and a probability map output shaped
(N, 1, H, W) or (N, H, W); names and fixed sizes are read from the file, never assumed.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np
import onnxruntime as ort

from openocr_cli.errors import MissingFileError, UserError, first_line
from openocr_cli.inference.backends.graph_checks import (
    ModelInfo,
    as_probability_map,
    check_graph,
    run_in_fixed_batches,
    unsupported,
)

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
Provider = Union[str, tuple[str, dict]]


def onnx_providers(spec: Optional[str]) -> list[Provider]:
    """Execution providers for a --device value: cpu, cuda, cuda:N (or 'gpu'); default CUDA if present.

    Each entry is a name or a (name, options) pair, the form onnxruntime expects (OpenOCR
    wraps a list in a tuple here, so its GPU sessions never start; openocr-compat: onnx-gpu-providers).
    """
    available = ort.get_available_providers()
    text = (spec or "").strip().lower().replace("gpu", "cuda")
    if not text:
        text = "cuda" if CUDA in available else "cpu"
    if text == "cpu":
        return [CPU]
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise UserError(f"--device '{spec}' is not a device; use cpu, cuda or cuda:N.", exit_code=2)
    if CUDA not in available:
        raise UserError(f"--device {spec}: this onnxruntime ({ort.__version__}) has no CUDA provider "
                        f"(available: {', '.join(available)}). Install onnxruntime-gpu, or use --device cpu.")
    return [(CUDA, {"device_id": int(match.group(1) or 0)}), CPU]


def describe(session: ort.InferenceSession, path: Path) -> ModelInfo:
    """Check the session's inputs and outputs against what a DB detector looks like."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise unsupported(path, f"it takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)})")
    if not outputs:
        raise unsupported(path, "it has no output")
    inp, out = inputs[0], outputs[0]
    if inp.type not in INPUT_TYPES:
        raise unsupported(path, f"its input '{inp.name}' is {inp.type}")
    metadata = dict(session.get_modelmeta().custom_metadata_map or {})
    return check_graph(path, inp.name, inp.shape, out.name, out.shape, INPUT_TYPES[inp.type], metadata)


def _session(path: Path, providers: list[Provider], threads: Optional[int]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; provider fallback is reported by us
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
        reason = first_line(exc)
        hint = ""
        if path.suffix.lower() in (".pth", ".pt", ".pdparams"):
            hint = " It looks like a weights file: run it with --weights and the torch backend."
        raise UserError(f"{path} is not a readable ONNX model, or uses operators onnxruntime "
                        f"{ort.__version__} cannot run ({reason}).{hint}") from exc


class OnnxBackend:
    """One onnxruntime session, created once and reused for every batch."""

    name = "onnx"

    def __init__(self, session: ort.InferenceSession, info: ModelInfo):
        self.session = session
        self.info = info

    @classmethod
    def load(cls, path: Path, device: Optional[str] = None, threads: Optional[int] = None) -> OnnxBackend:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"ONNX model {path} does not exist.")
        if threads is not None and threads < 1:
            raise UserError("--threads must be at least 1.", exit_code=2)
        providers = onnx_providers(device)
        session = _session(path, providers, threads)
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if wanted not in session.get_providers():
            logging.getLogger(__name__).warning(
                "onnxruntime could not start %s (missing CUDA/cuDNN libraries?); running on the CPU.", wanted)
        return cls(session, describe(session, path))

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, 1, H, W) float32; split into the model's batch size if it is fixed."""
        return run_in_fixed_batches(self._run, batch, self.info.fixed_batch)

    def release_memory(self) -> None:
        """Hand the memory arena's grown buffers back (a large batch grows it by ~100 MB an image at 960 px and
        onnxruntime keeps them): one smallest run with arena shrinkage on. Costs a few ms; `serve` calls it when a
        burst is over."""
        shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else 32)
                 for i, d in enumerate(self.session.get_inputs()[0].shape)]
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        feed = {self.info.input_name: np.zeros(shape, dtype=self.info.input_dtype)}
        self.session.run([self.info.output_name], feed, options)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        feed = {self.info.input_name: np.ascontiguousarray(batch, dtype=self.info.input_dtype)}
        try:
            out = self.session.run([self.info.output_name], feed)[0]
        except Exception as exc:
            reason = first_line(exc)
            raise UserError(f"onnxruntime failed on {self.info.path} with an input of shape "
                            f"{list(batch.shape)}: {reason}") from exc
        return as_probability_map(out, len(batch), self.info, batch.shape)
