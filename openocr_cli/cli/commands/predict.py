"""`openocr-det predict`: detect text in images, write det_results.txt and drawn images."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated

import typer

from openocr_cli.cli import options as opt
from openocr_cli.cli.commands import predict_extras as pre
from openocr_cli.cli.commands import predict_scale as large
from openocr_cli.cli.ui import console, err_console, rate_progress, table, warn
from openocr_cli.errors import UserError
from openocr_cli.inference.results import StageTimes

RESULTS_NAME = "det_results.txt"
TILED_NAME = "tiled.json"  # {image: how many tiles and why}, written when any image ran as tiles


@opt.inference_command(without=("fuse",))
def predict(
    sources: Annotated[list[str], typer.Argument(
        help="Image files, PDFs (one input per page), folders or glob patterns.", show_default=False)],
    options: opt.InferenceOptions,
    output: Annotated[Path, typer.Option(
        "--output", help="Folder for det_results.txt and vis/.")] = Path("output/predict"),
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include images in subfolders.")] = False,
    no_vis: Annotated[bool, typer.Option("--no-vis", help="Do not write drawn images.")] = False,
    save_format: pre.SaveFormat = None,
    min_rect: pre.MinRect = False,
    select_uncertain: pre.SelectUncertain = None,
    output_format: large.FormatOpt = large.OutputFormat.txt,
    resume: large.Resume = False,
    overwrite: large.Overwrite = False,
    shard: large.ShardOpt = None,
    devices: large.DevicesOpt = None,
    ray: large.RayOpt = False,
    ray_address: large.RayAddress = None,
) -> None:
    """Detect text regions in images and PDF pages.

    Writes OUTPUT/det_results.txt (image path, TAB, JSON list of {"points", "score"}) and, unless --no-vis, \
the images with boxes drawn under OUTPUT/vis/. A PDF's pages are rendered one at a time at --pdf-dpi and named \
doc.pdf#page=N (drawn as vis/doc_pN.png). Unreadable images and PDFs (encrypted, damaged, empty) are skipped with \
a warning and listed at the end (exit 1).

    Examples:

      openocr-det predict ./imgs --weights best.pth

      openocr-det predict "scans/**/*.png" --recursive --device cpu --box-type poly --no-vis

      openocr-det predict ./imgs --backend onnx --onnx-model output/det_repvit_db/export_det/det_model.onnx --threads 2

      openocr-det predict ./imgs --openvino-model det_model.xml --device cpu --threads 2

      openocr-det predict report.pdf --pdf-dpi 150

      openocr-det predict /data/scans --onnx-model det.onnx --format jsonl --shard 3/8 --resume --output out/3

      openocr-det predict /data/scans -w best.pth --devices cuda:0,cuda:1 --no-vis --resume

      openocr-det predict /shared/scans --onnx-model det.onnx --ray-address auto --no-vis --save-format parquet
    """
    if (save_format or select_uncertain) and (resume or devices):
        raise UserError("--save-format and --select-uncertain see only the images this process runs, so they do not "
                        "combine with --resume or --devices; convert the finished results instead (`openocr-det "
                        "convert det_results.txt --from ppocr --to labelme ...`).", exit_code=2)
    run = large.LargeRun(sources=sources, recursive=recursive, output=output, vis=not no_vis,
                         fmt=output_format.value, resume=resume, overwrite=overwrite, shard=shard, devices=devices,
                         options=options, ray=large.ray_target(ray, ray_address))
    postprocess = run.detector.predictor.postprocess if run.detector is not None else None
    with run, (pre.PredictExtras(output, save_format, min_rect, select_uncertain, run.box_type, postprocess)
               if run.sees_every_result else contextlib.nullcontext()) as extras:
        _predict(run, output, options.tile, extras)


def _predict(run: large.LargeRun, output: Path, tile, extras) -> None:
    """Run what is left of `run`, writing each result as it comes, then the summary."""
    failures: list[str] = []
    boxes = 0
    times = StageTimes()
    tiled: dict[str, str] = {}
    start = time.perf_counter()
    shrunk, first_shrunk = 0, ""  # images whose full-resolution probes show text the resize loses (--tile off)
    with rate_progress() as bar:
        task = bar.add_task("predict", total=run.total)
        for result, drawing in run.stream(keep_maps=extras is not None and extras.needs_maps):
            run.writer.write(result, drawing)
            if extras is not None:
                extras.add_any(result)
            bar.update(task, advance=1, total=run.total)
            times += result.times
            if result.error is not None:
                warn(f"skipped {result.error}")
                failures.append(result.error)
                continue
            if extras is not None:
                extras.add(result)
            boxes += len(result.detections)
            if result.small_text is not None:
                shrunk, first_shrunk = shrunk + 1, first_shrunk or f"{result.source}: {result.small_text}"
            if result.tiling is not None:
                tiled[result.source] = result.tiling
                err_console.print(f"tiled {result.source}: {result.tiling}", markup=False)
    run.finish(times.images, len(failures))
    if extras is not None:
        extras.finish()
    ms = times.ms_per_image()
    console.print(table("predict", ["metric", "value"], [
        ("images", times.images),
        *([("already recorded (skipped)", run.skipped)] if run.resuming else []),
        *([("shard", f"{run.shard}: {run.files} of the input files")] if run.shard is not None else []),
        ("images/s", f"{(times.images + len(failures)) / max(time.perf_counter() - start, 1e-9):.1f}"),
        *([("tiled images", len(tiled))] if tile is not None and tile != "off" else []),
        ("boxes", boxes),
        ("preprocess ms/img", f"{ms['preprocess']:.1f}"),
        ("inference ms/img", f"{ms['inference']:.1f}"),
        ("postprocess ms/img", f"{ms['postprocess']:.1f}"),
    ]))
    if tiled:
        opt.write_json(output / TILED_NAME, tiled)
    if shrunk:
        warn(f"{shrunk} image(s) hold text the resize shrinks below what the model detects (first: {first_shrunk}); "
             "it was probably missed. Pass --tile auto to run such images as tiles at their own resolution.")
    console.print(f"Results saved to {output}")
    opt.report_unreadable(run.recorded.errors + failures)

