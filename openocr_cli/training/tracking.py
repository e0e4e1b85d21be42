"""Experiment tracking: TensorBoard and MLflow as subscribers of the training events, on the main process only.

`--log tensorboard` / `Global.use_tensorboard: true` writes event files to OUTPUT/tensorboard;
`--log mlflow` / `Global.use_mlflow: true` logs to MLFLOW_TRACKING_URI, else to a local ./mlruns
folder (never to a network service the user did not name; MLflow's usage telemetry stays off unless
MLFLOW_DISABLE_TELEMETRY says otherwise). Both get the same record: every loss term (smoothed, on
logging steps), lr, samples/s, data-wait share and the count of skipped non-finite steps; precision,
recall, hmean, fps and the best hmean at each evaluation, with the first evaluation images drawn
(labels green, detections in predict's colour); the config (as text for TensorBoard, flattened
params for MLflow). MLflow also keeps best.pth each time it is written and latest.pth at the end.

A resumed run continues the same records: TensorBoard writes to the same folder and hides what an
earlier process logged after the checkpoint's step; the MLflow run id is kept in latest.pth
(`tracking`, an extra key OpenOCR ignores) and that run is continued. The packages load only when a
tracker is on; a missing one is a UserError naming the pip command, raised before training starts.
A tracker that fails during the run warns once and is switched off: tracking never stops training.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlparse

import cv2
import numpy as np
import yaml

from openocr_cli.errors import UserError
from openocr_cli.log import run_logger
from openocr_cli.training.callbacks import Callback, EvalReport, StepReport
from openocr_cli.training.settings import TRACKERS, TrainSettings

if TYPE_CHECKING:
    from openocr_cli.evaluation.evaluator import ScoredImage

log = logging.getLogger(__name__)

# tracker -> (module it needs, the pip package that provides it, its display name)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard", "TensorBoard"),
    "mlflow": ("mlflow", "mlflow-skinny", "MLflow"),
}
TENSORBOARD_DIR = "tensorboard"  # under the run folder
PREVIEW_SIDE = 640  # longest side of a drawn evaluation image
LABEL_COLOR_BGR = (0, 200, 0)
DETECTION_COLOR_BGR = (255, 255, 0)  # predict's box colour (results.BOX_COLOR_BGR)
MAX_PARAM_CHARS = 500  # MLflow servers accept at least this much per param value


def require(trackers: Sequence[str]) -> None:
    """Refuse, before any work starts, a tracker whose package is not installed (a UserError naming pip)."""
    for name in trackers:
        module, package, label = PACKAGES[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a package that cannot be imported counts as missing
            found = False
        if not found:
            raise UserError(f"{label} logging (--log {name}, config {TRACKERS[name]}: true) needs the {package} "
                            f"package, which is not installed. Install it with `pip install {package}` (or "
                            "`pip install 'openocr-det[track]'` for every tracker), or train without it.")


def build_trackers(settings: TrainSettings) -> list[Tracker]:
    """One subscriber per tracker the settings turn on (attach them on the main process only)."""
    require(settings.trackers)
    kinds = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}
    return [kinds[name]() for name in settings.trackers]


class Tracker(Callback):
    """The events every tracker records; a subclass says how to write scalars, images, config and files.

    Every call into the tracker's package goes through `_guard`: the first failure is logged as a
    warning and switches the tracker off for the rest of the run.
    """

    label = ""

    def __init__(self) -> None:
        self.active = False
        self.failed = False

    # ------------------------------------------------------------------ what a tracker implements
    def open(self, trainer: Any) -> None: ...

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def image(self, tag: str, name: str, rgb: np.ndarray, step: int) -> None: ...

    def file(self, path: Path, folder: str) -> None:
        """Keep a copy of `path` (MLflow's artifacts; TensorBoard keeps no files)."""

    def close(self, status: str) -> None: ...

    # ------------------------------------------------------------------ the events
    def _guard(self, what: str, action, *args) -> None:
        if self.failed or (not self.active and what != "start"):
            return
        try:
            action(*args)
        except Exception as exc:  # tracking never stops training
            self.failed, self.active = True, False
            log.warning("%s logging failed (%s: %s: %s); training goes on without %s logging.", self.label, what,
                        type(exc).__name__, exc, self.label)
            with contextlib.suppress(Exception):
                self.close("FAILED")

    @contextlib.contextmanager
    def running(self, trainer: Any) -> Iterator[None]:
        if not trainer.role.is_main:
            yield
            return
        self._guard("start", self._start, trainer)
        status = "FAILED"
        try:
            yield
            status = "FINISHED"
        except BaseException as exc:
            from openocr_cli.training.trainer import TrainingInterrupted

            status = "KILLED" if isinstance(exc, (TrainingInterrupted, KeyboardInterrupt)) else "FAILED"
            raise
        finally:
            self._guard("end", self._end, status)

    def _start(self, trainer: Any) -> None:
        self.open(trainer)
        self.active = True

    def _end(self, status: str) -> None:
        self.active = False
        self.close(status)

    def on_step(self, trainer: Any, report: StepReport) -> None:
        self._guard(f"step {report.global_step}", self._step, trainer, report)

    def on_eval(self, trainer: Any, report: EvalReport) -> None:
        self._guard(f"evaluation at step {report.global_step}", self._eval, trainer, report)

    def on_train_end(self, trainer: Any) -> None:
        self._guard("end of training", self._train_end, trainer)

    def _step(self, trainer: Any, report: StepReport) -> None:
        values: dict[str, float] = {}
        if report.nonfinite_images is not None:
            values["train/skipped_steps"] = trainer.state.skipped_steps
        if report.smoothed is not None:
            values.update({f"train/{key}": value for key, value in report.smoothed.items()})
            values.update({"train/lr": report.lr, "train/samples_per_s": report.samples_per_s,
                           "train/data_wait": report.data_wait or 0.0,
                           "train/skipped_steps": trainer.state.skipped_steps})
        if values:
            self.scalars(values, report.global_step)

    def _eval(self, trainer: Any, report: EvalReport) -> None:
        self.scalars({"eval/precision": report.precision, "eval/recall": report.recall, "eval/hmean": report.hmean,
                      "eval/fps": report.fps or 0.0, "eval/best_hmean": report.best_hmean}, report.global_step)
        for i, scored in enumerate(report.previews):
            self.image(f"eval_images/{i}", Path(scored.sample.image).stem, draw_preview(scored), report.global_step)
        if report.improved and (trainer.output_dir / "best.pth").is_file():
            self.file(trainer.output_dir / "best.pth", "checkpoints")

    def _train_end(self, trainer: Any) -> None:
        if (trainer.output_dir / "latest.pth").is_file():
            self.file(trainer.output_dir / "latest.pth", "checkpoints")


def draw_preview(scored: ScoredImage) -> np.ndarray:
    """An evaluation image as RGB, its labels in green (thin) and the detections in predict's colour."""
    from openocr_cli.data.images import read_image

    image = read_image(scored.sample.image)
    labels = [np.asarray(p, dtype=np.int32).reshape(-1, 1, 2)
              for p, ignored in zip(scored.sample.polys, scored.sample.ignore) if not ignored]
    found = [np.asarray(d, dtype=np.int32).reshape(-1, 1, 2) for d in scored.detections]
    if labels:
        cv2.polylines(image, labels, isClosed=True, color=LABEL_COLOR_BGR, thickness=1)
    if found:
        cv2.polylines(image, found, isClosed=True, color=DETECTION_COLOR_BGR, thickness=2)
    scale = PREVIEW_SIDE / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image[..., ::-1])


