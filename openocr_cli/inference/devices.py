"""One worker process per device over one input list (`predict --devices cuda:0,cuda:1`).

Each worker (multiprocessing spawn: no CUDA state is forked) builds its own predictor for its device and takes
chunks of inputs from one shared queue, so a faster device simply takes more chunks. Results come back per
chunk with the drawing already encoded; the parent yields them in input order, keeping at most two chunks per
device in flight, so memory is bounded whatever the number of inputs. A worker exits when the parent
disappears (killed with SIGKILL), and a worker that dies is an error naming its device, not a hang.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Optional

from openocr_cli.errors import UserError
from openocr_cli.inference.options import InferenceOptions
from openocr_cli.inference.resolve import describe_settings, resolve
from openocr_cli.inference.results import Result
from openocr_cli.inference.run_folder import encode_vis

READY_TIMEOUT_S = 600.0  # a model load (download aside) that takes longer is stuck


class DevicePool:
    """Workers started and loaded on construction; `stream(items)` yields (Result, encoded drawing or None)
    in input order. `settings` is the first worker's Detector.describe(); `resize` / `tile_enabled` its
    predictor's, for the command's small-text note."""

    def __init__(self, options: InferenceOptions, devices: list[str], vis: bool):
        ctx = mp.get_context("spawn")
        self._tasks = ctx.Queue()
        self._results = ctx.Queue()
        self.devices = devices
        self.chunk = max(16, 4 * options.batch_size)
        self._procs = [ctx.Process(target=_worker, name=f"openocr-det predict {device}", daemon=True,
                                   args=(options.replace(device=device), device, vis, self._tasks, self._results,
                                         os.getpid()))
                       for device in devices]
        self._closed = False
        for proc in self._procs:
            proc.start()
        try:
            ready = [self._get(READY_TIMEOUT_S) for _ in devices]
        except BaseException:
            self.close()
            raise
        first = ready[0][2]
        self.settings: dict[str, dict] = first["settings"]
        self.resize = first["resize"]
        self.tile_enabled: bool = first["tile"]

    def stream(self, items: Iterable[Any]) -> Iterator[tuple[Result, Optional[bytes]]]:
        source = iter(items)
        sent = done = start = 0
        pending: dict[int, list] = {}
        window = 2 * len(self._procs)

        def submit() -> bool:
            nonlocal sent, start
            chunk = list(islice(source, self.chunk))
            if not chunk:
                return False
            self._tasks.put((sent, start, chunk))
            sent, start = sent + 1, start + len(chunk)
            return True

        more = True
        while more and sent < window:
            more = submit()
        while done < sent:
            _, chunk_id, results = self._get()
            pending[chunk_id] = results
            while done in pending:
                yield from pending.pop(done)
                done += 1
                if more:
                    more = submit()

    def _get(self, timeout: Optional[float] = None) -> tuple:
        """The next message from a worker; a worker's error or death becomes a UserError naming its device."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                message = self._results.get(timeout=1.0)
            except queue.Empty:
                for device, proc in zip(self.devices, self._procs):
                    if not proc.is_alive():
                        raise UserError(f"the predict worker on {device} stopped (exit code {proc.exitcode}); the "
                                        "results so far are kept: run the same command with --resume to finish."
                                        ) from None
                if deadline is not None and time.monotonic() > deadline:
                    raise UserError(f"the predict workers did not load the model within {timeout:.0f} s.") from None
                continue
            if message[0] == "error":
                _, device, text, code = message
                raise UserError(f"--devices {device}: {text}", exit_code=code)
            return message

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._procs:
            self._tasks.put(None)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self._tasks.close()
        self._results.close()

    def __enter__(self) -> DevicePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _worker(options: InferenceOptions, device: str, vis: bool, tasks, results, parent: int) -> None:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    try:
        resolved = resolve(options)
        predictor = resolved.predictor(options)
        results.put(("ready", device, {"settings": describe_settings(resolved.settings), "resize": predictor.resize,
                                       "tile": predictor.tile.enabled}))
        while (task := tasks.get()) is not None:
            chunk_id, start, items = task
            out = []
            for result in predictor.run(items, keep_images=vis):
                drawing = encode_vis(result) if vis and result.error is None else None
                result.index, result.image, result.prob = start + result.index, None, None
                out.append((result, drawing))
            results.put(("done", chunk_id, out))
    except UserError as exc:
        results.put(("error", device, str(exc), exc.exit_code))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # reported by the parent as one line naming the device
        results.put(("error", device, f"{type(exc).__name__}: {exc}", 1))


def _exit_with_parent(parent: int) -> None:
    """A worker must not outlive a parent killed with SIGKILL (it would hold its GPU forever)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
