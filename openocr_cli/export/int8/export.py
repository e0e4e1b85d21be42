"""The int8 step of an export: calibration and check images, quantization with the accuracy search, the result.

export_run.py exports and verifies the float32 model, then calls `quantize_export` with a `Checker` that
runs candidate files (onnxruntime or OpenVINO, by suffix) through the Predictor eval uses, and judges them
against the float32 run (export/int8/guard.py); export/int8/search.py chooses which stages stay float32.
Nothing here prints; torch is not imported.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from openocr_cli.errors import UserError
from openocr_cli.fileio import atomic_path

if TYPE_CHECKING:
    from openocr_cli.data.labels import LabelSample
    from openocr_cli.export.int8.guard import Run, Verdict
    from openocr_cli.export.int8.search import Attempt
    from openocr_cli.inference.predictor import Predictor

log = logging.getLogger(__name__)


@dataclass
class Calibration:
    """Where the calibration images come from; `samples` are the source's labels (None for a folder)."""

    source: Path
    images: list[str]
    samples: Optional[list[LabelSample]]


@dataclass
class CheckSet:
    """The images the int8 model is checked on against float32, and their labels (None: agreement only)."""

    source: Path
    images: list[str]
    samples: Optional[list[LabelSample]]


@dataclass
class Int8Export:
    """The int8 step: the float32 run on the check images, every attempt with its verdict, the one kept at `path`."""

    path: Path
    calibration: Calibration
    check: CheckSet
    reference: Run
    attempts: list[Attempt]
    chosen: Attempt
    images: int  # calibration images read
    float_size: int  # bytes of the float32 model it was quantized from
    size: int  # bytes of the int8 model (an IR's .xml and .bin together)
    quantized_nodes: int  # quantize/dequantize (ONNX) or FakeQuantize (IR) operations: 0 means nothing quantized
    max_drop: float
    min_agreement: float

    @property
    def ok(self) -> bool:
        return self.quantized_nodes > 0 and self.chosen.verdict.ok



def load_calibration(calib_data: Path, data_dir: Optional[Path], count: int, cfg: dict) -> Calibration:
    """A folder of images, or a label file whose images (under `data_dir`, as eval resolves them) are the
    calibration pool; `samples` are its labels (all of them), the default check set."""
    from openocr_cli.data.images import is_image_name
    from openocr_cli.export.int8.quantize import pick_evenly

    if calib_data.is_file() and is_image_name(calib_data.name):
        raise UserError(f"--calib-data {calib_data} is one image; pass the folder that holds the calibration "
                        "images (64 or more work best), or a label file.", exit_code=2)
    images, samples = _image_set(calib_data, data_dir, cfg, "--calib-data")
    return Calibration(calib_data, pick_evenly(images, count), samples)


def load_check_set(check_data: Optional[Path], calibration: Calibration, data_dir: Optional[Path],
                   cfg: dict) -> CheckSet:
    """--check-data (a label file or a folder), else the calibration label file's samples, else its images."""
    if check_data is None:
        if calibration.samples is not None:
            return CheckSet(calibration.source, [str(s.image) for s in calibration.samples], calibration.samples)
        return CheckSet(calibration.source, list(calibration.images), None)
    images, samples = _image_set(Path(check_data), data_dir, cfg, "--check-data")
    return CheckSet(Path(check_data), sorted(images) if samples is None else images, samples)


def _image_set(source: Path, data_dir: Optional[Path], cfg: dict, flag: str):
    """(image paths, labels or None) of a folder of images or a label file."""
    from openocr_cli.data.images import collect_images
    from openocr_cli.data.labels import labelled_data, load_labels

    if source.is_dir():
        return collect_images([str(source)]), None
    if not source.is_file():
        raise UserError(f"{flag} {source} does not exist: pass a folder of images or a label file.", exit_code=2)
    data_dir, files = labelled_data(cfg, "Eval", data_dir, [source])  # as eval resolves label paths
    samples = load_labels(files, data_dir)
    if not samples:
        raise UserError(f"{flag} {source} lists no images.")
    return [str(s.image) for s in samples], samples


class Checker:
    """Runs a candidate model file on the check images through the Predictor eval uses, and judges it."""

    def __init__(self, check: CheckSet, stages: Predictor, max_drop: float, min_agreement: float):
        self.check = check
        self.stages = stages  # the exported model's predictor: its resize, normalisation and post-processing
        self.max_drop, self.min_agreement = max_drop, min_agreement
        self.reference: Optional[Run] = None

    def predictor(self, path: Path) -> Predictor:
        """The Predictor that runs `path` (CPU, float32 arithmetic for float models): .xml on OpenVINO, else
        onnxruntime, with this export's preprocessing and post-processing."""
        if path.suffix.lower() == ".xml":
            from openocr_cli.inference.backends.openvino_backend import OpenVinoBackend

            backend = OpenVinoBackend.load(path, device="cpu")
        else:
            from openocr_cli.inference.backends.onnx_backend import OnnxBackend

            backend = OnnxBackend.load(path, device="cpu")
        return self.stages.replace(backend=backend)

    def run(self, path: Path) -> Run:
        from openocr_cli.export.int8.guard import run_model

        try:
            return run_model(self.predictor(path), self.check.images, self.check.samples)
        except ValueError as exc:  # an unreadable check image
            raise UserError(f"a check image could not be read: {exc}") from None

    def __call__(self, path: Path) -> Verdict:
        from openocr_cli.export.int8.guard import judge

        assert self.reference is not None, "run the float32 model first (Checker.reference)"
        return judge(self.reference, self.run(path), self.max_drop, self.min_agreement)


