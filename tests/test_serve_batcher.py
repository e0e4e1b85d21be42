"""The micro-batcher on its own: same-size inputs share a forward pass, others wait their turn, a cancelled
job never runs, a failing model reaches every caller of its batch."""

from __future__ import annotations

import time

import numpy as np
import pytest

from openocr_cli.serve.batcher import MicroBatcher


def echo(batch: np.ndarray) -> np.ndarray:
    """A stand-in model: the first channel back, so each caller can check it got its own map."""
    calls.append(batch.shape[0])
    return batch[:, :1]


calls: list[int] = []


def test_same_size_inputs_are_batched_in_order_and_cancelled_jobs_skipped():
    calls.clear()
    batcher = MicroBatcher(echo, max_batch=3, max_wait_s=5.0)
    for _ in range(6):
        batcher.expect()  # six requests are "being decoded": the first pass waits for its batch-mates
    small = [np.full((3, 4, 4), i, np.float32) for i in range(4)]
    big = np.full((3, 8, 8), 9, np.float32)
    futures = [batcher.submit(small[0]), batcher.submit(big), batcher.submit(small[1]), batcher.submit(small[2])]
    cancelled = batcher.submit(small[3])
    assert cancelled.cancel() or cancelled.done()
    batcher.unexpect()  # the sixth request failed to decode: nobody else is coming
    results = [f.result(timeout=30) for f in futures]
    batcher.close()
    assert [float(r.prob_map[0, 0]) for r in results] == [0.0, 9.0, 1.0, 2.0]
    assert [r.batch for r in results] == [3, 1, 3, 3] and calls == [3, 1]
    assert cancelled.cancelled()


def test_a_failing_model_fails_its_callers_and_the_thread_goes_on():
    def broken(batch):
        raise RuntimeError("out of memory")

    batcher = MicroBatcher(broken, max_batch=2, max_wait_s=0.0)
    future = batcher.submit(np.zeros((3, 4, 4), np.float32), expected=False)
    with pytest.raises(RuntimeError, match="out of memory"):
        future.result(timeout=30)
    assert batcher.submit_call(lambda: 42, expected=False).result(timeout=30) == 42
    batcher.close()


def test_D2_on_idle_runs_once_a_burst_of_large_inputs_is_over():
    import threading

    idle = threading.Event()
    runs = []
    batcher = MicroBatcher(echo, max_batch=4, max_wait_s=0.0, on_idle=lambda: (runs.append(1), idle.set()),
                           idle_above=3 * 4 * 4)
    batcher.submit(np.zeros((3, 4, 4), np.float32), expected=False).result(timeout=30)  # one small input: no
    assert not idle.wait(0.3)
    batcher.submit(np.zeros((3, 8, 8), np.float32), expected=False).result(timeout=30)  # a large one: yes, once
    assert idle.wait(30)
    time.sleep(0.3)
    batcher.close()
    assert runs == [1]
