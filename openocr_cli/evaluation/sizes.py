"""`eval --sizes 640,960,1280`: the same model and labels at several resize limits, one row each.

Small text needs a larger input, speed needs a smaller one; users should pick limit_side_len from
measured numbers. Each row is a full `eval` at that limit (same predictor, only the resize changes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Optional

from openocr_cli.data.labels import LabelSample
from openocr_cli.data.resize import MAX_SIDE, ResizeSpec, target_size
from openocr_cli.errors import UserError
from openocr_cli.evaluation.evaluator import EvalResult, evaluate_model
from openocr_cli.inference.predictor import Predictor


def parse_sizes(text: str) -> list[int]:
    """'640,960,1280' -> [640, 960, 1280] (order kept, duplicates dropped); each from 32 to MAX_SIDE."""
    sizes = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if not part.isdigit() or not 32 <= int(part) <= MAX_SIDE:
            raise UserError(f"--sizes {text}: '{part}' is not a side length from 32 to {MAX_SIDE} pixels "
                            "(give a comma-separated list, for example --sizes 640,960,1280).", exit_code=2)
        if int(part) not in sizes:
            sizes.append(int(part))
    if not sizes:
        raise UserError("--sizes needs at least one side length, for example --sizes 640,960,1280.", exit_code=2)
    return sizes


@dataclass
class SizeRow:
    limit_side_len: int
    result: EvalResult

    def as_dict(self) -> dict:
        r = self.result
        return {"limit_side_len": self.limit_side_len, "precision": r.precision, "recall": r.recall,
                "hmean": r.hmean, "fps": r.fps}


def size_spec(base: ResizeSpec, side: int) -> ResizeSpec:
    """`base` with another limit; a fixed-shape resize (e.g. a static ONNX model) cannot sweep."""
    if base.image_shape is not None:
        raise UserError("--sizes needs a resize by limit_side_len, but every image is resized to a fixed "
                        f"{base.image_shape[0]}x{base.image_shape[1]} (a static ONNX model or image_shape in the "
                        "config). Drop --sizes, or use a model with a dynamic input size.", exit_code=2)
    if base.resize_long is not None:
        return ResizeSpec(limit_side_len=side, limit_type="max")
    return replace(base, limit_side_len=side)


def sweep(predictor: Predictor, samples: Sequence[LabelSample], sizes: Sequence[int], main: EvalResult,
          on_size: Callable[[int], Callable[[], None]]) -> list[SizeRow]:
    """One SizeRow per size; the size `main` was evaluated at reuses it instead of running again."""
    base = predictor.resize
    rows = []
    for side in sizes:
        spec = size_spec(base, side)
        if spec == base:
            rows.append(SizeRow(side, main))
            continue
        rows.append(SizeRow(side, evaluate_model(predictor.replace(resize=spec), samples, on_size(side))))
    return rows


def same_input_note(rows: Sequence[SizeRow], samples: Sequence[LabelSample], base: ResizeSpec) -> Optional[str]:
    """Why rows are identical, when they are because every image reaches the model at the same size."""
    from openocr_cli.formats.label_model import image_size

    sizes = [s.size or _height_width(image_size(s.image)) for s in samples]
    if not sizes or any(size is None for size in sizes):
        return None
    groups: dict[tuple, list[int]] = {}
    for row in rows:
        inputs = tuple(target_size(h, w, size_spec(base, row.limit_side_len)) for h, w in sizes)
        groups.setdefault(inputs, []).append(row.limit_side_len)
    same = max(groups.values(), key=len)
    if len(same) < 2:
        return None
    kind = size_spec(base, rows[0].limit_side_len).limit_type
    if kind == "max":
        why = (f"limit_type max only scales an image down, and no image is longer than {min(same)} px on its "
               "longer side")
    elif kind == "min":
        why = f"limit_type min only scales an image up, and every image is at least {max(same)} px on its shorter side"
    else:
        why = "the resize gives every image the same input at these limits"
    listed = ", ".join(map(str, same))
    return f"limit_side_len {listed} give identical rows: every image reaches the model at the same size ({why})."


def _height_width(width_height: Optional[tuple[int, int]]) -> Optional[tuple[int, int]]:
    return None if width_height is None else (width_height[1], width_height[0])
