"""NNCF int8 of an OpenVINO IR: the OpenVINO counterpart of quantize.py's onnxruntime quantizer, same interface."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from openocr_cli.errors import UserError
from openocr_cli.export.int8.search import patterns
from openocr_cli.export.openvino_export import FAKE_QUANTIZE, save_ir
from openocr_cli.inference.backends.openvino_backend import import_openvino


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
    """NNCF static int8 of one OpenVINO model; `quantize` is the same interface as quantize.Quantizer."""

    def __init__(self, float_model: Path, tensors: Sequence[np.ndarray], metadata: Mapping[str, str]):
        self.float_model = Path(float_model)
        self.tensors = list(tensors)
        self.metadata = dict(metadata)

    def quantize(self, output: Path, float_stages: Sequence[str] = ()) -> Path:
        """Write an int8 IR to `output`, keeping the named stages (search.STAGES) in float32."""
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
