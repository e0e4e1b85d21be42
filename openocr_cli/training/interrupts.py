"""Ctrl-C and SIGTERM during training: deferred to the end of the current step, so latest.pth is written from a
consistent state; a second Ctrl-C interrupts at once."""

from __future__ import annotations

import contextlib
import signal

from openocr_cli.log import run_logger


class _StopFlag:
    requested = False


@contextlib.contextmanager
def deferred_interrupts():
    """SIGINT/SIGTERM set a flag the loop checks after each step; a second SIGINT interrupts at once."""
    flag = _StopFlag()

    def handler(signum, frame):
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested = True
        run_logger.warning("stop requested (signal %d): finishing the current step and saving latest.pth", signum)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals stay as they are
        pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
