"""`export --int8`: calibration data from the flags, the accuracy check, the table and the metadata.

The quantization itself (onnxruntime's tools, the float-kept fallback) is engine/quantize.py; this
module turns flags into images and labels, and scores each candidate exactly as `eval` would
(same resize, normalisation, post-processing, metric) with the ONNX backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from openocr_cli.commands.common import labelled_data
from openocr_cli.data.images import collect_images, is_image_name
from openocr_cli.data.labels import LabelSample, load_labels
from openocr_cli.data.resize import Normalizer, ResizeSpec
from openocr_cli.errors import UserError
from openocr_cli.postprocess import DBPostProcess
from openocr_cli.ui import console, err_console, table

INT8_NAME = "det_model_int8.onnx"


@dataclass
class Calibration:
    """Where the calibration images come from; `samples` are the labels for the accuracy check (or None)."""

    source: Path
    images: list[str]
    samples: Optional[list[LabelSample]]


def load_calibration(calib_data: Path, data_dir: Optional[Path], count: int, cfg: dict) -> Calibration:
    """A folder of images, or a label file whose images (under --data-dir, as eval resolves them) are both
    the calibration pool and the accuracy-check set."""
    from openocr_cli.engine.quantize import pick_evenly

    if calib_data.is_dir():
        if data_dir is not None:
            err_console.print("note: --data-dir is only used with a label file as --calib-data.")
        return Calibration(calib_data, pick_evenly(collect_images([str(calib_data)]), count), None)
    if not calib_data.is_file():
        raise UserError(f"--calib-data {calib_data} does not exist: pass a folder of images or a label file.",
                        exit_code=2)
    if is_image_name(calib_data.name):
        raise UserError(f"--calib-data {calib_data} is one image; pass the folder that holds the calibration "
                        "images (64 or more work best), or a label file.", exit_code=2)
    data_dir, files = labelled_data(cfg, "Eval", data_dir, [calib_data])
    samples = load_labels(files, data_dir)
    if not samples:
        raise UserError(f"--calib-data {calib_data} lists no images.")
    return Calibration(calib_data, pick_evenly([str(s.image) for s in samples], count), samples)


class Scorer:
    """hmean (with labels) and inference ms per image of an ONNX file, through the same Predictor as eval."""

    def __init__(self, calibration: Calibration, resize: ResizeSpec, normalizer: Normalizer,
                 postprocess: DBPostProcess):
        self.calibration = calibration
        self.resize, self.normalizer, self.postprocess = resize, normalizer, postprocess

    def predictor(self, path: Path):
        """The Predictor that runs the ONNX file `path` (CPU) with this export's pre- and post-processing."""
        from openocr_cli.engine.onnx_backend import OnnxBackend
        from openocr_cli.engine.predictor import Predictor

        return Predictor(OnnxBackend.load(path, device="cpu"), self.resize, self.normalizer, self.postprocess)

    def __call__(self, path: Path) -> tuple[Optional[float], float]:
        from openocr_cli.engine.evaluator import evaluate_model
        from openocr_cli.results import StageTimes

        predictor = self.predictor(path)
        list(predictor.run(self.calibration.images[:1]))  # warm-up: the first run of a session is slower
        samples = self.calibration.samples
        if samples is not None:
            result = evaluate_model(predictor, samples)
            return result.hmean, 1000.0 * result.seconds / max(result.images, 1)
        times = StageTimes()
        for item in predictor.run(self.calibration.images):
            times += item.times
        return None, times.ms_per_image()["inference"]


def run_int8(float_path: Path, output: Path, calibration: Calibration, scorer: Scorer, max_drop: float) -> None:
    """Quantize, check, print the table and write the metadata; exit 1 (file kept) when accuracy cannot hold."""
    from openocr_cli.engine.onnx_metadata import read_metadata, write_metadata
    from openocr_cli.engine.quantize import PERCENTILE, calibration_tensors, quantize_with_guard, quantized_node_count

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {output.parent}: {exc.strerror}. Choose another --output.") from exc
    err_console.print(f"calibrating on {len(calibration.images)} image(s) from {calibration.source} ...")
    tensors = calibration_tensors(calibration.images, scorer.predictor(float_path))  # predict's own preprocessing
    float_size = float_path.stat().st_size

    def report(attempt) -> None:
        kept = f", {len(attempt.float_nodes)} node(s) kept float" if attempt.float_nodes else ""
        hmean = "" if attempt.hmean is None else f": hmean {attempt.hmean:.4f}"
        err_console.print(f"int8 model{kept}{hmean}")

    result = quantize_with_guard(float_path, output, tensors, scorer, max_drop, on_attempt=report)
    final = result.final
    metadata = read_metadata(float_path)
    summary = {"images": len(tensors), "source": str(calibration.source), "method": f"Percentile {PERCENTILE}",
               "format": "QDQ", "activations": "uint8", "weights": "int8, per channel",
               "float_nodes": list(final.float_nodes), "hmean_float32": result.float_hmean,
               "hmean_int8": final.hmean, "max_drop_points": max_drop}
    write_metadata(output, {**metadata, "precision": "int8",
                            "calibration": json.dumps(summary, sort_keys=True)})
    _print(result, float_size, output)
    if quantized_node_count(output) == 0:
        raise UserError(f"onnxruntime quantized no node of {output}; the file is float32. Report this with the "
                        "model's opset (--opset) and onnxruntime version.")
    if not result.ok:
        drop = 100 * (result.float_hmean - final.hmean)
        raise UserError(f"the int8 model loses {drop:.2f} hmean points on {calibration.source}, more than "
                        f"--max-drop {max_drop:g}, even with {len(final.float_nodes)} nodes kept in float32. "
                        f"The last attempt was kept as {output}; calibrate on images like the ones you run "
                        "(--calib-data, more --calib-images), raise --max-drop, or use the float32 export.")
    console.print(f"Exported int8 model: {output}")


def _print(result, float_size: int, output: Path) -> None:
    def hmean(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.4f}"

    rows = [("float32", f"{float_size / 1e6:.1f} MB", hmean(result.float_hmean), f"{result.float_ms:.1f}")]
    for attempt in result.attempts:
        name = f"int8, {len(attempt.float_nodes)} float nodes" if attempt.float_nodes else "int8"
        rows.append((name, f"{output.stat().st_size / 1e6:.1f} MB" if attempt is result.final else "",
                     hmean(attempt.hmean), f"{attempt.ms_per_image:.1f}"))
    title = "int8 accuracy check" if result.float_hmean is not None else \
        "int8 (no labels given: accuracy not checked; pass a label file as --calib-data to check it)"
    console.print(table(title, ["precision", "file size", "hmean", "ms/image"], rows))
