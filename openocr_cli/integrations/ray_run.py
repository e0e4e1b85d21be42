"""`predict SRC --ray [ADDRESS]`: predict's run (run.json, resume, det_results.txt in input order, vis/) with the
images detected by Ray Data actors instead of this process.

`RayPool` has the interface of inference/devices.py's DevicePool, so cli/commands/predict_scale.py's LargeRun
drives it the same way: `stream(items)` yields (Result, encoded drawing or None) in input order. The inputs go
to the cluster as paths (numbered), so every node must see SRC at the same path (a shared filesystem; object
storage goes through `detect_dataset`). Each row comes back with its number; rows are put back in input order
here, and a number seen twice (it cannot be: a retried batch replaces its failed attempt) would be an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Optional

from openocr_cli.api.detector import Detector
from openocr_cli.errors import UserError
from openocr_cli.inference.options import InferenceOptions
from openocr_cli.inference.results import Result, StageTimes
from openocr_cli.inference.run_folder import encode_vis
from openocr_cli.integrations import columns
from openocr_cli.integrations import ray as ray_data


def _run_columns() -> dict:
    import pyarrow as pa

    return {"index": pa.int64(), "drawing": pa.binary(), "times": pa.list_(pa.float64())}


class RunActor(ray_data.RayDetector):
    """A RayDetector on predict's options that also returns each row's input number, stage times and, when
    predict draws, the encoded drawing."""

    def __init__(self, options: InferenceOptions, draw: bool):
        self._setup(Detector.from_options(options), "path", "path")
        self.draw = draw

    def __call__(self, batch: dict[str, Any]):
        results, names = self._detect(batch, keep_images=self.draw)
        rows = []
        for result, name, index in zip(results, names, batch["index"]):
            row = columns.result_row(result, name)
            t = result.times
            row.update(index=int(index), times=[t.preprocess, t.inference, t.postprocess],
                       drawing=encode_vis(result) if self.draw and result.error is None else None)
            rows.append(row)
        return columns.table(rows, _run_columns())


def quiet() -> None:
    """predict shows its own progress: Ray Data's progress bars, its INFO lines and its note that the bars are off
    are not shown (Ray's own warnings still are)."""
    import logging

    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    DataContext.get_current().enable_progress_bars = False


class RayPool:
    """Ray joined (or started) and the model checked here on construction; `stream` runs the items on actors."""

    def __init__(self, options: InferenceOptions, address: Optional[str], vis: bool):
        try:
            import ray.data  # noqa: F401
        except ImportError:
            raise UserError("--ray needs Ray Data: pip install 'openocr-det[ray]'.", exit_code=2) from None
        gpu = str(options.device or "").startswith("cuda")  # one GPU an actor: Ray hands each its own as cuda
        self.options = options.replace(device="cuda" if gpu else options.device or "cpu")
        self.num_gpus = 1 if gpu else 0
        detector = Detector.from_options(self.options.replace(device="cpu") if gpu else self.options)
        self.settings = detector.describe()  # a bad model fails here, before any cluster work
        if gpu:
            self.settings["device"] = {"value": "cuda", "source": self.settings["device"]["source"]}
        del detector
        self.vis = vis
        self.started = ray_data.connect(address)

    def stream(self, items: Iterable[str]) -> Iterator[tuple[Result, Optional[bytes]]]:
        import ray
        from ray.data import ActorPoolStrategy

        quiet()
        paths = list(items)  # the listing is held here: about 100 bytes an image
        if not paths:
            return
        gpu = self.num_gpus > 0
        options = self.options
        if not gpu and options.threads is None:
            options = options.replace(threads=1)
        # rows per call; the forward pass keeps --batch-size, so the floats are the ones a local run computes
        batch = max(options.batch_size, ray_data.DEFAULT_BATCH["gpu" if gpu else "cpu"])
        actors = max(1, min(ray_data.default_actors(self.num_gpus), -(-len(paths) // batch)))
        ds = ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(paths)],
                                 override_num_blocks=max(1, -(-len(paths) // batch)))
        out = ds.map_batches(RunActor, fn_constructor_args=(options, self.vis),
                             **ray_data.map_arguments(ActorPoolStrategy(size=actors), batch, self.num_gpus, 1))
        pending: dict[int, tuple[Result, Optional[bytes]]] = {}
        done = 0
        for part in out.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in part.to_pylist():
                index = row["index"]
                if index < done or index in pending:
                    raise UserError(f"Ray returned {paths[index]} twice; the results so far are kept: run the same "
                                    "command with --resume to finish.")
                result = columns.row_result(row, index)
                if result.error is None:
                    result.times = StageTimes(1, *row["times"])
                pending[index] = (result, row["drawing"])
            while done in pending:
                yield pending.pop(done)
                done += 1
        if done != len(paths):
            raise UserError(f"Ray returned {done} of {len(paths)} images; the results so far are kept: run the same "
                            "command with --resume to finish.")

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False
