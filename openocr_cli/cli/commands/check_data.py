"""`openocr-det check-data`: the label problems train would refuse, and what the model will see, before training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from openocr_cli import config as cfgmod
from openocr_cli.cli import options as opt
from openocr_cli.cli.ui import console, err_console, table, warn
from openocr_cli.data.doctor import DataReport, check_data
from openocr_cli.data.labels import MAX_REPORTED_PROBLEMS
from openocr_cli.errors import UserError
from openocr_cli.fileio import why_not_a_file


def check_data_command(
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Folder the label paths are relative to (config default: Train.dataset.data_dir).")] = None,
    label_file: Annotated[Optional[list[Path]], typer.Option(
        "--label-file",
        help="Label file(s): path<TAB>JSON list of {transcription, points} (repeatable) "
             "(config default: Train.dataset.label_file_list).")] = None,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="Also write the report to this JSON file.")] = None,
    config: opt.ConfigPath = None,
    overrides: opt.Overrides = None,
    crops: Annotated[int, typer.Option(
        "--crops", min=0,
        help="Training samples drawn through the training transforms to measure crops without text (0 skips).")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of those samples (same seed, same result).")] = 0,
    cache: Annotated[Optional[str], typer.Option(
        "--cache", help="Decode cache the crops read the images through: none, ram or disk (disk also fills the "
        "cache train --cache disk reads) (config default: Train.dataset.cache, else none).")] = None,
) -> None:
    """Check a training set: the lines train refuses (file:line: reason), counts, text heights, empty crops.

    Text heights are measured after the evaluation resize (Eval DetResizeForTest); empty crops come from
    the real training transforms (Train.dataset.transforms). Exit code 0 when every line is usable
    (warnings allowed), 1 when some line is not or none is there.

    Examples:

      openocr-det check-data --data-dir icdar2015/text_localization \
--label-file icdar2015/text_localization/train_icdar2015_label.txt

      openocr-det check-data --data-dir data --label-file data/a.txt --label-file data/b.txt --json report.json

      openocr-det check-data --config my_repvit_db.yml -o Eval.dataset.transforms.2.DetResizeForTest.limit_side_len=1280
    """
    cfg = cfgmod.apply_overrides(cfgmod.load_config(config), overrides or [])
    data_dir, files = opt.labelled_data(cfg, "Train", data_dir, label_file)
    missing = next((f for f in files if not f.is_file()), None)
    if missing is not None:
        raise UserError(f"label file {missing} {why_not_a_file(missing)}. Pass an existing file to --label-file.")

    with console.status("checking labels, images and training crops ..."):
        report = check_data(files, data_dir, cfg, crops=crops, seed=seed, cache=_cache_mode(cfg, cache))
    print_report(report)
    if json_out is not None:
        opt.write_json(json_out, report.to_json())
    if report.problems or not report.images:  # no usable line at all: train would refuse it
        raise typer.Exit(1)


def _cache_mode(cfg: dict, flag: Optional[str]) -> str:
    from openocr_cli.config_schema import check_config

    value = flag if flag is not None else ((cfg.get("Train") or {}).get("dataset") or {}).get("cache")
    if value is None or value is False:
        return "none"
    check_config({"Train": {"dataset": {"cache": value}}}, "--cache" if flag is not None else "config")
    return str(value).strip().lower()


def print_report(report: DataReport, problems: bool = True, warnings: bool = True) -> None:
    """The summary table, then (unless the caller shows them otherwise: train logs them) the warnings (yellow),
    then (unless the caller lists them itself, as train does in its refusal) up to 20 problems as
    `file:line: reason`."""
    text = report.regions - report.ignored_regions
    rows = [("usable images", report.images), ("background images", report.background_images),
            ("regions", report.regions), ("do-not-care regions", report.ignored_regions), ("text regions", text)]
    rows += [(f"  text height {name} px", count) for name, count in report.height_buckets.items()]
    empty = f"{report.empty_crop_fraction:.1%}" if report.crops else "not measured (--crops 0)"
    rows += [("empty training crops", empty), ("problem lines", len(report.problems))]
    console.print(table("check-data", ["", "value"], rows))
    for message in report.warnings if warnings else ():
        warn(escape(message))
    if problems and report.problems:
        err_console.print(f"[red]{len(report.problems)} label line(s) train refuses:[/red]")
        for problem in report.problems[:MAX_REPORTED_PROBLEMS]:
            err_console.print(f"  {problem}", markup=False)
        if len(report.problems) > MAX_REPORTED_PROBLEMS:
            err_console.print(f"  ... and {len(report.problems) - MAX_REPORTED_PROBLEMS} more")
