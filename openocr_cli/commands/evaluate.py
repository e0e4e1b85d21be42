"""`openocr-det eval`: precision / recall / hmean of a model, or of an existing predictions file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from openocr_cli.commands import common as opt
from openocr_cli.commands.common import InferenceSettings
from openocr_cli.data.labels import load_labels
from openocr_cli.engine.evaluator import EvalResult, evaluate_model, evaluate_predictions
from openocr_cli.errors import UserError
from openocr_cli.results import read_predictions
from openocr_cli.ui import console, err_console, progress, table, warn


def evaluate(
    weights: opt.Weights = opt.DEFAULT_WEIGHTS,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Folder the label paths are relative to (config default: Eval.dataset.data_dir).")] = None,
    label_file: Annotated[Optional[list[Path]], typer.Option(
        "--label-file",
        help="Label file(s): path<TAB>JSON list of {transcription, points} (repeatable) "
             "(config default: Eval.dataset.label_file_list).")] = None,
    predictions: Annotated[Optional[Path], typer.Option(
        "--predictions", help="Score this det_results.txt instead of running a model (images need not exist).")] = None,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="Also write the numbers to this JSON file.")] = None,
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
    fuse: Annotated[bool, typer.Option(
        "--fuse/--no-fuse",
        help="Evaluate the re-parameterised (fused) backbone: faster, outputs differ by about 1e-7. "
             "Default: unfused, as OpenOCR's eval_det, for identical numbers.")] = False,
    backend: opt.BackendOpt = None,
    onnx_model: opt.OnnxModel = None,
    threads: opt.Threads = None,
    mean: opt.Mean = None,
    std: opt.Std = None,
) -> None:
    """Evaluate detection quality (OpenOCR's IoU > 0.5 metric, '###' regions do not count).

    Examples:

      openocr-det eval --weights output/det_repvit_db/best.pth --data-dir icdar2015/text_localization \
--label-file icdar2015/text_localization/test_icdar2015_label.txt

      openocr-det eval --predictions output/predict/det_results.txt --label-file test_label.txt --json metrics.json

      openocr-det eval --backend onnx --onnx-model det_model.onnx --data-dir icdar2015/text_localization \
--label-file icdar2015/text_localization/test_icdar2015_label.txt
    """
    settings = InferenceSettings(
        weights=weights, config=config, overrides=override, device=device, batch_size=batch_size, workers=workers,
        thresh=thresh, box_thresh=box_thresh, unclip_ratio=unclip_ratio, score_mode=score_mode, box_type=box_type,
        limit_side_len=limit_side_len, limit_type=limit_type, non_strict=non_strict, backend=backend,
        onnx_model=onnx_model, threads=threads, mean=mean, std=std, fuse=fuse)
    cfg = settings.load_config()
    dataset = ((cfg.get("Eval") or {}).get("dataset") or {})
    data_dir = data_dir if data_dir is not None else Path(str(dataset.get("data_dir", ".")))
    files = label_file or [Path(str(p)) for p in dataset.get("label_file_list") or []]
    if not files:
        raise UserError("no label file: pass --label-file FILE (or set Eval.dataset.label_file_list in the config).",
                        exit_code=2)

    if predictions is not None:
        preds = read_predictions(predictions)
        samples = load_labels(files, data_dir, check_images=False)
        result = evaluate_predictions(preds, samples)
        if result.unmatched:
            warn(f"{len(result.unmatched)} labelled image(s) have no line in {predictions} and count as "
                 f"images with no detections (first: {', '.join(result.unmatched[:3])}).")
    else:
        samples = load_labels(files, data_dir, check_images=True)
        predictor = settings.build_predictor(cfg)
        with progress() as bar:
            task = bar.add_task("eval", total=len(samples))
            result = evaluate_model(predictor, samples, lambda: bar.advance(task))

    _print(result)
    if json_out is not None:
        try:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {json_out}: {exc.strerror}.") from None
    if result.failures:
        err_console.print(f"[red]{len(result.failures)} image(s) could not be read and were not scored:[/red]")
        for failure in result.failures:
            err_console.print(f"  {failure}")
        raise typer.Exit(1)


def _print(result: EvalResult) -> None:
    rows = [("precision", f"{result.precision:.4f}"), ("recall", f"{result.recall:.4f}"),
            ("hmean", f"{result.hmean:.4f}"), ("images", result.images)]
    if result.fps is not None:
        rows.append(("FPS", f"{result.fps:.2f}"))
    console.print(table("eval", ["metric", "value"], rows))
