"""`openocr-det benchmark`: speed (per stage, p50/p95) and hmean per backend x model x precision x size.

The measuring lives in openocr_cli.evaluation.speed_rows; this module resolves the options into
predictors (the same InferenceSettings predict and eval use) and prints the table and the recommendation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from openocr_cli.api.detector import Detector
from openocr_cli.cli import options as opt
from openocr_cli.cli.ui import console, err_console, progress, table, warn
from openocr_cli.data.images import collect_images
from openocr_cli.data.labels import load_labels
from openocr_cli.data.resize import ResizeSpec
from openocr_cli.errors import UserError
from openocr_cli.evaluation import speed_rows as bench
from openocr_cli.evaluation.sizes import parse_sizes, size_spec
from openocr_cli.inference.options import InferenceOptions
from openocr_cli.inference.resolve import ConfigLayers

ONNX_NOTE = ("--precisions applies to the torch and openvino backends; an ONNX model run with onnxruntime runs "
             "at the precision it was exported with")


@opt.inference_command(
    without=("weights", "onnx_model", "openvino_model", "backend", "limit_side_len", "mean", "std",
             "precision"),  # benchmark compares precisions: --precisions
    fuse={"help": "Time the re-parameterised (fused) torch model, as predict and export run it (default). The hmean "
                  "equals `eval --fuse`; --no-fuse times the model eval runs by default."})
def benchmark(
    options: opt.InferenceOptions,
    weights: Annotated[Optional[list[str]], typer.Option(
        "--weights", "-w",
        help="Checkpoint .pth or model name to time with PyTorch (repeatable; a .onnx / .xml file is timed as "
             "--onnx-model / --openvino-model). Default, when no --onnx-model or "
             f"--openvino-model is given either: {opt.DEFAULT_WEIGHTS}.")] = None,
    onnx_model: Annotated[Optional[list[str]], typer.Option(
        "--onnx-model",
        help="ONNX model to time with onnxruntime (repeatable): a file or repvit-onnx. Its precision (fp32, fp16, "
             "int8) is read from its metadata (or int8 when the graph is quantised).")] = None,
    openvino_model: Annotated[Optional[list[str]], typer.Option(
        "--openvino-model",
        help="OpenVINO IR .xml (its .bin beside it) or .onnx file to time with OpenVINO (repeatable). An int8 "
             "model (metadata precision int8, or FakeQuantize operations) gets one int8 row; any other runs at "
             "each of --precisions.")] = None,
    precisions: Annotated[str, typer.Option(
        "--precisions", metavar="P,P,...",
        help="Precisions for the torch backend: fp32, bf16 (autocast; CPUs with AVX-512 BF16 or AMX, or a GPU), "
             "fp16 (CUDA autocast); and OpenVINO's precision hint for --openvino-model (fp32, bf16, fp16 where "
             "the device has them natively). One that cannot run here is skipped with a note.")] = "fp32",
    max_drop: Annotated[float, opt.float_option(
        "--max-drop", min=0.0,
        help="The recommendation line names the fastest row whose hmean is at most this many points "
             "(100 x hmean) below the best float32 row's (needs --label-file).")] = 0.5,
    sizes_text: Annotated[Optional[str], typer.Option(
        "--sizes", metavar="N,N,...",
        help="limit_side_len values, at least 32, as eval --sizes (e.g. 640,960,1280): one row each "
             "(default: the config's, 960).")] = None,
    images: Annotated[Optional[list[str]], typer.Option(
        "--images", metavar="DIR",
        help="Images to time: a folder, file or glob (repeatable). No hmean; use --label-file for that.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Folder the label paths are relative to (config default: Eval.dataset.data_dir).")] = None,
    label_file: Annotated[Optional[list[Path]], typer.Option(
        "--label-file", help="Labelled images to time (repeatable); each row then also has eval's hmean.")] = None,
    runs: Annotated[int, typer.Option(
        "--runs", min=1,
        help="Timed passes over all images, after one untimed warm-up pass (which also gives the hmean). Passes "
             "of different rows are interleaved.")] = 3,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="Also write the rows and the machine to this JSON file.")] = None,
) -> None:
    """Time detection per stage and per image (p50, p95) for each backend x model x precision x size.

    Each row: ms per image for preprocess (decode, resize, normalise), inference, postprocess and their \
