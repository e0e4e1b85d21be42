"""How many CPU threads torch should use on a machine other processes keep busy.

Torch starts one intra-op thread per core and its threads spin while they wait for each other: when
other processes hold the cores, every operation waits for the slowest thread to be scheduled and
throughput collapses far below a fair share (benchmarks/bench_threads.py measures it). So unless the
caller sets the count (--threads), a run on the CPU uses the cores this process may run on
(os.sched_getaffinity) minus the ones other work holds (the 1-minute load average, or the tasks runnable
right now when fewer), at least one.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Optional


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's cpuset), else the CPU count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load() -> Optional[float]:
    """Other work on the CPUs: the 1-minute load average, or the processes runnable right now when fewer (a
    run that just ended, e.g. the previous command, still weighs in the average but holds no CPU)."""
    try:
        average = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    now = _runnable_now()
    return average if now is None else min(average, now)


def _runnable_now(samples: int = 5) -> Optional[float]:
    """Median over ~20 ms of the runnable tasks /proc/loadavg counts, this process excluded (Linux only)."""
    counts = []
    for n in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return None
        if n < samples - 1:
            time.sleep(0.005)
    return float(statistics.median(counts))


def free_threads(cpus: int, load_avg: Optional[float]) -> int:
    """The CPUs no whole unit of load takes, at least 1; all of them when the load is unknown."""
    if load_avg is None:
        return cpus
    return max(1, min(cpus, cpus - int(load_avg)))


def fit_torch_threads(torch, flag: str = "--threads N") -> Optional[str]:
    """Lower torch's intra-op threads to what the machine has free now; the note to show, or None when
    nothing changed. `torch` is the module (passed in: this module loads without it)."""
    current, cpus, load_avg = torch.get_num_threads(), usable_cpus(), load()
    threads = min(current, free_threads(cpus, load_avg))
    if threads >= current:
        return None
    torch.set_num_threads(threads)
    return (f"note: torch runs {threads} thread(s) instead of {current} ({cpus} CPU(s) usable, load average "
            f"{load_avg:.1f}: other processes are using the CPU); {flag} sets the count.")
