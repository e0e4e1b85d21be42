"""Ray Data: text detection over a dataset spread across a cluster (`pip install 'openocr-det[ray]'`).

    import ray
    from ray.data import ActorPoolStrategy
    from openocr_cli.integrations.ray import RayDetector, detect_dataset

    ds = ray.data.read_binary_files("s3://bucket/scans/", include_paths=True)
    boxes = ds.map_batches(RayDetector, fn_constructor_kwargs={"model": "det.onnx", "device": "cpu"},
                           compute=ActorPoolStrategy(size=2), batch_size=16)
    boxes.write_parquet("s3://bucket/boxes/")

    boxes = detect_dataset("s3://bucket/scans/", "det.onnx", concurrency=(1, 8), num_gpus=1)  # the same, sized

`RayDetector` is Ray's stateful-actor form: the model loads once per actor, each call runs one batch through the
same predictor `Detector` uses (images batched only with others of the same network input size, so no padding),
and returns the columns of integrations/columns.py. An image that cannot be decoded gives its row with `error` set;
the batch goes on. A worker that dies is replaced and its batches run again: Ray Data's actor pools are created
with `max_restarts=-1` and `max_task_retries=-1` unless told otherwise (Ray >= 2.51; `map_options={"max_restarts":
0}` turns it off), and a block's rows are kept only from the attempt that finished, so every image is in the output
once (tests/test_ray.py kills a worker mid-run to show it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from openocr_cli.api.detector import Detector
from openocr_cli.data.images import decode_image_bytes
from openocr_cli.errors import ImageReadError, UserError
from openocr_cli.inference.resolve import DEFAULT_WEIGHTS
from openocr_cli.inference.results import Result
from openocr_cli.integrations import columns

IMAGE_COLUMNS = ("image", "bytes", "path")  # what read_images / read_binary_files / a list of paths give
DEFAULT_BATCH = {"cpu": 16, "gpu": 32}


class RayDetector:
    """`ds.map_batches(RayDetector, fn_constructor_kwargs={"model": ..., **Detector options}, compute=...)`.

    The constructor takes `Detector`'s model argument and keywords (checkpoint, registry name, .onnx, OpenVINO
    .xml; device, thresholds, tile, ...). `image_column` names the input column; by default the first of
    "image" (decoded arrays, RGB as `read_images` gives them; decode PNG/JPEG yourself or use
    `read_binary_files` to get predict's exact pixels), "bytes" (encoded files, decoded as predict decodes) and
    "path" (files read by the actor) that the batch holds. `path_column` is copied to the output's `path`
    (null without one). `batch_size` (images a forward pass, same-size images only) is Detector's default, 1,
    unless given: the floats are then the ones a default `predict` computes.
    """

    def __init__(self, model: Union[str, os.PathLike] = DEFAULT_WEIGHTS, *, image_column: Optional[str] = None,
                 path_column: str = "path", **detector_options: Any):
        self._setup(Detector(model, **detector_options), image_column, path_column)

    def _setup(self, detector: Detector, image_column: Optional[str], path_column: str) -> None:
        self.detector = detector
        self.image_column = image_column
        self.path_column = path_column

    def __call__(self, batch: dict[str, Any]):
        """A batch ({column: array}, Ray's "numpy" format) -> an Arrow table of the result columns, one row an
        input, in batch order."""
        results, names = self._detect(batch)
        rows = [columns.result_row(r, name) for r, name in zip(results, names)]
        if self.path_column not in batch:
            for row in rows:
                row["path"] = None  # image<N> numbers rows within one batch only: no name is better than a wrong one
        return columns.table(rows)

    def _detect(self, batch: dict[str, Any], keep_images: bool = False) -> tuple[list[Result], list[str]]:
        column = self._input_column(batch)
        values = list(batch[column])
        names = [str(p) for p in batch[self.path_column]] if self.path_column in batch else \
            [f"image{i}" for i in range(len(values))]
        items = [_item(value, name, column) for value, name in zip(values, names)]
        ready = [(i, item) for i, item in enumerate(items) if not isinstance(item, ImageReadError)]
        results: list[Optional[Result]] = [Result(i, names[i], error=str(item)) if isinstance(item, ImageReadError)
                                           else None for i, item in enumerate(items)]
        runs = self.detector.predictor.run((item for _, item in ready), keep_images=keep_images)
        for (i, _), result in zip(ready, runs):
            result.index = i
            results[i] = result
        return results, names  # type: ignore[return-value]

    def _input_column(self, batch: dict[str, Any]) -> str:
        if self.image_column is not None:
            if self.image_column not in batch:
                raise UserError(f"the batch has no column {self.image_column!r} (it has {', '.join(batch)}); pass "
                                "image_column= naming the images, encoded bytes or paths.", exit_code=2)
            return self.image_column
        for name in IMAGE_COLUMNS:
            if name in batch:
                return name
        raise UserError(f"the batch has none of the columns {', '.join(IMAGE_COLUMNS)} (it has "
                        f"{', '.join(batch)}); pass image_column= naming the images, encoded bytes or paths.",
                        exit_code=2)


def _item(value: Any, name: str, column: str) -> Union[str, np.ndarray, ImageReadError]:
    """One input as the predictor takes it: a path (read as predict reads it), encoded bytes decoded as predict
    decodes them, or pixels (RGB(A) as read_images gives them, turned to predict's BGR); else the error the row
    keeps."""
    try:
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return decode_image_bytes(bytes(value), name)
        array = np.asarray(value)
        if array.dtype == object or array.ndim not in (2, 3):
            return ImageReadError(f"{name}: column {column!r} holds {type(value).__name__} values, not images, "
                                  "encoded bytes or paths")
        if array.ndim == 3 and array.shape[2] in (3, 4):
            array = np.ascontiguousarray(array[..., 2::-1])
        return array
    except ImageReadError as exc:
        return exc


def detect_dataset(source: Any, model: Union[str, os.PathLike] = DEFAULT_WEIGHTS, *,
                   concurrency: Union[int, tuple[int, int], None] = None, num_gpus: float = 0,
                   num_cpus: float = 1, batch_size: Optional[int] = None, image_column: Optional[str] = None,
                   path_column: str = "path", map_options: Optional[dict[str, Any]] = None,
                   **detector_options: Any):
    """Detection over `source` (a Ray Dataset, or a path / list of paths, s3:// and gs:// too, read with
    `read_binary_files` so images decode as predict decodes them); returns the lazy dataset of result columns.

    `concurrency`: actors, or (min, max) to autoscale; default: as many as the cluster's GPUs (`num_gpus` per
    actor) or CPUs (`num_cpus` per actor) allow. `batch_size`: rows per call (default 16 on CPU, 32 on GPU; on
    GPU also the images a forward pass).
    On CPU each actor runs `num_cpus` threads; on GPU the device defaults to the actor's GPU ("cuda").
    `map_options` go to `map_batches` as they are (e.g. memory=, accelerator_type=). Paths are read by tasks that
    reserve no CPU (reading is I/O), so the actors may take every CPU without starving the reads.
    """
    import ray
    from ray.data import ActorPoolStrategy

    ds = source if isinstance(source, ray.data.Dataset) else ray.data.read_binary_files(
        [os.fspath(p) for p in _as_list(source)], include_paths=True, num_cpus=0)
    gpu = num_gpus > 0
    detector_options.setdefault("device", "cuda" if gpu else "cpu")
    if not gpu:
        detector_options.setdefault("threads", max(1, int(num_cpus)))
    batch = batch_size or DEFAULT_BATCH["gpu" if gpu else "cpu"]
    if gpu:
        detector_options.setdefault("batch_size", batch)  # a GPU wants full forward passes; a CPU does not care
    size = concurrency if concurrency is not None else default_actors(num_gpus, num_cpus)
    pool = ActorPoolStrategy(min_size=size[0], max_size=size[1]) if isinstance(size, tuple) else \
        ActorPoolStrategy(size=size)
    return ds.map_batches(RayDetector, fn_constructor_kwargs={"model": model, "image_column": image_column,
                                                              "path_column": path_column, **detector_options},
                          **map_arguments(pool, batch, num_gpus, num_cpus), **(map_options or {}))


def map_arguments(pool, batch: int, num_gpus: float, num_cpus: float) -> dict[str, Any]:
    """`map_batches` keywords shared by detect_dataset and `predict --ray`."""
    return {"compute": pool, "batch_size": batch, "batch_format": "numpy", "num_cpus": num_cpus,
            **({"num_gpus": num_gpus} if num_gpus > 0 else {})}


def default_actors(num_gpus: float = 0, num_cpus: float = 1) -> int:
    """Actors the connected cluster has room for: its GPUs / num_gpus, else its CPUs / num_cpus (at least 1)."""
    import ray

    resources = ray.cluster_resources()
    if num_gpus > 0:
        gpus = int(resources.get("GPU", 0) // num_gpus)
        if gpus < 1:
            raise UserError(f"the Ray cluster has no GPU for num_gpus={num_gpus}; pass num_gpus=0 to run on CPUs.",
                            exit_code=2)
        return gpus
    return max(1, int(resources.get("CPU", 1) // max(num_cpus, 1e-9)))


def connect(address: Optional[str] = None) -> bool:
    """Join the Ray cluster at `address` ("auto": the one this machine belongs to; "ray://host:10001": a remote
    one), or start a local one for this process when `address` is None or "local". True if this call started
    Ray (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if address in (None, "local"):
            ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise UserError(f"cannot connect to the Ray cluster at {address!r}: {exc}. Start one (`ray start --head`) or "
                        "pass its address (--ray ray://HOST:10001), or --ray local for a cluster on this machine."
                        ) from None
    return True


def _as_list(source: Any) -> Sequence[Any]:
    return [source] if isinstance(source, (str, os.PathLike)) else list(source)