def _log_attempt(attempt: Attempt) -> None:
    verdict = attempt.verdict
    hmean = "" if verdict.hmean is None else f", hmean {verdict.hmean:.4f}"
    log.info(f"{attempt.label}: agreement {verdict.agreement['hmean']:.4f}{hmean}, "
             f"{verdict.ms_per_image:.1f} ms/image: {verdict.decision}")


def quantize_export(float_path: Path, output: Path, calibration: Calibration, checker: Checker) -> Int8Export:
    """Quantize the verified float32 model (ONNX or IR, by suffix) into `output`, searching for the stages to keep
    in float32 until the guard passes (export/int8/search.py); the attempt kept carries the float model's metadata
    plus precision and a calibration summary. The checks are int8_failure's."""
    from openocr_cli.export.int8.quantize import PERCENTILE, calibration_tensors
    from openocr_cli.export.int8.search import best, search

    openvino = output.suffix.lower() == ".xml"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {output.parent}: {exc.strerror}. Choose another --output.") from exc
    log.info(f"calibrating on {len(calibration.images)} image(s) from {calibration.source} ...")
    # preprocessed by the Predictor that runs the float model: exactly what predict feeds the network
    tensors = calibration_tensors(calibration.images, checker.predictor(float_path))
    checker.reference = checker.run(float_path)
    float_size = _size(float_path)
    with tempfile.TemporaryDirectory(prefix="openocr-det-int8-") as tmp:
        if openvino:
            from openocr_cli.export.int8.nncf_quantize import NncfQuantizer
            from openocr_cli.export.openvino_export import read_ir_metadata

            metadata = read_ir_metadata(float_path)
            quantizer = NncfQuantizer(float_path, tensors, metadata)
            method = "NNCF static, MinMax ranges, symmetric int8 activations, per-channel int8 weights"
        else:
            from openocr_cli.export.int8.quantize import Quantizer
            from openocr_cli.inference.backends.onnx_metadata import read_metadata

            metadata = read_metadata(float_path)
            quantizer = Quantizer(float_path, tensors, Path(tmp))
            method = f"onnxruntime QDQ, Percentile {PERCENTILE}, uint8 activations, per-channel int8 weights"
        attempts = search(quantizer.quantize, checker, Path(tmp), output.suffix, on_attempt=_log_attempt)
        chosen = best(attempts)
        reference, verdict = checker.reference, chosen.verdict
        summary = {"images": len(tensors), "source": str(calibration.source), "method": method,
                   "float_stages": list(chosen.float_stages), "check_data": str(checker.check.source),
                   "check_images": len(checker.check.images), "hmean_float32": reference.hmean,
                   "hmean_int8": verdict.hmean, "agreement_hmean": verdict.agreement["hmean"],
                   "drop_interval_points": list(verdict.interval) if verdict.interval else None,
                   "decision": verdict.decision, "basis": verdict.basis, "max_drop_points": checker.max_drop,
                   "min_agreement": checker.min_agreement}
        final = {**metadata, "precision": "int8", "calibration": json.dumps(summary, sort_keys=True)}
        _write_int8(chosen.path, output, final, openvino)
    return Int8Export(output, calibration, checker.check, reference, attempts, chosen, len(tensors), float_size,
                      _size(output), _quantized_ops(output), checker.max_drop, checker.min_agreement)


def _size(path: Path) -> int:
    """Bytes of a model file (an IR's .xml and .bin together)."""
    files = [path, path.with_suffix(".bin")] if path.suffix.lower() == ".xml" else [path]
    return sum(f.stat().st_size for f in files if f.is_file())


def _quantized_ops(path: Path) -> int:
    if path.suffix.lower() == ".xml":
        from openocr_cli.export.int8.nncf_quantize import fake_quantize_count

        return fake_quantize_count(path)
    from openocr_cli.export.int8.quantize import quantized_node_count

    return quantized_node_count(path)


def _write_int8(source: Path, output: Path, metadata: dict[str, str], openvino: bool) -> None:
    """The chosen attempt at `output` with its final metadata; never a half-written model there."""
    if openvino:
        from openocr_cli.export.openvino_export import save_ir
        from openocr_cli.inference.backends.openvino_backend import import_openvino

        save_ir(import_openvino().Core().read_model(str(source)), output, metadata)
        return
    from openocr_cli.inference.backends.onnx_metadata import write_metadata

    with atomic_path(output) as tmp:
        shutil.copyfile(source, tmp)
        write_metadata(tmp, metadata)


def int8_failure(int8: Int8Export) -> Optional[str]:
    """Why the int8 model must not be used as is (None when it passed): nothing quantized, or accuracy lost."""
    if int8.quantized_nodes == 0:
        return (f"the quantizer quantized no node of {int8.path}; the file is float32. Report this with the "
                "model's opset (--opset) and the runtime's version.")
    if not int8.chosen.verdict.ok:
        tried = f" after {len(int8.attempts)} attempts keeping stages in float32" if len(int8.attempts) > 1 else ""
        return (f"the int8 model fails the accuracy check{tried}: {int8.chosen.verdict.reason}. The closest attempt "
                f"({int8.chosen.label}) was kept as {int8.path}; calibrate on images like the ones you run "
                "(--calib-data, more --calib-images), check on more labelled images (--check-data), or use the "
                "float32 export.")
    return None
