"""`train` and `resume`: fine-tuning from Python, on the same code path as `openocr-det train` / `resume`.

    import openocr_cli
    run = openocr_cli.train(data_dir="data", train_label="data/train.txt", eval_label="data/test.txt",
                            weights="none", epochs=50, device="cpu", output="runs/a")
    print(run.best_hmean, run.best_epoch, run.best_path)
    run = openocr_cli.resume("runs/a", epochs=80)

The keywords are the command line's options (training/options.py declares each once, with its flag;
settings.TRAIN_FLAGS says which config key each one writes); the run folder gets the same files (latest.pth,
best.pth, config.yml, train.log, metrics.jsonl, results.png). Nothing is printed: `progress=True` shows
train.log's lines and the library's warnings on stderr, `callbacks` (training.callbacks.Callback) see every
event, and otherwise the notes and warnings go to the "openocr_cli" logger. Errors are UserError with the
command line's messages; an unknown keyword is a TypeError naming the nearest one. A Ctrl-C (SIGINT) or
SIGTERM ends the current step, saves latest.pth and raises TrainingInterrupted.

Multi-process training stays with the command: `openocr-det train --gpus 0,1` launches torchrun; these
functions train in this process only (the plumbing is training/jobs.py).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

from openocr_cli.option_table import check_keywords, flags_of
from openocr_cli.training.jobs import TrainResult, plan_resume, plan_train, run_job
from openocr_cli.training.options import TrainOptions, option_names
from openocr_cli.training.settings import RESUME_FLAGS

if TYPE_CHECKING:
    from openocr_cli.training.callbacks import Callback

PathLike = Union[str, os.PathLike]
__all__ = ["TrainResult", "resume", "train"]


def train(data_dir: Optional[PathLike] = None, train_label: Any = None, eval_label: Any = None, *,
          progress: bool = False, callbacks: Sequence[Callback] = (), **options: Any) -> TrainResult:
    """Fine-tune the detector, as `openocr-det train` does; returns where the run ended.

    `train_label` / `eval_label` take one label file or a list; `weights` a .pth, a model name
    ("repvit") or "none" (or False) to train from scratch, None keeping the config's. `config` is an
    OpenOCR-style YAML (default: the packaged repvit_db.yml), `overrides` a list of "Key.sub=value"
    strings or a {"Key.sub": value} mapping (the command's -o). Unset options keep the config's values.
    `skip_bad` trains on the usable label lines (the others are logged); `overwrite` starts over in an
    `output` folder that holds a run. `progress=True` shows train.log's lines on stderr. `cache` is the
    decode cache of the training images ("none", "ram" or "disk"; None keeps Train.dataset.cache).
    `log` turns experiment trackers on: "tensorboard", "mlflow" or both in a list (the command's --log;
    training.tracking says what they record and where); a resumed run keeps logging to the same records.

    Like the command, this keeps the memory a step frees for the next one (training.allocator: glibc's
    allocator is told so for this whole process).
    """
    check_keywords(options, TRAIN_KEYWORDS, "train()")
    job = plan_train(TrainOptions(data_dir=data_dir, train_label=train_label, eval_label=eval_label, **options))
    return run_job(job, callbacks, progress)


def resume(target: Optional[PathLike] = None, *, progress: bool = False, callbacks: Sequence[Callback] = (),
           **options: Any) -> TrainResult:
    """Continue a stopped run exactly where it stopped, as `openocr-det resume` does.

    `target` is the run folder or its latest.pth (None: the newest run under ./output). Only `epochs`,
    `device`, `workers`, `eval_every`, `save_every`, `patience`, `min_delta` and `cache` may change, and `log` may add
    a tracker (the run's own trackers go on logging to the same records). A run that had already finished
    returns at once with `already_finished` set.
    """
    check_keywords(options, RESUME_FLAGS, "resume()")
    job = plan_resume(target, TrainOptions(**options))
    return run_job(job, callbacks, progress)


TRAIN_KEYWORDS = tuple(name for name in option_names() if name not in ("data_dir", "train_label", "eval_label"))


def _keywords_from_table(function: Any, names: Sequence[str]) -> None:
    """Give `function` a signature with every option `names` of the table as a keyword (for help() and IDEs)."""
    table = flags_of(TrainOptions)
    head = [p for p in inspect.signature(function).parameters.values() if p.kind != p.VAR_KEYWORD]
    tail = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=table[name][0].default,
                              annotation=table[name][0].type) for name in names]
    function.__signature__ = inspect.Signature(head + tail)


_keywords_from_table(train, TRAIN_KEYWORDS)
_keywords_from_table(resume, RESUME_FLAGS)