def config_text(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """{"Global.epoch_num": "500", "Train.dataset.transforms.0.DecodeImage.img_mode": "BGR", ...}"""
    if isinstance(node, dict) and node:
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(node, (list, tuple)) and node and any(isinstance(v, (dict, list, tuple)) for v in node):
        out = {}
        for i, value in enumerate(node):
            out.update(flatten(value, f"{prefix}{i}."))
        return out
    text = str(list(node) if isinstance(node, tuple) else node)
    return {prefix.rstrip("."): text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS - 3] + "..."}


class TensorBoardTracker(Tracker):
    """Event files in OUTPUT/tensorboard: scalars, evaluation images, the config as text."""

    label = "TensorBoard"

    def __init__(self) -> None:
        super().__init__()
        self.writer: Any = None

    def open(self, trainer: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = trainer.output_dir / TENSORBOARD_DIR
        step = trainer.state.global_step
        # a resumed run hides what an earlier process logged after this checkpoint (a fresh run: everything)
        self.writer = SummaryWriter(str(folder), purge_step=step + 1 if step else 0)
        self.writer.add_text("config", _indented(config_text(trainer.settings.cfg)), step)
        run_logger.info("TensorBoard events: %s (tensorboard --logdir %s)", folder, folder)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def image(self, tag: str, name: str, rgb: np.ndarray, step: int) -> None:
        self.writer.add_image(f"{tag}_{name}", rgb, step, dataformats="HWC")
        self.writer.flush()

    def close(self, status: str) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()


def _indented(text: str) -> str:
    """Markdown code block (TensorBoard's text plugin renders markdown)."""
    return "\n".join("    " + line for line in text.splitlines())


class MlflowTracker(Tracker):
    """One MLflow run per training run: metrics by step, the config as params, images and checkpoints as
    artifacts. A resumed run continues the run whose id latest.pth keeps."""

    label = "MLflow"

    def __init__(self) -> None:
        super().__init__()
        self.client: Any = None
        self.run_id: Optional[str] = None

    def open(self, trainer: Any) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports to a network service
        saved = dict(trainer.state.tracking.get("mlflow") or {})
        uri = os.environ.get("MLFLOW_TRACKING_URI") or saved.get("tracking_uri") or (Path.cwd() / "mlruns").as_uri()
        if _is_local(uri):
            # MLflow 3 keeps its folder store behind this switch (it would default to sqlite, which
            # mlflow-skinny cannot open); a user's own setting wins
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = client = MlflowClient(tracking_uri=uri)
        run_id = saved.get("run_id")
        if run_id is not None:
            try:
                client.get_run(run_id)
            except Exception as exc:
                log.warning("the MLflow run %s this run logged to is not in %s (%s); logging to a new MLflow run.",
                            run_id, uri, type(exc).__name__)
                run_id = None
        resumed = run_id is not None
        if run_id is None:
            run_id = self._create_run(trainer)
        else:
            client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        record = {"run_id": run_id}
        if not os.environ.get("MLFLOW_TRACKING_URI") and _is_local(uri):
            record["tracking_uri"] = uri  # a resume from another folder finds the same local store
        trainer.state.tracking["mlflow"] = record
        self._log_config(trainer.settings.cfg, resumed)
        run_logger.info("MLflow run %s (%s) in %s", run_id, "continued" if resumed else "new", uri)

    def _create_run(self, trainer: Any) -> str:
        client = self.client
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "openocr-det"
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(name)
        run = client.create_run(experiment_id, run_name=trainer.output_dir.name,
                                tags={"openocr_det.run_dir": str(trainer.output_dir.resolve()),
                                      "mlflow.source.name": "openocr-det"})
        return run.info.run_id

    def _log_config(self, cfg: dict, resumed: bool) -> None:
        from mlflow.entities import Param

        params = flatten(cfg)
        if resumed:  # a param cannot change in MLflow: new keys as params, changed values as tags
            logged = self.client.get_run(self.run_id).data.params
            for key, value in params.items():
                if key in logged and logged[key] != value:
                    self.client.set_tag(self.run_id, f"resumed.{key}", value)
            params = {k: v for k, v in params.items() if k not in logged}
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per request
            self.client.log_batch(self.run_id, params=items[i:i + 100])
        self.client.log_text(self.run_id, config_text(cfg), "config.yml")

    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def image(self, tag: str, name: str, rgb: np.ndarray, step: int) -> None:
        self.client.log_image(self.run_id, rgb, f"eval_images/step_{step:07d}/{name}.png")

    def file(self, path: Path, folder: str) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def close(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            client, self.client = self.client, None
            client.set_terminated(self.run_id, status)


def _is_local(uri: str) -> bool:
    """A folder store: a plain path or a file: URI."""
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")
