"""Load a model file in a background thread while the command line is still importing and parsing.

A short `predict` on OpenVINO spends about half a second before its first image: Python imports (one core,
holding the GIL) and OpenVINO compiling the graph (C++, without the GIL). The CLI's entry point knows the
model file from argv before anything heavy is imported: it reads the file at once and hands the compile to
`begin`, so the compile runs on the second core while the imports run on the first. The backend's own loader
then takes the prepared model (`take`) when its arguments match exactly, else loads as usual. A file the
prestart could not read is refused (`refuse`): the loader raises that error rather than reading it again. A
compile that fails is forgotten: the regular load runs again and reports the problem itself.

Standard library only: the entry point imports this before anything else.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Hashable
from typing import Optional


class _Job:
    """A load running in a daemon thread (`load`), or one that already failed with a clear `error`."""

    def __init__(self, load: Optional[Callable[[], object]] = None, error: Optional[BaseException] = None):
        self.result: Optional[object] = None
        self.error = error
        self.thread = None if load is None else threading.Thread(target=self._run, args=(load,), name="prestart",
                                                                  daemon=True)

    def _run(self, load: Callable[[], object]) -> None:
        try:
            self.result = load()
        except BaseException:  # the regular load repeats the work and reports the error
            self.result = None


def load_key(backend: str, path: object, *settings: object) -> str:
    """The key a prestart and the backend's loader agree on: the backend, the file (absolute) and the settings
    its load depends on."""
    return json.dumps([backend, os.path.abspath(os.path.expanduser(str(path))), *settings])


_jobs: dict[Hashable, _Job] = {}
_lock = threading.Lock()


def begin(key: Hashable, load: Callable[[], object]) -> None:
    """Run `load()` in a daemon thread; `take(key)` collects what it returned."""
    job = _Job(load=load)
    with _lock:
        _jobs[key] = job
    job.thread.start()


def refuse(key: Hashable, error: BaseException) -> None:
    """Record that loading under `key` already failed with `error` (a clear message for the user): `take` raises
    it, so the file is not read a second time (OpenVINO's readers print to stderr on every attempt)."""
    with _lock:
        _jobs[key] = _Job(error=error)


def take(key: Hashable) -> Optional[object]:
    """What the prestart under `key` loaded (waiting for it to finish), or None when there was none or it failed;
    a refused load raises its error. Each prestart is taken once."""
    with _lock:
        job = _jobs.pop(key, None)
    if job is None:
        return None
    if job.error is not None:
        raise job.error
    job.thread.join()
    return job.result


def pending() -> list[Hashable]:
    """Keys begun and not yet taken (tests)."""
    with _lock:
        return list(_jobs)
