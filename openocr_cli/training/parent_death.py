"""Tie a process to its parent's life on Linux: when the parent dies, even by SIGKILL, this process is sent a signal.

`train --nproc-per-node` starts torchrun in a session of its own (so that a Ctrl-C reaches it only through us);
killed hard, our process would leave torchrun and every worker training on, unseen, with all the CPUs. So the
torchrun child (torchrun_child.py) ends with its parent, and each worker with torchrun: SIGTERM, which a worker treats
as a stop request (the step finishes, latest.pth is saved). Elsewhere than Linux this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Optional

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_parent(expected_parent: Optional[int] = None, sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel for `sig` when the parent dies; True when that is in place. If the parent is already gone
    (it is not `expected_parent`, or it changed while asking), `sig` is raised at once."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):  # no C library to ask (a static or unusual build)
        return False
    if os.getppid() != parent or (expected_parent is not None and parent != expected_parent):
        os.kill(os.getpid(), sig)  # the parent died before the request was in place
    return True


def expected_parent(variable: str) -> Optional[int]:
    """The pid a parent wrote into `variable` of the environment before starting this process (None: not set)."""
    value = os.environ.get(variable, "")
    return int(value) if value.isdigit() else None
