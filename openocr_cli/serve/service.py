"""One worker's detection service: a loaded Detector, its decode threads and its micro-batcher.

A request's image is checked and decoded in a thread (uploads.py), resized and normalised exactly as `predict`
does, run through the model with other requests' images (batcher.py), and post-processed in a thread with its
own settings, so the boxes are the ones det_results.txt holds for the same file and settings.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from openocr_cli.api.detector import Detector
from openocr_cli.inference.predictor import Predictor
from openocr_cli.inference.results import detections_json
from openocr_cli.inference.tiling import TileSettings
from openocr_cli.postprocess import DBPostProcess
from openocr_cli.serve import uploads
from openocr_cli.serve.batcher import Forward, MicroBatcher
from openocr_cli.serve.prometheus import ServiceMetrics
from openocr_cli.serve.requests import DetectRequest, postprocess_for, tiling_for

WARM_UP_SIZE = (480, 640)  # a blank page, run once before /healthz says ready


@dataclass(frozen=True)
class ServeLimits:
    """What one worker accepts: see `openocr-det serve --help` for each."""

    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_upload_mb: float = 20.0
    max_pixels: int = 50_000_000
    timeout_s: float = 30.0
    decode_threads: int = 2

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass
class _Prepared:
    image: np.ndarray
    tensor: Optional[np.ndarray]
    decode_s: float
    preprocess_s: float


class DetectionService:
    def __init__(self, detector: Detector, limits: ServeLimits, metrics: ServiceMetrics):
        self.detector = detector
        self.predictor: Predictor = detector.predictor
        self.limits = limits
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(max(1, limits.decode_threads), thread_name_prefix="decode")
        self.batcher: Optional[MicroBatcher] = None
        self.inflight = 0
        self.ready = False
        self.draining = False

    # -- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the inference thread and run one blank page through everything (first-call costs paid)."""
        self.batcher = MicroBatcher(self.predictor.backend, self.limits.max_batch, self.limits.max_wait_ms / 1000,
                                    on_batch=self.metrics.batch_size.observe)
        blank = np.full((*WARM_UP_SIZE, 3), 255, np.uint8)
        tensor, src_hw, _ = self.predictor.network_input(blank)
        forward = self.batcher.submit(tensor, expected=False).result()
        self.predictor.postprocess(forward.prob, *src_hw)
        self.ready = True

    def stop(self) -> None:
        self.draining = True
        if self.batcher is not None:
            self.batcher.close()
        self.pool.shutdown(wait=True)

    # -- admission (the gate calls these before the body is read) ----------------------------------
    def admit(self) -> bool:
        """Take a place in the bounded queue, or False when it is full (the caller answers 503 at once)."""
        if self.inflight >= self.limits.max_queue:
            return False
        self.inflight += 1
        self.metrics.queue_depth.set(self.inflight)
        return True

    def release(self) -> None:
        self.inflight -= 1
        self.metrics.queue_depth.set(self.inflight)

    # -- detection -----------------------------------------------------------------------------
    async def detect(self, request: DetectRequest) -> dict[str, Any]:
        """The response body for one image."""
        start = time.perf_counter()
        post = postprocess_for(self.predictor.postprocess, request.params)
        tiling = tiling_for(self.predictor.tile, self.detector.options.tile_overlap, request.params)
        loop = asyncio.get_running_loop()
        batcher = self.batcher
        batcher.expect()
        try:
            prepared = await loop.run_in_executor(self.pool, self._prepare, request.data, not tiling.enabled)
        except BaseException:
            batcher.unexpect()
            raise
        h, w = prepared.image.shape[:2]
        submitted = time.perf_counter()
        if tiling.enabled:
            result = await asyncio.wrap_future(batcher.submit_call(lambda: self._tiled(prepared.image, post, tiling)))
            waited = time.perf_counter() - submitted
            detections, inference, postprocess = result.detections, result.times.inference, result.times.postprocess
            extra = {"tiling": result.tiling} if result.tiling is not None else {}
            queue = max(0.0, waited - inference - postprocess)
        else:
            forward: Forward = await asyncio.wrap_future(batcher.submit(prepared.tensor))
            queue = max(0.0, time.perf_counter() - submitted - forward.seconds * forward.batch)
            began = time.perf_counter()
            detections = await loop.run_in_executor(self.pool, post, forward.prob, h, w)
            inference, postprocess, extra = forward.seconds, time.perf_counter() - began, {"batch": forward.batch}
        self.metrics.images.inc()
        timing = {"decode": prepared.decode_s, "preprocess": prepared.preprocess_s, "queue": queue,
                  "inference": inference, "postprocess": postprocess, "total": time.perf_counter() - start}
        return {"detections": detections_json(detections), "width": w, "height": h,
                "timing_ms": {k: round(v * 1000, 2) for k, v in timing.items()}, **extra}

    def _prepare(self, data: bytes, network_input: bool) -> _Prepared:
        start = time.perf_counter()
        image = uploads.decode(data, self.limits.max_pixels)
        decoded = time.perf_counter()
        tensor = self.predictor.network_input(image)[0] if network_input else None
        return _Prepared(image, tensor, decoded - start, time.perf_counter() - decoded)

    def _tiled(self, image: np.ndarray, post: DBPostProcess, tiling: TileSettings):
        """A tiled image on the inference thread (tiles are batched among themselves, not with others)."""
        predictor = self.predictor.replace(postprocess=post, batch_size=self.limits.max_batch, workers=1, tile=tiling)
        return next(iter(predictor.run([image])))

    def info(self) -> dict[str, Any]:
        limits = self.limits
        return {"model": self.detector.resolved.model, "backend": self.detector.backend,
                "settings": self.detector.describe(),
                "limits": {"max_batch": limits.max_batch, "max_wait_ms": limits.max_wait_ms,
                           "max_queue": limits.max_queue, "max_upload_mb": limits.max_upload_mb,
                           "max_pixels": limits.max_pixels, "timeout_s": limits.timeout_s}}
