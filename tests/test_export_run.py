"""The export run from Python (export/run.py): no output of its own, result objects back, and int8
calibration fed exactly what predict feeds the network."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from openocr_cli.cli import ui
from openocr_cli.errors import UserError
from openocr_cli.export.int8 import quantize
from openocr_cli.export.run import ExportRequest, export_checkpoint
from openocr_cli.inference.options import InferenceOptions
from openocr_cli.inference.predictor import Predictor
from openocr_cli.inference.resolve import resolve
from openocr_cli.log import logger
from tests.conftest import write_image


@pytest.fixture
def python_caller(monkeypatch):
    """A process that never ran the CLI's main() (in-process CLI tests leave its handler installed)."""
    monkeypatch.setattr(logger, "handlers", [h for h in logger.handlers if not isinstance(h, ui.ConsoleLogHandler)])


def test_static_export_from_python_prints_nothing_and_returns_the_report(tmp_path, random_ckpt, python_caller,
                                                                         capfd, caplog):
    caplog.set_level(logging.INFO, logger="openocr_cli")
    capfd.readouterr()
    path = tmp_path / "out" / "m.onnx"
    result = export_checkpoint(ExportRequest(weights=random_ckpt, output=path, dynamic=False, size=(64, 96),
                                             fuse=False))
    assert capfd.readouterr() == ("", "")
    report = result.report
    assert report.ok and report.path == path and report.size == path.stat().st_size > 0
    assert [(r.batch, r.height, r.width) for r in report.rows] == [(1, 64, 96), (2, 64, 96)]
    assert result.path == result.float_path == path and result.files == [path] and result.int8 is None
    assert (result.options.dynamic, result.options.size, result.fused) == (False, (64, 96), False)
    assert result.metadata["fused"] == "false" and result.source == random_ckpt
    assert [r.getMessage() for r in caplog.records if r.name == "openocr_cli.export.run"] == [
        f"exporting {random_ckpt} to {path} ..."]
    assert not list(path.parent.glob(".*.tmp"))  # no temporary file left beside it


@pytest.mark.parametrize("changes, message", [
    ({"int8": True, "fp16": True, "calib_data": "."}, "choose one"),
    ({"int8": True}, "--int8 needs calibration images"),
    ({"data_dir": "."}, "for --int8 only"),
    ({"size": (100, 96), "dynamic": False}, "multiples of 32"),
])
def test_bad_requests_are_usage_errors(tmp_path, random_ckpt, changes, message):
    request = ExportRequest(weights=str(random_ckpt), output=tmp_path / "m.onnx", **changes)
    with pytest.raises(UserError, match=message) as info:
        export_checkpoint(request)
    assert info.value.exit_code == 2 and not (tmp_path / "m.onnx").exists()


def test_int8_calibration_tensors_are_what_predict_feeds_the_network(tmp_path, constant_ckpt, monkeypatch):
    folder = tmp_path / "calib"
    for i, (h, w) in enumerate([(96, 128), (150, 100), (128, 160)]):  # not all the model's 128x160
        write_image(folder / f"{i}.png", h, w, seed=i)
    calibrated = []
    real = quantize.calibration_tensors

    def recording(*args, **kwargs):
        tensors = real(*args, **kwargs)
        calibrated.extend(tensors)
        return tensors

    monkeypatch.setattr(quantize, "calibration_tensors", recording)
    path = tmp_path / "int8.onnx"
    result = export_checkpoint(ExportRequest(weights=str(constant_ckpt), output=path, int8=True, calib_data=folder,
                                             dynamic=False, size=(128, 160)))
    int8 = result.int8
    assert int8 is not None and int8.ok and int8.path == path and result.path == path
    assert result.float_path is None and result.files == [path]  # the float32 model was temporary
    images = int8.calibration.images
    assert images == sorted(str(p) for p in folder.glob("*.png")) and int8.images == len(calibrated) == 3

    # what `predict --backend onnx --onnx-model int8.onnx` gives the network for the same images
    resolved = resolve(InferenceOptions(onnx_model=str(path), device="cpu"))
    fed = []

    class Recording:
        name = "recording"

        def __call__(self, batch: np.ndarray) -> np.ndarray:
            fed.append(batch.copy())
            return resolved.backend(batch)

    predictor = Predictor(Recording(), resolved.resize, resolved.normalizer, resolved.postprocess)
    assert all(r.error is None for r in predictor.run(images))
    assert len(fed) == len(calibrated)
    for got, expected in zip(calibrated, fed):
        assert got.shape == expected.shape == (1, 3, 128, 160) and got.dtype == expected.dtype == np.float32
        assert np.array_equal(got, expected)


def test_export_run_imports_neither_the_cli_nor_torch():
    code = ("import sys\nimport openocr_cli.export.run\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'typer', 'click', 'torch', 'onnx'}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
