"""`openocr-det convert`: turn the label format a user has (ICDAR2015, labelme, COCO, Total-Text, ...) into another."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from openocr_cli.cli.options import float_option
from openocr_cli.cli.ui import console, table, warn
from openocr_cli.data.labels import MAX_REPORTED_PROBLEMS
from openocr_cli.formats import FORMATS, ppocr
from openocr_cli.formats.convert import Request, Summary, convert_labels
from openocr_cli.formats.label_model import WriteOptions

NAMES = ", ".join(FORMATS)
SHOWN_MISSING = 3


def convert(
    source: Annotated[Path, typer.Argument(help="Label file or folder to convert.", show_default=False)],
    from_: Annotated[str, typer.Option("--from", help=f"Format of SOURCE: {NAMES}.", show_default=False)],
    to: Annotated[str, typer.Option("--to", help=f"Format to write: {NAMES} (totaltext is read only).",
                                    show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", help="File (ppocr, coco, labelstudio, mmocr, doctr; rrc: a .zip) or folder (icdar2015, labelme, "
                         "ppocrlabel, --split) to write.",
        show_default=False)],
    images_dir: Annotated[Optional[Path], typer.Option(
        "--images-dir", help="Folder of the images: image paths are relative to it; gives icdar2015/totaltext "
                             "names their extension and labelme/coco their image sizes.")] = None,
    image_prefix: Annotated[str, typer.Option(
        "--image-prefix", help="Folder put before every written image path, e.g. train_images/.")] = "",
    split: Annotated[Optional[float], float_option(
        "--split", help="Train fraction: write OUT/train_label.txt and OUT/test_label.txt (needs --to ppocr).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --split shuffle (same seed, same split).")] = 0,
    min_rect: Annotated[bool, typer.Option(
        "--min-rect", help="icdar2015 and rrc output: write non-quad polygons as their minimum-area rectangle.")
    ] = False,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="Convert what is valid and report the bad entries, instead of writing nothing.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUT.")] = False,
    check: Annotated[bool, typer.Option(
        "--check", help="Run check-data on the converted labels afterwards (exit 1 if it finds problems).")] = False,
) -> None:
    """Convert text-detection labels between formats: ppocr, icdar2015, labelme, coco, labelstudio, ppocrlabel, rrc \
(ICDAR submission zip), mmocr (MMOCR 1.x textdet JSON), doctr (docTR detection labels.json), totaltext (read only).

    Every region keeps its points (count, order, integer coordinates) and its do-not-care flag; images \
without regions are kept. Bad entries are listed as file:line (or file: JSON path) and nothing is written, \
unless --skip-bad. The output is written to a temporary path and renamed into place, never partially.

    Examples:

      openocr-det convert ch4_training_localization_transcription_gt --from icdar2015 --to ppocr \
--images-dir ch4_training_images --image-prefix ch4_training_images --output train_label.txt

      openocr-det convert labelme_dir --from labelme --to ppocr --output data/labels --split 0.9 --seed 0 --check

      openocr-det convert instances.json --from coco --to labelme --images-dir images --output labelme_dir

      openocr-det convert Groundtruth/Polygon/Train --from totaltext --to ppocr --images-dir Images/Train \
--output totaltext_train.txt

      openocr-det convert train_label.txt --from ppocr --to icdar2015 --min-rect --output gt/

      openocr-det convert output/predict/det_results.txt --from ppocr --to rrc --min-rect --output submit.zip

      openocr-det convert textdet_test.json --from mmocr --to ppocr --output test_label.txt

      openocr-det convert train/labels.json --from doctr --to ppocr --output train_label.txt
    """
    request = Request(source=source, source_format=from_, target_format=to, output=output, images_dir=images_dir,
                      image_prefix=image_prefix, split=split, seed=seed, min_rect=min_rect, skip_bad=skip_bad,
                      overwrite=overwrite)
    summary = convert_labels(request)
    _print(summary, request)
    if check:
        _check(summary, request)


def _print(summary: Summary, request: Request) -> None:
    if summary.skipped:
        warn(f"skipped {len(summary.skipped)} bad entr{'y' if len(summary.skipped) == 1 else 'ies'} (--skip-bad):")
        for problem in summary.skipped[:MAX_REPORTED_PROBLEMS]:
            console.print(f"  {escape(str(problem))}", highlight=False)
    if summary.merged:
        warn(f"{summary.merged} repeated image entr{'y was' if summary.merged == 1 else 'ies were'} merged into the "
             "first entry of the same image (one entry per image).")
    if summary.missing:
        warn(f"{len(summary.missing)} image(s) are not in {summary.root} "
             f"(first: {', '.join(summary.missing[:SHOWN_MISSING])}).")
    if summary.unknown_sizes:
        warn(f"the size of {summary.unknown_sizes} image(s) is unknown and was not written "
             "(pass the image folder with --images-dir).")
    if summary.predicted and request.target_format.strip().lower() == "icdar2015":
        warn(f"{escape(str(request.source))} holds predictions (scores, no transcriptions): icdar2015 is the "
             "ground-truth format, so each box was written as gt_<image>.txt with an empty transcription (a region "
             "to care about whose text is unknown). To score predictions with the official ICDAR script or submit "
             "them, convert with --to rrc (submit.zip of res_<image>.txt, 8 integers a line).")
    rows = [("images", len(summary.images)), ("regions", summary.regions), ("ignored regions", summary.ignored),
            ("skipped entries", len(summary.skipped))]
    rows += [(f"written: {escape(str(path))}", count) for _, path, count in summary.parts]
    console.print(table("convert", [f"{request.source_format} -> {request.target_format}", "count"], rows))


def _check(summary: Summary, request: Request) -> None:
    """check-data on the result: the written label files when they are ppocr without prefix, else a ppocr copy."""
    try:
        from openocr_cli.cli.commands.check_data import print_report
        from openocr_cli.config import load_config
        from openocr_cli.data.doctor import check_data
    except ImportError:
        console.print("check-data is not available in this version; the conversion is done.")
        return
    with tempfile.TemporaryDirectory() as work:
        if request.target_format == ppocr.FORMAT.name and not request.image_prefix:
            files = [path for _, path, _ in summary.parts]
        else:
            files = [Path(work) / "converted_label.txt"]
            ppocr.write(summary.images, files[0], WriteOptions())
            console.print(f"checking a ppocr copy of the result (line N = image N of {len(summary.images)}) ...")
        report = check_data(files, summary.root, load_config())
        print_report(report)
    if report.problems:
        raise typer.Exit(1)
