"""Prometheus metrics of the service: requests by endpoint and status, latency, queue depth, batch sizes.

One registry per app (tests and embedders may build several). With several worker processes
(PROMETHEUS_MULTIPROC_DIR set by `serve --workers N`), every worker writes its values to that folder and
`/metrics` adds them up, whichever worker answers.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
ENDPOINTS = ("/v1/detect", "/v1/info", "/healthz", "/metrics", "/")


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch: int):
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        # in multiprocess mode the values live in files (registry None: registered nowhere), collected at scrape time
        self._registry = None if self.multiprocess else CollectorRegistry()
        own = {"registry": self._registry}
        self.requests = Counter("openocr_det_requests", "HTTP requests answered, by endpoint and status.",
                                ["endpoint", "status"], **own)
        self.latency = Histogram("openocr_det_request_seconds", "Time from request to response, by endpoint.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, **own)
        self.queue_depth = Gauge("openocr_det_queue_depth", "Detect requests admitted and not yet answered.",
                                 multiprocess_mode="livesum", **own)
        self.batch_size = Histogram("openocr_det_batch_size", "Images per forward pass.",
                                    buckets=tuple(range(1, max(max_batch, 1) + 1)), **own)
        self.images = Counter("openocr_det_images", "Images detected.", **own)

    def observe(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"  # client-chosen paths never become labels
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        if self._registry is not None:
            return generate_latest(self._registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