sum (total), images/s (images / the median wall time of one pass; decoding overlaps the forward pass, so it \
can exceed 1000 / total p50), and with --label-file the hmean exactly as `eval` computes it. Rows are \
printed fastest first.

    Examples:

      openocr-det benchmark -w best.pth --images ./imgs --precisions fp32,bf16 --sizes 640,960,1280

      openocr-det benchmark -w best.pth --onnx-model det_model.onnx --data-dir data --label-file data/test.txt \
--json bench.json

      openocr-det benchmark --onnx-model fp32.onnx --onnx-model int8.onnx --images ./imgs --runs 5 --threads 2

      openocr-det benchmark --onnx-model det.onnx --data-dir scans --label-file scans/test.txt --tile auto

      openocr-det benchmark --onnx-model det.onnx --openvino-model det.xml --openvino-model det_int8.xml \
--precisions fp32,bf16 --data-dir data --label-file data/test.txt --max-drop 0.5
    """
    wanted = bench.parse_precisions(precisions)
    sides = parse_sizes(sizes_text) if sizes_text is not None else None
    opt.check_outputs(json=(json_out, False))
    base = options
    config = ConfigLayers.load(base)  # read once for the inputs and every model
    paths, samples = _inputs(config.cfg, images, data_dir, label_file)
    files = [w for w in weights or [] if w.lower().endswith((".onnx", ".xml"))]  # -w model.onnx: as --onnx-model
    weights = [w for w in weights or [] if w not in files]
    onnx_model = (onnx_model or []) + [f for f in files if f.lower().endswith(".onnx")]
    openvino_model = (openvino_model or []) + [f for f in files if f.lower().endswith(".xml")]
    if not weights and not onnx_model and not openvino_model:
        weights = [opt.DEFAULT_WEIGHTS]

    cases: list[bench.Case] = []  # every model is loaded before any timing, so bad input fails fast
    for name in weights or []:
        cases += _torch_cases(base, config, name, wanted, sides)
    if onnx_model and wanted != ["fp32"]:
        err_console.print(f"note: {ONNX_NOTE}.")
    for name in onnx_model or []:
        cases += _onnx_cases(base, config, name, sides)
    for name in openvino_model or []:
        cases += _openvino_cases(base, config, name, wanted, sides)
    if not cases:
        raise UserError("nothing to benchmark: every precision asked for was skipped (see the notes above). "
                        "Pass --precisions fp32, or an --onnx-model.")

    with progress() as bar:
        task = bar.add_task("benchmark", total=len(cases) * len(paths) * (runs + 1))
        rows, failures = bench.run_cases(cases, paths, samples, runs, lambda: bar.advance(task))
    _print(rows, runs)
    chosen = bench.recommend(rows, max_drop)
    if chosen is not None:
        console.print(recommendation_line(chosen), markup=False, soft_wrap=True)
    if json_out is not None:
        opt.write_json(json_out, {"rows": [row.as_dict() for row in rows], "machine": bench.machine(options.threads),
                                  "recommended": chosen.row.as_dict() if chosen is not None else None})
    opt.report_unreadable(failures, "could not be read and were not timed")


def _inputs(cfg: dict, images: Optional[list[str]], data_dir: Optional[Path],
            label_file: Optional[list[Path]]) -> tuple[list[str], Optional[list]]:
    """--images (paths, no labels) or --data-dir/--label-file (paths and labels), never both."""
    labelled = data_dir is not None or bool(label_file)
    if images and labelled:
        raise UserError("pass either --images (timing only) or --data-dir/--label-file (timing and hmean), "
                        "not both.", exit_code=2)
    if not images and not labelled:
        raise UserError("no images: pass --images DIR, or --data-dir D --label-file F for timing and hmean.",
                        exit_code=2)
    if images:
        return collect_images(images), None
    data_dir, files = opt.labelled_data(cfg, "Eval", data_dir, label_file)
    samples = load_labels(files, data_dir, check_images=True)
    return [str(s.image) for s in samples], samples


def _torch_cases(base: InferenceOptions, config: ConfigLayers, weights: str, wanted: list[str],
                 sides: Optional[list[int]]) -> list[bench.Case]:
    from openocr_cli.inference.backends.torch_backend import (  # torch: this branch only
        precision_problem,
        resolve_device,
    )

    device = resolve_device(base.device)
    runnable = []
    for precision in wanted:
        problem = precision_problem(precision, device)
        if precision == "int8":
            problem = "int8 is an ONNX precision: export it (export --int8) and pass the file with --onnx-model"
        if problem is None:
            runnable.append(precision)
        else:
            err_console.print(f"note: skipped torch {precision} for {weights}: {problem}.")
    if not runnable:
        return []
    predictor = Detector.from_options(base.replace(weights=weights, backend="torch"), config).predictor
    return [bench.Case("torch", weights, precision, side, predictor.replace(
        backend=predictor.backend.with_precision(precision), resize=spec))
            for precision in runnable for side, spec in _specs(predictor.resize, sides, weights)]


def _onnx_cases(base: InferenceOptions, config: ConfigLayers, model: str,
                sides: Optional[list[int]]) -> list[bench.Case]:
    predictor = Detector.from_options(base.replace(onnx_model=model, backend="onnx"), config).predictor
    info = predictor.backend.info
    precision = bench.onnx_precision(info.metadata, lambda: bench.graph_op_types(info.path))
    return [bench.Case("onnx", model, precision, side, predictor.replace(resize=spec))
            for side, spec in _specs(predictor.resize, sides, model)]


def _openvino_cases(base: InferenceOptions, config: ConfigLayers, model: str, wanted: list[str],
                    sides: Optional[list[int]]) -> list[bench.Case]:
    """An int8 file: one int8 row. Any other: one row per --precisions value the device runs (the model compiled
    again at that precision hint), the others skipped with a note as torch's are."""
    predictor = Detector.from_options(base.replace(openvino_model=model, backend="openvino"), config).predictor
    backend = predictor.backend
    if backend.is_int8():
        if wanted != ["fp32"]:
            err_console.print(f"note: {model} is an int8 model: it gets one int8 row (--precisions does not "
                              "apply to it).")
        runnable = [("int8", backend)]
    else:
        runnable = []
        for precision in wanted:
            problem = ("int8 comes from an int8 file (export --format openvino --int8, or an int8 .onnx)"
                       if precision == "int8" else backend.cannot_run(precision))
            if problem is None:
                runnable.append((precision, backend.with_precision(precision)))
            else:
                err_console.print(f"note: skipped openvino {precision} for {model}: {problem}.")
    return [bench.Case("openvino", model, precision, side, predictor.replace(backend=compiled, resize=spec))
            for precision, compiled in runnable for side, spec in _specs(predictor.resize, sides, model)]


