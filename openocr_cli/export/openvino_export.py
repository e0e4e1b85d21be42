"""OpenVINO IR files (`export --format openvino`): conversion from the verified ONNX model, and NNCF int8.

An IR is two files, the graph (.xml) and its weights (.bin); both are written under temporary names in
the target folder and renamed into place, weights first, so a reader never pairs a new graph with old
weights. The export metadata (mean/std, channel order, post-processing, resize, precision, source
sha256) goes into the model's rt_info, where OpenVinoBackend reads it. Weights are stored as float32
(OpenVINO's converter would halve them to float16 by default, and the boxes would drift).

NNCF's static quantization is calibrated on the same preprocessed tensors as onnxruntime's, and
re-run for each attempt of the accuracy search (export/int8/search.py) with stages kept float32.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from openocr_cli.errors import UserError, first_line
from openocr_cli.inference.backends.openvino_backend import RT_SECTION, import_openvino

FAKE_QUANTIZE = "FakeQuantize"


def ir_files(xml: Path) -> list[Path]:
    """The .xml and .bin an IR consists of."""
    return [xml, xml.with_suffix(".bin")]


def save_ir(model, xml: Path, metadata: Mapping[str, str], fp16: bool = False) -> Path:
    """Write `model` (an openvino.Model) as `xml` + .bin with `metadata` in its rt_info (float16 weights with
    `fp16`, else float32)."""
    ov = import_openvino()
    for key, value in metadata.items():
        model.set_rt_info(str(value), [RT_SECTION, str(key)])
    try:
        xml.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".openocr-det-ir-", dir=xml.parent))
    except OSError as exc:
        raise UserError(f"cannot write to {xml.parent}: {exc.strerror}. Choose another --output.") from exc
    try:
        ov.save_model(model, str(tmp / xml.name), compress_to_fp16=fp16)
        os.replace(tmp / xml.with_suffix(".bin").name, xml.with_suffix(".bin"))
        os.replace(tmp / xml.name, xml)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


def copy_ir(source: Path, target: Path) -> Path:
    """Copy an IR pair to `target` (weights first, each through a temporary name)."""
    for src, dst in reversed(list(zip(ir_files(source), ir_files(target)))):
        part = dst.with_name(f".{dst.name}.part")
        shutil.copyfile(src, part)
        os.replace(part, dst)
    return target


def convert_onnx(onnx_path: Path, xml: Path, metadata: Mapping[str, str], fp16: bool = False) -> Path:
    """The ONNX file as an IR at `xml`, carrying `metadata`."""
    ov = import_openvino()
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        reason = first_line(exc)
        raise UserError(f"OpenVINO {ov.__version__} could not convert {onnx_path}: {reason}") from exc
    return save_ir(model, xml, metadata, fp16)


def read_ir_metadata(xml: Path) -> dict[str, str]:
    from openocr_cli.inference.backends.openvino_backend import read_rt_metadata

    return read_rt_metadata(import_openvino().Core().read_model(str(xml)))
