"""The FastAPI app: POST /v1/detect, GET /v1/info, /healthz, /metrics, the try-it page at /, and FastAPI's own
/docs and /openapi.json. `create_app` builds it around a loaded Detector; `app_from_environment` is the factory
each worker process of `serve --workers N` calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
from collections.abc import Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from openocr_cli._version import __version__
from openocr_cli.api.detector import Detector
from openocr_cli.errors import first_line
from openocr_cli.serve.gate import ANY_HOST, Gate
from openocr_cli.serve.problems import RequestError
from openocr_cli.serve.prometheus import ServiceMetrics
from openocr_cli.serve.requests import FLOAT_PARAMS, PARAMS, read_detect_request
from openocr_cli.serve.service import Cancelled, DetectionService, ServeLimits

log = logging.getLogger(__name__)
ENVIRONMENT_KEY = "OPENOCR_DET_SERVE_SETUP"  # the pickled setup file the worker processes read
KEY_ENVIRONMENT_KEY = "OPENOCR_DET_SERVE_KEY"  # the API key, for the workers only: never written to a file
SUPERVISOR_KEY = "OPENOCR_DET_SERVE_SUPERVISOR"  # the supervisor's pid: a worker ends when it does
PR_SET_PDEATHSIG = 1
PAGE_CONFIG_MARK = "/*SERVER_CONFIG*/null"
PAGE_CSP = ("default-src 'none'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def create_app(detector: Detector, limits: ServeLimits = ServeLimits(), api_key: Optional[str] = None,
               cors_origins: Sequence[str] = (), allowed_hosts: Sequence[str] = (ANY_HOST,)) -> FastAPI:
    """The app; `allowed_hosts` the Host names it answers (gate.default_allowed_hosts for a bound address, "*" for
    any). An empty or blank `api_key` is a ValueError: a key that is there must protect something."""
    if api_key is not None and not api_key.strip():
        raise ValueError("the API key is empty or blank; give a key or None for no key.")
    metrics = ServiceMetrics(limits.max_batch)
    service = DetectionService(detector, limits, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, service.start)
        yield
        service.draining = True
        await loop.run_in_executor(None, service.stop)

    app = FastAPI(title="openocr-det", version=__version__, lifespan=lifespan,
                  description="OpenOCR text detection (DBNet + RepViT) as a service. POST an image to /v1/detect.")
    app.state.service = service

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = f"{exc.detail}: {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
        return JSONResponse({"error": str(message)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.post("/v1/detect", openapi_extra=DETECT_OPENAPI, summary="Detect text regions in one image",
              response_description="The boxes, as det_results.txt holds them for the same image and settings.")
    async def detect(request: Request) -> Response:
        try:
            body = await asyncio.wait_for(_detect(service, request), limits.timeout_s)
        except RequestError as exc:
            return problem(exc)
        except Cancelled:  # the server is stopping: its tiles were dropped
            return problem(RequestError(503, "the server is shutting down; retry on another instance or after it "
                                             "restarts.", {"Retry-After": "1"}))
        except TimeoutError:
            return problem(RequestError(504, f"the request took longer than {limits.timeout_s:g} s (--timeout-s) and "
                                             "was cancelled; retry later or with a smaller image."))
        except Exception as exc:  # the model or post-processing failed: the server goes on
            log.exception("detect failed")
            return problem(RequestError(500, f"detection failed: {first_line(exc)}"))
        return Response(json.dumps(body), media_type="application/json")

    @app.get("/v1/info", summary="The model, its resolved settings and the server's limits")
    async def info() -> dict:
        return service.info()

    @app.get("/healthz", summary="200 once the model is loaded and warmed up; 503 while starting or draining")
    async def healthz() -> JSONResponse:
        if service.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not service.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    page = _page(service, api_key is not None)

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"})

    app.add_middleware(Gate, service=service, metrics=metrics, api_key=api_key, allowed_hosts=allowed_hosts)
    if cors_origins:  # outside the gate: a browser's preflight carries no key
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Requested-With"])
    return app


async def _detect(service: DetectionService, request: Request) -> dict:
    """Read the body, then take a queue place (a slow upload holds none), then detect."""
    detect_request = await read_detect_request(request)
    service.admit()
    try:
        return await service.detect(detect_request)
    finally:
        service.release()


def problem(exc: RequestError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


def _page(service: DetectionService, needs_key: bool) -> str:
    """The page with the server's defaults written in (no request needed to draw the sliders)."""
    settings = service.detector.describe()
    defaults = {key: settings[key]["value"] for key in (*FLOAT_PARAMS, "box_type") if key in settings}
    config = {"defaults": defaults, "needs_key": needs_key, "max_upload_mb": service.limits.max_upload_mb,
              "model": os.path.basename(str(service.detector.resolved.model)), "version": __version__}
    text = resources.files("openocr_cli.serve").joinpath("page.html").read_text(encoding="utf-8")
    return text.replace(PAGE_CONFIG_MARK, json.dumps(config).replace("</", "<\\/"))