def _specs(resize: ResizeSpec, sides: Optional[list[int]], model: str) -> list[tuple[int, ResizeSpec]]:
    """(limit_side_len, resize) per row; a fixed-size model gets one row, labelled with its longer side."""
    if resize.image_shape is not None:
        if sides is not None:
            warn(f"--sizes is ignored for {model}: it takes a fixed {resize.image_shape[0]}x{resize.image_shape[1]} "
                 "input, so it gets one row (limit_side_len = its longer side).")
        return [(max(resize.image_shape), resize)]
    if sides is None:
        return [(resize.resize_long or resize.limit_side_len, resize)]
    return [(side, size_spec(resize, side)) for side in sides]


def recommendation_line(chosen: bench.Recommendation) -> str:
    """One line naming the row to deploy, and what it was held to."""
    row = chosen.row
    head = (f"recommended: {row.backend} {Path(row.model).name} {row.precision} at {row.limit_side_len}: "
            f"{row.images_per_s:.2f} images/s")
    ref = chosen.reference
    if ref is None:
        return f"{head}, the fastest row (accuracy not measured: pass --label-file to keep hmean within --max-drop)"
    kind = "float32 row" if ref.precision == "fp32" else "row (no float32 row)"
    return (f"{head}, hmean {row.hmean:.4f} (within --max-drop {chosen.max_drop:g} of the best {kind}'s hmean "
            f"{ref.hmean:.4f})")


def _print(rows: list[bench.BenchRow], runs: int) -> None:
    def pair(row: bench.BenchRow, stage: str) -> str:
        ms = row.stages_ms[stage]
        return f"{ms['p50']:.1f} / {ms['p95']:.1f}"

    shown = [(row.backend, Path(row.model).name, row.precision, row.limit_side_len, f"{row.images_per_s:.2f}",
              "-" if row.hmean is None else f"{row.hmean:.4f}", pair(row, "total"), pair(row, "preprocess"),
              pair(row, "inference"), pair(row, "postprocess")) for row in bench.fastest_first(rows)]
    images = rows[0].images if rows else 0
    console.print(table(f"benchmark: {images} images x {runs} timed run(s), ms per image p50 / p95, fastest first",
                        ["backend", "model", "precision", "limit_side_len", "images/s", "hmean", "total",
                         "preprocess", "inference", "postprocess"], shown, keys=4))
