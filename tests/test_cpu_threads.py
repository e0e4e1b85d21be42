"""Torch threads on a busy CPU: the count left free by the load, at least one, never more than usable."""

from __future__ import annotations

import os

import pytest

from openocr_cli.inference import cpu_threads


@pytest.mark.parametrize("cpus, load_avg, expected", [
    (2, 0.1, 2), (2, 0.9, 2), (2, 1.4, 1), (2, 33.0, 1), (8, 3.2, 5), (8, 0.0, 8), (2, None, 2), (1, 5.0, 1),
])
def test_free_threads(cpus, load_avg, expected):
    assert cpu_threads.free_threads(cpus, load_avg) == expected


def test_fit_lowers_torch_threads_only_when_the_cpu_is_busy(monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 2)
        monkeypatch.setattr(cpu_threads, "load", lambda: 0.2)
        assert cpu_threads.fit_torch_threads(torch) is None and torch.get_num_threads() == 2
        monkeypatch.setattr(cpu_threads, "load", lambda: 3.0)
        note = cpu_threads.fit_torch_threads(torch)
        assert torch.get_num_threads() == 1
        assert "1 thread(s) instead of 2" in note and "load average 3.0" in note and "--threads N" in note
    finally:
        torch.set_num_threads(before)


def test_usable_cpus_follow_the_affinity():
    if hasattr(os, "sched_getaffinity"):
        assert cpu_threads.usable_cpus() == len(os.sched_getaffinity(0))
