"""OpenVINO IR files (`export --format openvino`): conversion from the verified ONNX model, and NNCF int8.

An IR is two files, the graph (.xml) and its weights (.bin); both are written under temporary names in
the target folder and renamed into place, weights first, so a reader never pairs a new graph with old
weights. The export metadata (mean/std, channel order, post-processing, resize, precision, source
sha256) goes into the model's rt_info, where OpenVinoBackend reads it. Weights are stored as float32
(OpenVINO's converter would halve them to float16 by default, and the boxes would drift).

NNCF's static quantization is calibrated on the same preprocessed tensors as onnxruntime's, and
re-run for each attempt of the accuracy search (engine/int8_search.py) with stages kept float32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from openocr_cli.engine.openvino_backend import RT_SECTION, import_openvino
from openocr_cli.errors import UserError, first_line

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
    from openocr_cli.engine.openvino_backend import read_rt_metadata

    return read_rt_metadata(import_openvino().Core().read_model(str(xml)))


def fake_quantize_count(xml: Path) -> int:
    """FakeQuantize operations in the IR: > 0 means the model really is int8."""
    model = import_openvino().Core().read_model(str(xml))
    return sum(op.get_type_name() == FAKE_QUANTIZE for op in model.get_ops())


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF logs every ignored node at INFO and draws progress bars on stdout; importing it makes PyTorch warn
    about CUDA. None of that is for our users, so it is silenced, and the nncf logger's level put back."""
    nncf_log, torch_log = logging.getLogger("nncf"), logging.getLogger("torch.utils.cpp_extension")
    level, torch_level = nncf_log.level, torch_log.level
    handler_levels = [(h, h.level) for h in nncf_log.handlers]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            nncf_log.setLevel(logging.ERROR)
            torch_log.setLevel(logging.ERROR)
            for handler, _ in handler_levels:
                handler.setLevel(logging.ERROR)
            yield
    finally:
        nncf_log.setLevel(level)
        torch_log.setLevel(torch_level)
        for handler, old in handler_levels:
            handler.setLevel(old)


class NncfQuantizer:
    """NNCF static int8 of one OpenVINO model; `quantize` is the same interface as engine.quantize.Quantizer."""

    def __init__(self, float_model: Path, tensors: Sequence[np.ndarray], metadata: Mapping[str, str]):
        self.float_model = Path(float_model)
        self.tensors = list(tensors)
        self.metadata = dict(metadata)

    def quantize(self, output: Path, float_stages: Sequence[str] = ()) -> Path:
        """Write an int8 IR to `output`, keeping the named stages (int8_search.STAGES) in float32."""
        from openocr_cli.engine.int8_search import patterns

        ov = import_openvino()
        with _quiet_nncf():
            try:
                import nncf
            except ImportError:
                raise UserError("--format openvino --int8 needs NNCF: pip install 'openocr-det[openvino]' "
                                "(or: pip install nncf).") from None
            model = ov.Core().read_model(str(self.float_model))
            scope = nncf.IgnoredScope(patterns=patterns(float_stages), validate=False) if float_stages else None
            quantized = nncf.quantize(model, nncf.Dataset(self.tensors), subset_size=len(self.tensors),
                                      target_device=nncf.TargetDevice.CPU, ignored_scope=scope)
        return save_ir(quantized, Path(output), self.metadata)
