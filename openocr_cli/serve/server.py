"""Running the app with uvicorn: one process, or N worker processes sharing one listening socket.

The socket is bound before anything starts (so `--port 0` works and the real port is reported), the model is
loaded once in the main process first (a bad model is a clean error, not a traceback in every worker), and
SIGTERM / SIGINT drain: uvicorn stops accepting, finishes the requests in flight, then the process exits 0.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Optional

import uvicorn

from openocr_cli.api.detector import Detector
from openocr_cli.inference.options import InferenceOptions
from openocr_cli.serve.app import ENVIRONMENT_KEY, create_app, write_setup
from openocr_cli.serve.prometheus import MULTIPROCESS_ENV
from openocr_cli.serve.service import ServeLimits

DRAIN_GRACE_S = 5.0  # beyond --timeout-s, how long a drain waits for the last responses


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]):
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self._on_ready()


def serve(options: InferenceOptions, limits: ServeLimits, *, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1, api_key: Optional[str] = None, cors_origins: Sequence[str] = (),
          access_log: bool = False, on_listening: Callable[[str], None] = lambda url: None,
          on_ready: Callable[[], None] = lambda: None) -> None:
    """Serve until SIGTERM / SIGINT. `on_listening(url)` once the socket is bound (the real port), `on_ready()`
    once a single process has warmed up (with several workers, /healthz tells)."""
    detector = Detector.from_options(options)  # every model error surfaces here, before the socket opens
    # log_config None: uvicorn's loggers propagate to the process's logging instead of uvicorn installing handlers
    # bound to whatever sys.stderr is at that moment (in-process callers, tests, notebooks)
    if access_log:  # uvicorn's access lines are INFO records of "uvicorn.access"
        _log_access_lines()
    common = {"host": host, "port": port, "log_level": "info" if access_log else "warning", "log_config": None,
              "access_log": access_log, "lifespan": "on",
              "timeout_graceful_shutdown": int(limits.timeout_s + DRAIN_GRACE_S), "server_header": False}
    if workers == 1:
        config = uvicorn.Config(create_app(detector, limits, api_key, cors_origins), **common)
        _serve_one(config, on_listening, on_ready)
        return
    del detector
    scratch = tempfile.mkdtemp(prefix="openocr-det-serve-")
    try:
        setup = os.path.join(scratch, "setup.pickle")
        write_setup(setup, options, limits, api_key, cors_origins)
        metrics_dir = os.path.join(scratch, "metrics")
        os.mkdir(metrics_dir)
        os.environ[ENVIRONMENT_KEY] = setup
        os.environ[MULTIPROCESS_ENV] = metrics_dir
        config = uvicorn.Config("openocr_cli.serve.app:app_from_environment", factory=True, workers=workers, **common)
        _serve_many(config, on_listening)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _log_access_lines() -> None:
    access = logging.getLogger("uvicorn.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access.addHandler(handler)
    access.propagate = False


def _serve_one(config: uvicorn.Config, on_listening: Callable[[str], None], on_ready: Callable[[], None]) -> None:
    sock = _bind(config.host, config.port)
    on_listening(_url(config, sock))
    with _exit_quietly():
        _Server(config, on_ready).run(sockets=[sock])


def _serve_many(config: uvicorn.Config, on_listening: Callable[[str], None]) -> None:
    from uvicorn.supervisors import Multiprocess

    sock = _bind(config.host, config.port)
    on_listening(_url(config, sock))
    # older uvicorn releases take the worker's target; newer ones build it from the config
    takes_target = "target" in inspect.signature(Multiprocess).parameters
    extra = {"target": uvicorn.Server(config).run} if takes_target else {}
    with _exit_quietly():
        Multiprocess(config, sockets=[sock], **extra).run()


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket (OSError when the address is taken or not ours; uvicorn's own binding would exit)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url(config: uvicorn.Config, sock) -> str:
    host = config.host if ":" not in config.host else f"[{config.host}]"
    return f"http://{host}:{sock.getsockname()[1]}"


class _exit_quietly:
    """uvicorn re-raises the signal that stopped it once it has drained; with these handlers in place that
    re-raise does nothing, so a drained server exits 0 instead of dying by the signal."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self._saved = {sig: signal.signal(sig, lambda *_: None) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        return False
