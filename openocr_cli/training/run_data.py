"""The samples a training run uses: training labels validated and checked once, evaluation labels loaded.

Validation reads every image, so it runs once, in the launching process. For a distributed
run the result is handed to the workers as a file in the run folder (its path in
OPENOCR_DET_VALIDATED_DATA), so the ranks neither repeat the work nor fail one by one.

Nothing is printed: the check's report goes to the run's subscribers (`on_data_checked`; the
command shows it as check-data's table), its advice and the skipped lines are logged as warnings.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openocr_cli.data.dataset import select_by_ratio, validate_training_labels
from openocr_cli.data.doctor import check_data
from openocr_cli.data.labels import MAX_REPORTED_PROBLEMS, LabelSample, check_data_dir, load_labels
from openocr_cli.errors import UserError
from openocr_cli.fileio import atomic_write_text, why_not_a_file
from openocr_cli.training.callbacks import Callback, notify, within
from openocr_cli.training.settings import TrainSettings

log = logging.getLogger(__name__)

VALIDATED_ENV = "OPENOCR_DET_VALIDATED_DATA"


@dataclass
class RunData:
    """What the trainer needs from the data side: validated training samples and eval samples."""

    train: list[LabelSample]
    eval: list[LabelSample] = field(default_factory=list)

    def save(self, folder: Path) -> Path:
        """Write the samples for the workers of this launch (a name of its own: launchers may share a folder)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f".validated_labels.{os.getpid()}.json"
        payload = {"train": [_sample_dict(s) for s in self.train], "eval": [_sample_dict(s) for s in self.eval]}
        atomic_write_text(path, json.dumps(payload))
        return path

    @classmethod
    def load(cls, path: Path) -> RunData:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls([_sample(d) for d in payload["train"]], [_sample(d) for d in payload["eval"]])


def _sample_dict(s: LabelSample) -> dict:
    return {"key": s.key, "image": str(s.image), "polys": [p.tolist() for p in s.polys], "texts": s.texts,
            "ignore": s.ignore, "source": s.source, "line": s.line}


def _sample(d: dict) -> LabelSample:
    return LabelSample(d["key"], Path(d["image"]), [np.asarray(p, np.float32) for p in d["polys"]], d["texts"],
                       d["ignore"], d["source"], d["line"])


def run_data(settings: TrainSettings, skip_bad: bool, callbacks: Sequence[Callback] = ()) -> RunData:
    """The validated data a worker was handed by its launcher, else validate it here."""
    handed = os.environ.get(VALIDATED_ENV)
    if handed and Path(handed).is_file():
        return RunData.load(Path(handed))
    return load_run_data(settings, skip_bad, callbacks)


def load_run_data(settings: TrainSettings, skip_bad: bool, callbacks: Sequence[Callback] = ()) -> RunData:
    """Validate the training labels once (every problem as file:line) and load the eval labels.

    `callbacks` see the check (`checking_data()` around it, then `on_data_checked(report)`); the report's
    advice, and with `skip_bad` the skipped lines, are logged as warnings. Unusable lines without
    `skip_bad`, missing files and an empty result are UserErrors.
    """
    source = settings.train_data
    files, data_dir = source.label_files, source.data_dir
    missing = [p for p in files if not p.is_file()]
    if not files or missing:
        what = f"label file {missing[0]} {why_not_a_file(missing[0])}" if missing else "no training label file"
        raise UserError(f"training data not found: {what}. Pass --data-dir DIR and --train-label FILE "
                        "(PaddleOCR format: image path, TAB, JSON list of {transcription, points}), or run "
                        "`make demo` to try training on generated data.")
    check_data_dir(files, data_dir, source.origin)
    evaluation = settings.eval_data
    missing = [p for p in evaluation.label_files if not p.is_file()]
    if missing:
        raise UserError(f"evaluation label file {missing[0]} {why_not_a_file(missing[0])}. Pass --eval-label FILE, or "
                        "-o Eval.dataset.label_file_list=[] to train without evaluation.")
    check_data_dir(evaluation.label_files, evaluation.data_dir, evaluation.origin)  # before the long check
    with within(callbacks, "checking_data"):
        checked = validate_training_labels(files, data_dir)
        report = check_data(files, data_dir, settings.cfg, seed=settings.seed, checked=checked)
    notify(callbacks, "on_data_checked", report)  # its problems are listed by the refusal below
    for message in report.warnings:
        log.warning("%s", message)
    if checked.problems:
        shown = "\n".join(f"  {p}" for p in checked.problems[:MAX_REPORTED_PROBLEMS if skip_bad else None])
        if not skip_bad:
            raise UserError(f"{len(checked.problems)} training label line(s) cannot be used:\n{shown}\n"
                            "Fix them, or pass --skip-bad to train on the other lines.")
        log.warning("--skip-bad: skipped %d bad label line(s), training on %d:\n%s", len(checked.problems),
                    len(checked.samples), shown)
    if not checked.samples:
        raise UserError("no usable training samples remain.")
    per_file = [[s for s in checked.samples if s.source == str(f)] for f in files]
    train = select_by_ratio(per_file, source.ratios, settings.seed)

    eval_samples = []
    if evaluation.label_files:
        eval_samples = load_labels(evaluation.label_files, evaluation.data_dir, check_images=True)
    else:
        log.warning("no evaluation labels (--eval-label): no metric and no best.pth will be produced.")
    return RunData(train, eval_samples)
