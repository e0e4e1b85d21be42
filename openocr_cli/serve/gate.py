"""The ASGI layer in front of the app: what is refused before a request body is read, and how fast it must come.

- the Host header must name this server (--allowed-hosts; 400 without one, 421 for another name), so a web page
  whose DNS name was rebound to 127.0.0.1 cannot reach a local server;
- a POST from a browser (it sends `Origin`) must carry a header a cross-site form cannot send (`Authorization`,
  `X-Requested-With` or a JSON Content-Type), else 403: any page a user visits cannot post images to the model;
- the API key (`Authorization: Bearer KEY`) on /v1/* and /metrics (401);
- a body over --max-upload-mb: refused from its Content-Length (413) before reading, and a body without one
  (chunked) is cut off as soon as it passes the limit;
- a body arriving slower than --min-upload-kbps (after --read-timeout-s of grace) gets 408, so a trickling
  client cannot hold a connection; the queue place (--max-queue) is taken only once the body is read (app.py);
- every answer counted and timed for /metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Sequence
from typing import Optional

from openocr_cli.serve.problems import RequestError
from openocr_cli.serve.prometheus import ServiceMetrics
from openocr_cli.serve.service import RETRY_AFTER_S, DetectionService

DETECT_PATH = "/v1/detect"
ANY_HOST = "*"
# headers a cross-site HTML form cannot set (each makes a browser ask the server first, which CORS answers)
NON_SIMPLE = (b"authorization", b"x-requested-with")


def protected(path: str) -> bool:
    return path.startswith("/v1/") or path == "/metrics"


def default_allowed_hosts(bound: str) -> list[str]:
    """The bound address, localhost and 127.0.0.1 (and ::1): what a browser on this machine puts in Host."""
    return list(dict.fromkeys([bound, "localhost", "127.0.0.1", "::1"]))


class Gate:
    def __init__(self, app, service: DetectionService, metrics: ServiceMetrics, api_key: Optional[str],
                 allowed_hosts: Sequence[str] = (ANY_HOST,)):
        self.app = app
        self.service = service
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key is not None else None
        self.any_host = ANY_HOST in allowed_hosts
        self.allowed_hosts = {_host_name(h.encode()) for h in allowed_hosts}

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
        headers = dict(scope["headers"])
        refusal = self._host_refusal(headers.get(b"host"))
        if refusal is None and scope["method"] == "POST" and b"origin" in headers and not _non_simple(headers):
            refusal = RequestError(403, "a browser POST must carry an `X-Requested-With` header (or Authorization, "
                                        "or a JSON body): a cross-site form cannot reach the model.")
        if refusal is None and self.api_key is not None and protected(path) and not self._authorised(headers):
            refusal = RequestError(401, "this server needs an API key: send `Authorization: Bearer KEY` (the key "
                                        "given to serve with --api-key or OPENOCR_DET_API_KEY).",
                                   {"WWW-Authenticate": "Bearer"})
        if refusal is not None:
            await respond(send, refusal)
            return
        if path != DETECT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        limits = self.service.limits
        declared = _content_length(headers)
        if declared is not None and declared > limits.max_upload_bytes:
            await respond(send, too_large(declared, limits.max_upload_bytes, limits.max_upload_mb))
            return
        if self.service.draining:
            await respond(send, RequestError(503, "the server is shutting down; retry on another instance or after "
                                                  "it restarts.", {"Retry-After": str(RETRY_AFTER_S)}))
            return
        await self.app(scope, _limited(receive, limits.max_upload_bytes, limits.max_upload_mb, limits.read_timeout_s,
                                       limits.min_upload_kbps * 1024), send)

    def _host_refusal(self, host: Optional[bytes]) -> Optional[RequestError]:
        if self.any_host:
            return None
        if not host:
            return RequestError(400, "the request has no Host header; send the name of this server.")
        if _host_name(host) not in self.allowed_hosts:
            return RequestError(421, f"Host {host.decode('latin-1')!r} is not one this server answers to; start it "
                                     "with --allowed-hosts NAME to allow the name clients use.")
        return None

    def _authorised(self, headers: dict) -> bool:
        value = headers.get(b"authorization")
        if value is None:
            return False
        scheme, _, token = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)


def _host_name(host: bytes) -> str:
    """'Example.com:8000' -> 'example.com', '[::1]:80' -> '::1', '::1' -> '::1'."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text


def _non_simple(headers: dict) -> bool:
    kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return any(name in headers for name in NON_SIMPLE) or kind == b"application/json"


def too_large(size: int, limit: int, max_mb: float) -> RequestError:
    return RequestError(413, f"the body is {size:,} bytes, over the server's limit of {limit:,} bytes ({max_mb:g} MB, "
                             "--max-upload-mb); it was not read. Send a smaller file.")


def _content_length(headers: dict) -> Optional[int]:
    try:
        return int(headers[b"content-length"])
    except (KeyError, ValueError):
        return None


def _limited(receive, limit: int, max_mb: float, grace_s: float, min_rate: float):
    """receive() that raises a 413 RequestError once more than `limit` body bytes have arrived, and a 408 once
    the body is behind `grace_s` + bytes / `min_rate` seconds since the first read."""
    seen = [0]
    started = time.monotonic()
    complete = [False]

    async def wrapped():
        if complete[0]:  # the body is in: later calls wait for a disconnect, with no deadline
            return await receive()
        deadline = started + grace_s + seen[0] / min_rate
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise RequestError(408, f"the body arrived slower than {min_rate / 1024:g} KB/s (--min-upload-kbps, "
                                    f"after {grace_s:g} s, --read-timeout-s); reading stopped.",
                               {"Connection": "close"}) from None
        if message["type"] == "http.request":
            complete[0] = not message.get("more_body", False)
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
