"""The ASGI layer in front of the app: what is refused before a request body is read.

- the API key (`Authorization: Bearer KEY`) on /v1/* and /metrics (401);
- a body over --max-upload-mb: refused from its Content-Length (413) before reading, and a body without one
  (chunked) is cut off as soon as it passes the limit;
- load shedding: a detect request that finds --max-queue requests already admitted gets 503 with Retry-After
  at once, so latency cannot grow without bound;
- every answer counted and timed for /metrics.
"""

from __future__ import annotations

import hmac
import time
from typing import Optional

from openocr_cli.serve.problems import RequestError
from openocr_cli.serve.prometheus import ServiceMetrics
from openocr_cli.serve.service import DetectionService

DETECT_PATH = "/v1/detect"
RETRY_AFTER_S = 1


def protected(path: str) -> bool:
    return path.startswith("/v1/") or path == "/metrics"


class Gate:
    def __init__(self, app, service: DetectionService, metrics: ServiceMetrics, api_key: Optional[str]):
        self.app = app
        self.service = service
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, counted_send)
        finally:
            self.metrics.observe(scope["path"], status[0], time.perf_counter() - start)

    async def _handle(self, scope, receive, send):
        path = scope["path"]
        if self.api_key is not None and protected(path) and not self._authorised(scope):
            await respond(send, RequestError(401, "this server needs an API key: send `Authorization: Bearer KEY` "
                                                  "(the key given to serve with --api-key or OPENOCR_DET_API_KEY).",
                                             {"WWW-Authenticate": "Bearer"}))
            return
        if path != DETECT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        limit = self.service.limits.max_upload_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await respond(send, too_large(declared, limit, self.service.limits.max_upload_mb))
            return
        if self.service.draining:
            await respond(send, RequestError(503, "the server is shutting down; retry on another instance or after "
                                                  "it restarts.", {"Retry-After": str(RETRY_AFTER_S)}))
            return
        if not self.service.admit():
            await respond(send, RequestError(503, f"the server is busy ({self.service.limits.max_queue} requests "
                                                  "queued, --max-queue); retry after the Retry-After seconds.",
                                             {"Retry-After": str(RETRY_AFTER_S)}))
            return
        try:
            await self.app(scope, _limited(receive, limit, self.service.limits.max_upload_mb), send)
        finally:
            self.service.release()

    def _authorised(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)
        return False


def too_large(size: int, limit: int, max_mb: float) -> RequestError:
    return RequestError(413, f"the body is {size:,} bytes, over the server's limit of {limit:,} bytes ({max_mb:g} MB, "
                             "--max-upload-mb); it was not read. Send a smaller file.")


def _content_length(scope) -> Optional[int]:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _limited(receive, limit: int, max_mb: float):
    """receive() that raises a 413 RequestError once more than `limit` body bytes have arrived."""
    seen = [0]

    async def wrapped():
        message = await receive()
        if message["type"] == "http.request":
            seen[0] += len(message.get("body", b""))
            if seen[0] > limit:
                raise RequestError(413, f"the body passed the server's limit of {max_mb:g} MB (--max-upload-mb); "
                                        "reading stopped there. Send a smaller file.")
        return message

    return wrapped


async def respond(send, problem: RequestError) -> None:
    """A JSON error answer straight from the gate."""
    body = problem.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
