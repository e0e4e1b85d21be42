"""Micro-batching: concurrent requests' network inputs run through the model together.

One inference thread owns the backend. It takes the oldest waiting input and the other waiting inputs of
the same size (as `predict` batches: no padding, so a batch gives the boxes single images give), waits up to
`max_wait` for more only while other requests are still being decoded, and runs at most `max_batch` at once.
A job whose caller gave up (timeout) is cancelled and skipped if it has not started. When the queue runs dry
after inputs larger than `idle_above` elements, `on_idle` runs on the inference thread (the service hands the
runtime's grown buffers back there).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass
class Forward:
    """One forward pass's share for one input: its (h, w) map, its share of the batch time, the batch size."""

    prob_map: np.ndarray
    seconds: float
    batch: int


@dataclass
class _Job:
    future: Future
    tensor: Optional[np.ndarray] = None  # a CHW network input, or
    call: Optional[Callable[[], Any]] = None  # work that must own the backend (a tiled image)


class MicroBatcher:
    def __init__(self, backend: Callable[[np.ndarray], np.ndarray], max_batch: int = 8, max_wait_s: float = 0.005,
                 on_batch: Optional[Callable[[int], None]] = None, on_idle: Optional[Callable[[], None]] = None,
                 idle_above: int = 0):
        self.backend = backend
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.on_batch = on_batch or (lambda size: None)
        self._jobs: deque[_Job] = deque()
        self._cv = threading.Condition()
        self._coming = 0  # requests being decoded that will submit soon: worth waiting for
        self._closed = False
        self.on_idle, self.idle_above = on_idle, idle_above
        self._largest = 0  # the largest forward input (elements) since on_idle last ran
        self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
        self._thread.start()

    # -- callers --------------------------------------------------------------------------------
    def expect(self) -> None:
        """A request started decoding: it will submit (or `unexpect`) soon."""
        with self._cv:
            self._coming += 1

    def unexpect(self) -> None:
        with self._cv:
            self._coming = max(0, self._coming - 1)
            self._cv.notify()

    def submit(self, tensor: np.ndarray, expected: bool = True) -> Future:
        """A future of this CHW input's Forward."""
        return self._put(_Job(Future(), tensor=tensor), expected)

    def submit_call(self, call: Callable[[], Any], expected: bool = True) -> Future:
        """A future of call(), run on the inference thread between batches (it may use the backend)."""
        return self._put(_Job(Future(), call=call), expected)

    def close(self) -> None:
        """Finish what was submitted, then stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()

    def _put(self, job: _Job, expected: bool) -> Future:
        with self._cv:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if expected:
                self._coming = max(0, self._coming - 1)
            self._jobs.append(job)
            self._cv.notify()
        return job.future

    # -- the inference thread -------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch[0].call is not None:
                _settle(batch[0].future, batch[0].call)
                continue
            self._forward(batch)

    def _next_batch(self) -> Optional[list[_Job]]:
        with self._cv:
            while True:
                if not self._jobs and self._coming == 0 and self._largest > self.idle_above and self.on_idle:
                    self._largest = 0
                    self._cv.release()  # run it unlocked: callers may submit meanwhile
                    try:
                        self.on_idle()
                    except Exception:  # freeing memory is best effort: the thread goes on
                        pass
                    finally:
                        self._cv.acquire()
                    continue
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if not self._jobs:
                    return None
                first = self._jobs.popleft()
                if first.future.set_running_or_notify_cancel():
                    break
            if first.call is not None:
                return [first]
            batch = [first]
            shape = first.tensor.shape
            deadline = time.perf_counter() + self.max_wait_s
            while True:
                self._take_same(batch, shape)
                left = deadline - time.perf_counter()
                if len(batch) >= self.max_batch or left <= 0 or self._coming == 0 or self._closed:
                    return batch
                self._cv.wait(left)

    def _take_same(self, batch: list[_Job], shape: tuple) -> None:
        kept: deque[_Job] = deque()
        while self._jobs:
            job = self._jobs.popleft()
            if len(batch) < self.max_batch and job.tensor is not None and job.tensor.shape == shape:
                if job.future.set_running_or_notify_cancel():
                    batch.append(job)
            else:
                kept.append(job)
        self._jobs = kept

    def _forward(self, batch: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            stacked = np.stack([job.tensor for job in batch])
            self._largest = max(self._largest, stacked.size)
            maps = self.backend(stacked)
        except Exception as exc:  # the model failed: every caller of this batch hears why
            for job in batch:
                job.future.set_exception(exc)
            return
        share = (time.perf_counter() - start) / len(batch)
        self.on_batch(len(batch))
        for job, prob in zip(batch, maps):
            job.future.set_result(Forward(prob[0], share, len(batch)))


def _settle(future: Future, call: Callable[[], Any]) -> None:
    try:
        future.set_result(call())
    except Exception as exc:
        future.set_exception(exc)
