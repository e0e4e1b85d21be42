"""What a detector graph declares about itself, checked the same way for every runtime that reads files.

onnxruntime and OpenVINO both run files they did not write (our exports, OpenOCR's and PaddleOCR's
det models), so names and fixed sizes are read from the file, never assumed, and a graph that is not
a DB detector is refused with the same message whichever runtime opened it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from openocr_cli.errors import UserError

# a dimension: a positive int when fixed, anything else (None, -1, a name) when dynamic
Dims = Sequence[object]


def fixed(dim: object) -> Optional[int]:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


@dataclass(frozen=True)
class ModelInfo:
    """Names, input type, fixed sizes (None = dynamic) and metadata of a detector file."""

    path: Path
    input_name: str
    output_name: str
    input_dtype: type
    fixed_batch: Optional[int]
    fixed_hw: Optional[tuple[int, int]]
    metadata: dict[str, str] = field(default_factory=dict)


def unsupported(path: Path, why: str) -> UserError:
    return UserError(f"{path} is not a DB text detector openocr-det can run: {why}. Expected one float "
                     "NCHW image input (3 channels) and a probability-map output shaped (N, 1, H, W) or (N, H, W).")


def check_graph(path: Path, input_name: str, input_shape: Dims, output_name: str, output_shape: Dims,
                input_dtype: type, metadata: dict[str, str]) -> ModelInfo:
    """The ModelInfo of a graph with one input and a first output of these shapes, or the refusal why not."""
    if len(input_shape) != 4 or fixed(input_shape[1]) not in (None, 3):
        raise unsupported(path, f"its input '{input_name}' has shape {list(input_shape)}")
    if len(output_shape) not in (3, 4) or (len(output_shape) == 4 and fixed(output_shape[1]) not in (None, 1)):
        raise unsupported(path, f"its output '{output_name}' has shape {list(output_shape)}")
    h, w = fixed(input_shape[2]), fixed(input_shape[3])
    if (h is None) != (w is None):
        raise unsupported(path, f"its input '{input_name}' fixes only one side ({list(input_shape)})")
    return ModelInfo(path, input_name, output_name, input_dtype, fixed(input_shape[0]),
                     (h, w) if h is not None else None, metadata)


def run_in_fixed_batches(run, batch: np.ndarray, step: Optional[int]) -> np.ndarray:
    """`run` over `batch` in chunks of a model's fixed batch size (padding the last; its padded maps dropped)."""
    if step is None or step == len(batch):
        return run(batch)
    parts = []
    for start in range(0, len(batch), step):
        chunk = batch[start:start + step]
        real = len(chunk)
        if real < step:
            chunk = np.concatenate([chunk, np.zeros((step - real, *chunk.shape[1:]), chunk.dtype)])
        parts.append(run(chunk)[:real])
    return np.concatenate(parts)


def as_probability_map(out: np.ndarray, batch: int, info: ModelInfo, input_shape: Sequence[int]) -> np.ndarray:
    """A runtime's raw output as (N, 1, H, W) float32; anything else is the unsupported-model error."""
    out = np.asarray(out)
    if out.ndim == 3:
        out = out[:, None]
    if out.ndim != 4 or out.shape[1] != 1 or out.shape[0] != batch:
        raise unsupported(info.path, f"for input {list(input_shape)} it returned shape {list(out.shape)}")
    return out.astype(np.float32, copy=False)
