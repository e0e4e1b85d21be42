"""What an exported ONNX detector says about itself, stored in the model's `metadata_props`.

A bare graph does not tell a runtime how to feed it; with these keys a later `predict
--backend onnx` (or any other tool) can normalise images the way the weights expect. All
values are strings, as ONNX requires; lists and dicts are JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

MODEL_NAME = "OpenOCR RepViT-DB text detector (DBNet)"
CHANNEL_ORDERS = ("BGR", "RGB")


def build_metadata(*, mean: Sequence[float], std: Sequence[float], postprocess: Mapping, resize: Mapping,
                   source_name: str, source_sha256: str, version: str, fused: bool, fp16: bool) -> dict[str, str]:
    """The key/value pairs written into every model `openocr-det export` produces.

    The exporter adds `opset` and `exporter` once it knows which one ran.
    """
    return {
        "model_name": MODEL_NAME,
        "input_layout": "NCHW",
        "channel_order": "BGR",
        "normalize": "(pixel / 255 - mean) / std, per channel in channel_order",
        "mean": json.dumps([float(v) for v in mean]),
        "std": json.dumps([float(v) for v in std]),
        "stride": "32",
        "output": "probability map (N, 1, H, W), same size as the input",
        "postprocess": json.dumps(dict(postprocess), sort_keys=True),
        "resize": json.dumps(dict(resize), sort_keys=True),
        "source_checkpoint": source_name,
        "source_sha256": source_sha256,
        "openocr_det_version": version,
        "fused": "true" if fused else "false",
        "precision": "float16 weights, float32 input and output" if fp16 else "float32",
    }


def write_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """Replace the model's metadata_props by `metadata` (keys not ours are kept)."""
    import onnx  # here, not at import: predict reads metadata through onnxruntime and never needs onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, str(path))


def read_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _three_floats(text: Optional[str]) -> Optional[tuple[float, float, float]]:
    try:
        values = json.loads(text) if text is not None else None
    except ValueError:
        return None
    if not isinstance(values, list) or len(values) != 3:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def normalization(metadata: Mapping[str, str]) -> tuple[Optional[tuple], Optional[tuple], Optional[str]]:
    """(mean, std, channel order) from metadata; None for each value that is absent or unreadable.

    Other exporters may use the same key names for something else, so an unreadable value is
    treated as absent rather than as an error.
    """
    mean = _three_floats(metadata.get("mean"))
    std = _three_floats(metadata.get("std"))
    if std is not None and any(v == 0 for v in std):
        std = None
    order = str(metadata.get("channel_order", "")).strip().upper() or None
    return mean, std, order