# -- worker processes ------------------------------------------------------------------------------
def write_setup(path: str, options, limits: ServeLimits, cors_origins: Sequence[str],
                allowed_hosts: Sequence[str]) -> None:
    """What every worker process needs to build the same app (read by app_from_environment); not the key."""
    with open(path, "wb") as f:
        pickle.dump({"options": options, "limits": limits, "cors": list(cors_origins), "hosts": list(allowed_hosts)},
                    f)


def app_from_environment() -> FastAPI:
    """uvicorn's app factory in each worker of `serve --workers N`: one model per process, loaded once."""
    _end_with_supervisor()
    with open(os.environ[ENVIRONMENT_KEY], "rb") as f:
        setup = pickle.load(f)
    detector = Detector.from_options(setup["options"])
    return create_app(detector, setup["limits"], os.environ.get(KEY_ENVIRONMENT_KEY), setup["cors"], setup["hosts"])


def _end_with_supervisor() -> None:
    """SIGTERM this worker (a drain) when its supervisor dies, even by SIGKILL: Linux's parent-death signal. If
    the supervisor is already gone, end now."""
    import ctypes
    import ctypes.util
    import signal

    supervisor = int(os.environ.get(SUPERVISOR_KEY, "0"))
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the worker outlives a killed supervisor
        return
    if supervisor and os.getppid() != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)


_PARAM_DOCS = {"thresh": "pixel threshold on the probability map", "box_thresh": "minimum box score",
               "unclip_ratio": "box expansion ratio", "box_type": "quad or poly", "tile": "off, auto or a tile side"}
DETECT_OPENAPI = {
    "parameters": [{"name": key, "in": "query", "required": False, "description": _PARAM_DOCS[key],
                    "schema": {"type": "number"} if key in FLOAT_PARAMS else {"type": "string"}} for key in PARAMS],
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"},
            **{key: {"type": "number" if key in FLOAT_PARAMS else "string"} for key in PARAMS}}}},
        "application/json": {"schema": {"type": "object", "required": ["image_base64"], "properties": {
            "image_base64": {"type": "string", "description": "the image file, base64 (a data: URL is accepted)"},
            **{key: {"type": "number" if key in FLOAT_PARAMS else "string"} for key in PARAMS}}}}}},
    "responses": {
        "200": {"description": "the detections", "content": {"application/json": {"example": {
            "detections": [{"points": [[10, 12], [96, 12], [96, 30], [10, 30]], "score": 0.912}],
            "width": 640, "height": 480,
            "timing_ms": {"decode": 2.1, "preprocess": 1.3, "queue": 0.4, "inference": 38.0, "postprocess": 1.9,
                          "total": 44.2}}}}},
        "4XX": {"description": "a refused request: {\"error\": \"...\"} names the problem"},
        "503": {"description": "busy (--max-queue): retry after Retry-After seconds"},
        "504": {"description": "over --timeout-s"}},
}
