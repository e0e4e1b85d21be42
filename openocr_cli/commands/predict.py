"""`openocr-det predict`: detect text in images, write det_results.txt and drawn images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import cv2
import typer

from openocr_cli.commands import common as opt
from openocr_cli.data.images import collect_images
from openocr_cli.data.pdf import split_page_ref
from openocr_cli.data.resize import target_size
from openocr_cli.engine.tiling import shrunk_text, text_heights
from openocr_cli.errors import UserError
from openocr_cli.results import StageTimes
from openocr_cli.ui import console, err_console, progress, table, warn

RESULTS_NAME = "det_results.txt"
TILED_NAME = "tiled.json"  # {image: how many tiles and why}, written when any image ran as tiles


def predict(
    sources: Annotated[list[str], typer.Argument(
        help="Image files, PDFs (one input per page), folders or glob patterns.", show_default=False)],
    weights: opt.Weights = opt.DEFAULT_WEIGHTS,
    output: Annotated[Path, typer.Option(
        "--output", help="Folder for det_results.txt and vis/.")] = Path("output/predict"),
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include images in subfolders.")] = False,
    no_vis: Annotated[bool, typer.Option("--no-vis", help="Do not write drawn images.")] = False,
    config: opt.ConfigPath = None,
    override: opt.Overrides = None,
    device: opt.Device = None,
    batch_size: opt.BatchSize = 1,
    workers: opt.Workers = 2,
    thresh: opt.Thresh = None,
    box_thresh: opt.BoxThresh = None,
    unclip_ratio: opt.UnclipRatio = None,
    score_mode: opt.ScoreModeOpt = None,
    box_type: opt.BoxTypeOpt = None,
    limit_side_len: opt.LimitSide = None,
    limit_type: opt.LimitTypeOpt = None,
    non_strict: opt.NonStrict = False,
    backend: opt.BackendOpt = None,
    onnx_model: opt.OnnxModel = None,
    openvino_model: opt.OpenVinoModel = None,
    threads: opt.Threads = None,
    mean: opt.Mean = None,
    std: opt.Std = None,
    postprocess_file: opt.PostprocessFile = None,
    pdf_dpi: opt.PdfDpi = opt.DEFAULT_PDF_DPI,
    tile: opt.Tile = None,
    tile_overlap: opt.TileOverlap = None,
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
    """
    from openocr_cli.api.detector import Detector

    paths = collect_images(sources, recursive)
    detector = Detector.from_options(opt.inference_options(locals()))
    vis_dir = output / "vis"
    try:
        output.mkdir(parents=True, exist_ok=True)
        if not no_vis:
            vis_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {output}: {exc.strerror}. Choose another --output.") from None

    failures: list[str] = []
    boxes = 0
    times = StageTimes()
    vis_names: set[str] = set()
    tiled: dict[str, str] = {}
    shrunk: list[str] = []  # images the resize shrank so far that most text found is under 8 px (--tile off)
    # line-buffered: each image's line is in the file as soon as the image is done
    with open(output / RESULTS_NAME, "w", encoding="utf-8", buffering=1) as results, progress() as bar:
        task = bar.add_task("predict", total=len(paths))
        for result in detector.stream(paths, keep_images=not no_vis, on_error="skip"):
            bar.advance(task)
            times += result.times
            if result.error is not None:
                warn(f"skipped {result.error}")
                failures.append(result.error)
                continue
            results.write(result.to_line())
            boxes += len(result.detections)
            if not detector.predictor.tile.enabled and result.src_hw is not None and shrunk_text(
                    result.src_hw, target_size(*result.src_hw, detector.predictor.resize),
                    text_heights(result.polygons)):
                shrunk.append(result.name)
            if result.tiling is not None:
                tiled[result.name] = result.tiling
                err_console.print(f"tiled {result.name}: {result.tiling}", markup=False)
            if not no_vis:
                _save_vis(vis_dir, result.path, result.plot(), vis_names)

    ms = times.ms_per_image()
    console.print(table("predict", ["metric", "value"], [
        ("images", times.images),
        *([("tiled images", len(tiled))] if tile is not None and tile != "off" else []),
        ("boxes", boxes),
        ("preprocess ms/img", f"{ms['preprocess']:.1f}"),
        ("inference ms/img", f"{ms['inference']:.1f}"),
        ("postprocess ms/img", f"{ms['postprocess']:.1f}"),
    ]))
    if tiled:
        opt.write_json(output / TILED_NAME, tiled)
    if shrunk:
        warn(f"{len(shrunk)} image(s) were shrunk so far by the resize that most text found is under 8 px "
             f"(first: {shrunk[0]}); small text in them was probably missed. Pass --tile auto to run such images "
             "as tiles at their own resolution.")
    console.print(f"Results saved to {output}")
    opt.report_unreadable(failures)


def _save_vis(folder: Path, path: str, image, used: set[str]) -> None:
    """Save under the image's base name (page N of doc.pdf as doc_pN.png); a clash gets a numeric suffix,
    undecodable formats become PNG."""
    page = split_page_ref(path)
    stem, ext = os.path.splitext(os.path.basename(page[0] if page else path))
    if page:
        stem = f"{stem}_p{page[1]}"
    if ext.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"):
        ext = ".png"
    name, n = f"{stem}{ext}", 1
    while name in used:
        name, n = f"{stem}_{n}{ext}", n + 1
    used.add(name)
    ok, buf = cv2.imencode(ext, image)
    if ok:
        buf.tofile(str(folder / name))
    else:
        warn(f"could not encode the drawn image for {path}")
