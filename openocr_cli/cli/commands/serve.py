"""`openocr-det serve`: the detector as an HTTP service with a page to try it (the work is in openocr_cli.serve)."""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Optional

import typer

from openocr_cli.cli import options as opt
from openocr_cli.cli.ui import err_console, warn
from openocr_cli.errors import UserError

API_KEY_ENV = "OPENOCR_DET_API_KEY"
EXTRA_HINT = "pip install 'openocr-det[serve]'"


@opt.inference_command(without=("batch_size", "workers", "fuse", "max_pixels"))
def serve(
    options: opt.InferenceOptions,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on. The default answers this machine only; 0.0.0.0 listens on every "
                       "interface (put a reverse proxy with TLS in front, and use --api-key).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port, printed).")] = 8000,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, help="Worker processes, one model each, sharing the port.")] = 1,
    max_batch: Annotated[int, typer.Option(
        "--max-batch", min=1, help="At most this many same-size images from concurrent requests per forward "
                                   "pass.")] = 8,
    max_wait_ms: Annotated[float, opt.float_option(
        "--max-wait-ms", min=0, help="How long a forward pass waits for more requests to batch with, while some "
                                     "are still being decoded.")] = 5.0,
    max_queue: Annotated[int, typer.Option(
        "--max-queue", min=1, help="Detect requests admitted at once per worker; more get 503 with Retry-After "
                                   "at once.")] = 64,
    max_upload_mb: Annotated[float, opt.float_option(
        "--max-upload-mb", min=0.001, help="Largest request body; larger ones get 413 before being read.")] = 20.0,
    max_pixels: Annotated[float, opt.float_option(
        "--max-pixels", min=1, help="Largest image, in pixels, read from the file's header; larger ones get 413 "
                                    "without being decoded (decompression bombs).")] = 50e6,
    max_pages: Annotated[int, typer.Option(
        "--max-pages", min=1, help="Most pages of an uploaded PDF; longer ones get 413 before any page is "
                                   "rendered. Pages run one at a time, each within --max-pixels.")] = 20,
    timeout_s: Annotated[float, opt.float_option(
        "--timeout-s", min=0.001, help="Per request; a slower one gets 504 and its work is cancelled.")] = 30.0,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", envvar=API_KEY_ENV, show_envvar=True,
        help="Require `Authorization: Bearer KEY` on /v1/* and /metrics (401 otherwise). Prefer the environment "
             "variable: a flag shows in the process list.")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(
        "--cors-origin", help="Allow browser pages from this origin to call the API (repeatable; none by "
                              "default).")] = None,
    allowed_hosts: Annotated[Optional[list[str]], typer.Option(
        "--allowed-hosts", help="Answer requests whose Host header is this name (repeatable; `*` for any). Default: "
                                "the --host address, localhost and 127.0.0.1; others get 421 (DNS rebinding).")] = None,
    max_tiles: Annotated[int, typer.Option(
        "--max-tiles", min=1, help="Most tiles one tiled request may run; more get 422 before decoding.")] = 256,
    max_pixels_in_flight: Annotated[Optional[float], opt.float_option(
        "--max-pixels-in-flight", min=1, help="Decoded pixels of all requests in flight per worker; a request over "
                                              "it gets 503 with Retry-After. Default: a quarter of the machine's "
                                              "memory at 16 bytes a pixel.")] = None,
    read_timeout_s: Annotated[float, opt.float_option(
        "--read-timeout-s", min=0.1, help="A request's headers must arrive within this (else the connection is "
                                          "closed), and its body gets this long before --min-upload-kbps "
                                          "applies.")] = 10.0,
    min_upload_kbps: Annotated[float, opt.float_option(
        "--min-upload-kbps", min=0.001, help="Slowest average upload accepted after --read-timeout-s; slower "
                                             "bodies get 408.")] = 64.0,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request (uvicorn's access log).")]
    = False,
    decode_threads: Annotated[int, typer.Option(
        "--decode-threads", min=1, help="Threads per worker decoding, resizing and post-processing.")] = 2,
) -> None:
    """Serve the detector over HTTP: POST /v1/detect, a try-it page at /, /healthz, /metrics, /docs.

    Each request's boxes are what det_results.txt holds for the same image and settings; a request may change
    thresh, box_thresh, unclip_ratio, box_type and tile. Concurrent requests are micro-batched; SIGTERM or
    Ctrl+C stops accepting, finishes the requests in flight and exits 0.

    Examples:

      openocr-det serve --onnx-model det_int8.onnx --threads 2

      curl -F image=@page.jpg http://127.0.0.1:8000/v1/detect

      curl -F image=@report.pdf http://127.0.0.1:8000/v1/detect    # {"pages": [{"page": 1, ...}, ...]}

      OPENOCR_DET_API_KEY=secret openocr-det serve --weights best.pth --host 0.0.0.0 --workers 2 --threads 1
    """
    try:
        from openocr_cli.serve.server import serve as run_server
        from openocr_cli.serve.service import ServeLimits
    except ImportError as exc:
        raise UserError(f"serve needs {exc.name}: {EXTRA_HINT}") from None

    if api_key is None and API_KEY_ENV in os.environ:  # an empty variable reaches here as no key: fail closed
        api_key = os.environ[API_KEY_ENV]
    if api_key is not None and not api_key.strip():
        raise UserError(f"--api-key / {API_KEY_ENV} is empty; give a key or unset it.", exit_code=2)
    if not _loopback(host) and api_key is None:
        warn(f"serving on {host} without --api-key: anyone who can reach this port can use the detector.")
    if not _loopback(host) and not allowed_hosts:
        warn(f"only requests with Host {host}, localhost or 127.0.0.1 are answered (421 otherwise); add "
             "--allowed-hosts NAME for the name clients use.")
    limits = ServeLimits(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                         max_upload_mb=max_upload_mb, max_pixels=int(max_pixels), max_pages=max_pages,
                         timeout_s=timeout_s, decode_threads=decode_threads, max_tiles=max_tiles,
                         max_pixels_in_flight=None if max_pixels_in_flight is None else int(max_pixels_in_flight),
                         read_timeout_s=read_timeout_s, min_upload_kbps=min_upload_kbps)
    options = options.replace(workers=decode_threads, batch_size=max_batch, max_pixels=int(max_pixels))

    def listening(url: str) -> None:
        err_console.print(f"openocr-det serving on {url} (page: {url}/, API docs: {url}/docs); Ctrl+C to stop",
                          markup=False, highlight=False, soft_wrap=True)

    def ready() -> None:
        err_console.print("ready: model loaded and warmed up", markup=False, highlight=False, soft_wrap=True)

    try:
        run_server(options, limits, host=host, port=port, workers=workers, api_key=api_key,
                   cors_origins=cors_origin or (), allowed_hosts=allowed_hosts, access_log=access_log,
                   on_listening=listening, on_ready=ready)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Choose another --port or --host.") \
            from None
    err_console.print("stopped: requests in flight were answered", markup=False, highlight=False, soft_wrap=True)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
