"""`openocr-det eval`: precision / recall / hmean of a model, or of an existing predictions file.

The extras (--tune, --report, --sizes, recall by text height) live in openocr_cli.evaluation; this
module only wires options to them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from openocr_cli.cli import options as opt
from openocr_cli.cli.commands import eval_display as display
from openocr_cli.cli.ui import console, err_console, progress, table, warn
from openocr_cli.data.labels import load_labels
from openocr_cli.data.resize import ResizeSpec
from openocr_cli.errors import UserError
from openocr_cli.evaluation import details, sizes, tune
from openocr_cli.evaluation.evaluator import EvalResult, evaluate_model, evaluate_predictions
from openocr_cli.evaluation.mapcache import MEMORY_ENV, MapCache
from openocr_cli.evaluation.report import write_report
from openocr_cli.formats.det_results import read_predictions
from openocr_cli.inference.resolve import ConfigLayers, resolve_resize


@opt.inference_command(fuse={"default": False, "help": (
    "Evaluate the re-parameterised (fused) backbone: faster, outputs differ by about 1e-7. Default: unfused, as "
    "OpenOCR's eval_det, for identical numbers.")})
def evaluate(
    options: opt.InferenceOptions,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Folder the label paths are relative to (config default: Eval.dataset.data_dir).")] = None,
    label_file: Annotated[Optional[list[Path]], typer.Option(
        "--label-file",
        help="Label file(s): path<TAB>JSON list of {transcription, points} (repeatable) "
             "(config default: Eval.dataset.label_file_list).")] = None,
    predictions: Annotated[Optional[Path], typer.Option(
        "--predictions", help="Score this det_results.txt or det_results.jsonl (predict --format jsonl) instead "
        "of running a model (images need not exist).")] = None,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="Also write the numbers to this JSON file.")] = None,
    tune_flag: Annotated[bool, typer.Option(
        "--tune",
        help="Also search thresh, box_thresh and unclip_ratio on the probability maps of this one model pass "
             "(exact: the real post-processing and metric per trial) and print the best beside the current "
             f"settings. Ranges: --tune NAME=START:STOP:STEP,... (e.g. {tune.EXAMPLE}); defaults "
             "thresh 0.1:0.6:0.05, box_thresh 0.3:0.85:0.05, unclip_ratio 1.0:2.5:0.1.")] = False,
    tune_ranges: Annotated[Optional[str], typer.Option(
        "--tune-ranges", metavar="NAME=START:STOP:STEP,...",
        help="The search ranges (implies --tune; `--tune SPEC` is the same).")] = None,
    tune_jobs: Annotated[Optional[int], typer.Option(
        "--tune-jobs", min=1, help="Processes for --tune (default: one per CPU core).")] = None,
    report: Annotated[Optional[Path], typer.Option(
        "--report", metavar="DIR",
        help="Write DIR/index.html (every image drawn, worst first: matched green, false positives red, "
             "missed blue, do-not-care dashed grey) and DIR/errors.json (per image tp/fp/fn and the wrong boxes).")
    ] = None,
    sizes_text: Annotated[Optional[str], typer.Option(
        "--sizes", metavar="N,N,...",
        help="Also evaluate at these limit_side_len values (e.g. 640,960,1280): one row of P/R/H/FPS each.")] = None,
) -> None:
    """Evaluate detection quality (OpenOCR's IoU > 0.5 metric, '###' regions do not count).

    Examples:

      openocr-det eval --weights output/det_repvit_db/best.pth --data-dir icdar2015/text_localization \
--label-file icdar2015/text_localization/test_icdar2015_label.txt

      openocr-det eval --predictions output/predict/det_results.txt --label-file test_label.txt --json metrics.json

      openocr-det eval --backend onnx --onnx-model det_model.onnx --data-dir icdar2015/text_localization \
--label-file icdar2015/text_localization/test_icdar2015_label.txt

      openocr-det eval --openvino-model det_model.xml --data-dir icdar2015/text_localization \
--label-file icdar2015/text_localization/test_icdar2015_label.txt

      openocr-det eval -w best.pth --label-file test_label.txt --tune --report eval_report --json tuned.json

      openocr-det eval -w best.pth --label-file test_label.txt --sizes 640,960,1280
    """
    grids = tune.parse_ranges(tune_ranges) if tune_flag or tune_ranges is not None else None
    opt.check_outputs(json=(json_out, False), report=(report, True))
    size_list = sizes.parse_sizes(sizes_text) if sizes_text is not None else None
    config = ConfigLayers.load(options)  # read once: the labels' defaults, the resize, the detector
    cfg = config.cfg
    data_dir, files = opt.labelled_data(cfg, "Eval", data_dir, label_file, images=predictions is None)

    out: dict = {}
    check_precision = False
    with MapCache() as cache:
        if predictions is not None:
            for flag, given in (("--tune", grids is not None), ("--sizes", size_list is not None)):
                if given:
                    raise UserError(f"{flag} runs the model, so it cannot be combined with --predictions; pass "
                                    "--weights (or --onnx-model / --openvino-model) instead.", exit_code=2)
            preds = read_predictions(predictions)
            samples = load_labels(files, data_dir, check_images=False)
            result = evaluate_predictions(preds, samples)
            resize = _predictions_resize(predictions) or resolve_resize(options, config)[0]
            shown = {"predictions": predictions}
            if result.unmatched:
                warn(f"{len(result.unmatched)} labelled image(s) have no line in {predictions} and count as "
                     f"images with no detections (first: {', '.join(result.unmatched[:3])}).")
            if result.unlabelled:
                warn(f"{len(result.unlabelled)} line(s) of {predictions} are for images no label file lists, and "
                     f"are not scored (first: {', '.join(result.unlabelled[:3])}); check that --label-file is the "
                     "set these predictions were made on.")
        else:
            from openocr_cli.api.detector import Detector

            samples = load_labels(files, data_dir, check_images=True)
            detector = Detector.from_options(options, config)
            predictor = detector.predictor
            resize = predictor.resize
            if size_list is not None:
                sizes.size_spec(resize, size_list[0])  # refuse a fixed-shape resize before the long pass
            with progress() as bar:
                task = bar.add_task("eval", total=len(samples))
                result = evaluate_model(predictor, samples, lambda: bar.advance(task),
                                        on_map=cache.add if grids is not None else None)
            shown = _settings_shown(detector)
            check_precision = detector.settings["precision"].value != "fp32"

        _print(result)
        if check_precision:
            out["precision_check"] = _check_precision(predictor, samples, result)
        buckets = result.by_height = details.by_height(result.scored, resize)
        out.update(result.as_dict())
        display.print_by_height(buckets)
        if buckets is not None:
            advice = details.tiny_text_warning(buckets, resize)
            if advice:
                warn(advice)
        if size_list is not None:
            with progress() as bar:
                rows = sizes.sweep(predictor, samples, size_list, result,
                                   lambda side: _advance(bar, bar.add_task(f"eval @{side}", total=len(samples))))
            display.print_sizes(rows)
            note = sizes.same_input_note(rows, samples, resize)
            if note:
                err_console.print(f"note: {note}", markup=False)
            out["sizes"] = [row.as_dict() for row in rows]
        if grids is not None:
            outcome = _tune(cache, samples, predictor, grids, tune_jobs)
            display.print_tune(outcome, len(cache.maps), grids)
            out.update(outcome.as_dict(grids))
            advice = tune.small_sample_warning(sum(not ignored for s in samples for ignored in s.ignore))
            if advice:
                warn(advice)
    if report is not None:
        write_report(report, result, shown, options.workers, options.pdf_dpi)
        console.print(f"Report: {report / 'index.html'} (errors per image in {report / 'errors.json'})")
    if json_out is not None:
        opt.write_json(json_out, out)
    opt.report_unreadable(result.failures, "could not be read and were not scored")


def _check_precision(predictor, samples, result: EvalResult) -> dict:
    """--precision bf16/fp16: the same model again at float32, the hmean drop and its bootstrap interval."""
    from openocr_cli.evaluation.guard import check_precision

    precision = predictor.backend.precision
    with progress() as bar:
        task = bar.add_task("eval fp32 (reference)", total=len(samples))
        reference, verdict = check_precision(predictor, samples, result, lambda: bar.advance(task))
    display.print_precision_check(verdict, reference.hmean, precision)
    return {"precision": precision, "fp32_hmean": reference.hmean, "hmean": verdict.hmean, "drop": verdict.drop,
            "interval": list(verdict.interval or ()), "agreement": verdict.agreement["hmean"],
            "decision": verdict.decision, "basis": verdict.basis, "reason": verdict.reason}


def _predictions_resize(predictions: Path) -> Optional[ResizeSpec]:
    """The resize that made the predictions, from the run.json `predict` wrote beside them (text heights
    are bucketed at the size the model saw); None when there is no readable record."""
    from openocr_cli.inference.run_folder import RUN_NAME

    record = predictions.parent / RUN_NAME
    try:
        settings = json.loads(record.read_text(encoding="utf-8")).get("settings") or {}
        keys = ("image_shape", "resize_long", "limit_side_len", "limit_type")
        params = {k: settings[k] for k in keys if settings.get(k) is not None}
        spec = ResizeSpec.from_params(params) if params else None
    except (OSError, ValueError, TypeError, AttributeError, UserError):
        return None
    if spec is not None:
        err_console.print(f"note: text heights are measured at the resize that made the predictions ({record}).",
                          markup=False)
    return spec


def _advance(bar, task):
    return lambda: bar.advance(task)


def _settings_shown(detector) -> dict:
    """What the report's header lists: the model and the settings that made these numbers, with sources."""
    settings, spec = detector.settings, detector.predictor.resize
    shown = {"model": f"{detector.resolved.model} ({detector.backend})"}
    for key in ("thresh", "box_thresh", "unclip_ratio"):
        shown[key] = f"{settings[key].value!r} ({settings[key].source})"
    shown.update({"score_mode": settings["score_mode"].value, "box_type": settings["box_type"].value})
    shown["resize"] = (f"image_shape {spec.image_shape}" if spec.image_shape is not None else
                       f"resize_long {spec.resize_long}" if spec.resize_long is not None else
                       f"limit_side_len {spec.limit_side_len}, limit_type {spec.limit_type}")
    return shown


def _tune(cache: MapCache, samples, predictor, grids: dict, jobs: Optional[int]) -> tune.TuneOutcome:
    images = [tune.TuneImage(m, samples[m.index].polys, samples[m.index].ignore) for m in cache.maps]
    base = predictor.postprocess
    if cache.on_disk:
        err_console.print(f"note: {cache.on_disk / 2**20:.0f} MB of probability maps went to disk "
                          f"({cache.in_memory / 2**20:.0f} MB kept in memory; see {MEMORY_ENV}).")
    with tune.TrialRunner(images, base, jobs or tune.default_jobs()) as runner, progress(transient=True) as bar:
        task = bar.add_task("tune (trials)", total=None)
        return tune.search(runner, grids, (base.thresh, base.box_thresh, base.unclip_ratio),
                           lambda n: bar.advance(task, n))


def _print(result: EvalResult) -> None:
    rows = [("precision", f"{result.precision:.4f}"), ("recall", f"{result.recall:.4f}"),
            ("hmean", f"{result.hmean:.4f}"), ("images", result.images)]
    if result.fps is not None:
        rows.append(("FPS", f"{result.fps:.2f}"))
    console.print(table("eval", ["metric", "value"], rows))
