"""One worker's detection service: a loaded Detector, its decode threads and its micro-batcher.

A request's image is sized from its header and checked against the request's budgets (tiles, decoded pixels in
flight), decoded in a thread (uploads.py), resized and normalised exactly as `predict` does, run through the
model with other requests' images (batcher.py), and post-processed in a thread with its own settings, so the
boxes are the ones det_results.txt holds for the same file and settings. A PDF's pages run one after another,
each rendered as `predict doc.pdf` renders it and answered with its page number. A tiled image sends its tiles through
the same batcher a batch at a time, so other requests run between them, and stops at the next batch once its
request is cancelled (timeout or shutdown).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from openocr_cli.api.detector import Detector
from openocr_cli.inference.predictor import Predictor
from openocr_cli.inference.results import detections_json
from openocr_cli.inference.tiling import TileSettings, grid
from openocr_cli.postprocess import DBPostProcess, reading_order
from openocr_cli.serve import uploads
from openocr_cli.serve.batcher import Forward, MicroBatcher
from openocr_cli.serve.memory import default_pixels_in_flight, return_free_memory
from openocr_cli.serve.problems import RequestError
from openocr_cli.serve.prometheus import ServiceMetrics
from openocr_cli.serve.requests import DetectRequest, postprocess_for, tiling_for

WARM_UP_SIZE = (480, 640)  # a blank page, run once before /healthz says ready
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class ServeLimits:
    """What one worker accepts: see `openocr-det serve --help` for each."""

    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_upload_mb: float = 20.0
    max_pixels: int = 50_000_000
    max_pages: int = 20
    timeout_s: float = 30.0
    decode_threads: int = 2
    max_tiles: int = 256
    max_pixels_in_flight: Optional[int] = None  # None: from the machine's memory (serve/memory.py)
    read_timeout_s: float = 10.0
    min_upload_kbps: float = 64.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def pixels_in_flight_budget(self) -> int:
        if self.max_pixels_in_flight is not None:
            return int(self.max_pixels_in_flight)
        return default_pixels_in_flight(self.max_pixels)


class Cancelled(Exception):
    """A request's remaining tiles were dropped (its timeout passed or the server is stopping)."""


@dataclass
class _Prepared:
    size: tuple[int, int]  # (h, w) of the decoded image
    tensor: np.ndarray
    decode_s: float
    preprocess_s: float


class _Reservation:
    """An image's pixels in the budget, released once (by whichever thread finishes with them)."""

    def __init__(self, service: DetectionService, pixels: int):
        self.service, self.pixels, self._done = service, pixels, threading.Lock()

    def release(self, *_: Any) -> None:
        if self._done.acquire(blocking=False):
            self.service._unreserve(self.pixels)


class DetectionService:
    def __init__(self, detector: Detector, limits: ServeLimits, metrics: ServiceMetrics):
        self.detector = detector
        self.predictor: Predictor = detector.predictor
        self.limits = limits
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(max(1, limits.decode_threads), thread_name_prefix="decode")
        self.tiler = ThreadPoolExecutor(1, thread_name_prefix="tiles")  # one tiled image at a time
        self.batcher: Optional[MicroBatcher] = None
        self.pixel_budget = limits.pixels_in_flight_budget
        self.inflight = 0
        self.pixels_in_flight = 0
        self.ready = False
        self.draining = False
        self._cancels: set[threading.Event] = set()
        self._pixels_lock = threading.Lock()

    # -- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the inference thread and run one blank page through everything (first-call costs paid)."""
        blank = np.full((*WARM_UP_SIZE, 3), 255, np.uint8)
        tensor, src_hw, _ = self.predictor.network_input(blank)
        # after a burst (inputs larger than two pages), the runtime's grown buffers go back: RSS returns near idle
        self.batcher = MicroBatcher(self.predictor.backend, self.limits.max_batch, self.limits.max_wait_ms / 1000,
                                    on_batch=self.metrics.batch_size.observe, on_idle=self._release_memory,
                                    idle_above=2 * tensor.size)
        forward = self.batcher.submit(tensor, expected=False).result()
        self.predictor.postprocess(forward.prob_map, *src_hw)
        self.ready = True

    def stop(self) -> None:
        """Drop every tiled request's remaining tiles, finish what the model has, stop the threads."""
        self.draining = True
        for cancel in list(self._cancels):
            cancel.set()
        if self.batcher is not None:
            self.batcher.close()
        self.tiler.shutdown(wait=True)
        self.pool.shutdown(wait=True)

    # -- admission (once the body is read: a slow client holds no place) -----------------------------
    def admit(self) -> None:
        """Take a place in the bounded queue, or RequestError 503 when it is full."""
        if self.inflight >= self.limits.max_queue:
            raise RequestError(503, f"the server is busy ({self.limits.max_queue} requests queued, --max-queue); "
                                    "retry after the Retry-After seconds.", {"Retry-After": str(RETRY_AFTER_S)})
        self.inflight += 1
        self.metrics.queue_depth.set(self.inflight)

    def release(self) -> None:
        self.inflight -= 1
        self.metrics.queue_depth.set(self.inflight)

    def _reserve(self, pixels: int) -> _Reservation:
        """Count an image's decoded pixels in flight, or 503 when they would pass the budget (one image alone
        always fits: --max-pixels already bounds it). Released when the thread holding the pixels is done."""
        with self._pixels_lock:
            if self.pixels_in_flight and self.pixels_in_flight + pixels > self.pixel_budget:
                raise RequestError(503, f"the server is busy: {self.pixels_in_flight:,} decoded pixels are in flight "
                                        f"and this image's {pixels:,} would pass the limit of {self.pixel_budget:,} "
                                        "(--max-pixels-in-flight); retry after the Retry-After seconds.",
                                   {"Retry-After": str(RETRY_AFTER_S)})
            self.pixels_in_flight += pixels
        return _Reservation(self, pixels)

    def _release_memory(self) -> None:
        release = getattr(self.predictor.backend, "release_memory", None)
        if release is not None:
            release()
        return_free_memory()

    def _unreserve(self, pixels: int) -> None:
        with self._pixels_lock:
            self.pixels_in_flight -= pixels
            idle = self.pixels_in_flight == 0
        if idle and not self.draining:  # a burst is over: hand the freed pages back
            return_free_memory()

    # -- detection -----------------------------------------------------------------------------
    async def detect(self, request: DetectRequest) -> dict[str, Any]:
        """The response body for one image, or for each page of a PDF."""
        start = time.perf_counter()
        post = postprocess_for(self.predictor.postprocess, request.params)
        tiling = tiling_for(self.predictor.tile, self.detector.options.tile_overlap, request.params)
        if uploads.is_pdf(request.data):
            return await self._detect_pdf(request.data, post, tiling, start)
        loop = asyncio.get_running_loop()
        width, height = await loop.run_in_executor(self.pool, uploads.image_size, request.data, self.limits.max_pixels)
        if tiling.enabled:
            self._check_tiles(height, width, tiling)
        load = functools.partial(uploads.decode, request.data, self.limits.max_pixels)
        return await self._detect_one(load, width * height, post, tiling, start)

    async def _detect_pdf(self, data: bytes, post: DBPostProcess, tiling: TileSettings,
                          start: float) -> dict[str, Any]:
        """Each page in order, one at a time (memory is one page's whatever the count), within --max-pages and,
        each, --max-pixels and --max-tiles; a page reserves its own pixels in the budget, read from the PDF before
        it is rendered."""
        loop = asyncio.get_running_loop()
        dpi, max_pixels = self.predictor.pdf_dpi, self.limits.max_pixels
        with uploads.PdfUpload(data, self.limits.max_pages) as upload:
            count = await loop.run_in_executor(self.pool, upload.count)
            pages = []
            for number in range(1, count + 1):
                began = time.perf_counter()
                height, width = await loop.run_in_executor(self.pool, upload.size, number, dpi, max_pixels)
                if tiling.enabled:
                    self._check_tiles(height, width, tiling, f"page (page {number} of the PDF)")
                load = functools.partial(upload.page, number, dpi, max_pixels)
                page = await self._detect_one(load, height * width, post, tiling, began)
                pages.append({"page": number, **page})
        return {"pages": pages, "page_count": count,
                "timing_ms": {"total": round((time.perf_counter() - start) * 1000, 2)}}

    async def _detect_one(self, load: Callable[[], np.ndarray], pixels: int, post: DBPostProcess,
                          tiling: TileSettings, start: float) -> dict[str, Any]:
        reservation = self._reserve(pixels)
        if tiling.enabled:
            return await self._detect_tiled(load, post, tiling, reservation, start)
        return await self._detect_whole(load, post, reservation, start)

    def _check_tiles(self, h: int, w: int, tiling: TileSettings, what: str = "image") -> None:
        count = len(grid(h, w, tiling.side, tiling.overlap)[1])  # auto tiles at most as many
        if count > self.limits.max_tiles:
            raise RequestError(422, f"tile={tiling.side} on this {w}x{h} {what} is {count:,} tiles, over the server's "
                                    f"limit of {self.limits.max_tiles:,} per request (--max-tiles); use a larger tile "
                                    "or a smaller image.")

    async def _detect_whole(self, load: Callable[[], np.ndarray], post: DBPostProcess, reservation: _Reservation,
                            start: float) -> dict[str, Any]:
        """Decode and resize in a decode thread (the pixels are released when it is done, even if the request
        was cancelled meanwhile), then one forward pass with other requests' images."""
        loop = asyncio.get_running_loop()
        batcher = self.batcher
        batcher.expect()
        job = self.pool.submit(self._prepare, load)
        job.add_done_callback(reservation.release)
        try:
            prepared = await asyncio.wrap_future(job)
        except BaseException:
            batcher.unexpect()
            raise
        (h, w), submitted = prepared.size, time.perf_counter()
        forward: Forward = await asyncio.wrap_future(batcher.submit(prepared.tensor))
        queue = max(0.0, time.perf_counter() - submitted - forward.seconds * forward.batch)
        began = time.perf_counter()
        detections = await loop.run_in_executor(self.pool, post, forward.prob_map, h, w)
        if self.predictor.reading_order:
            detections = reading_order(detections)
        times = {"decode": prepared.decode_s, "preprocess": prepared.preprocess_s, "queue": queue,
                 "inference": forward.seconds, "postprocess": time.perf_counter() - began}
        return self._answer(detections, h, w, times, start, {"batch": forward.batch})

    async def _detect_tiled(self, load: Callable[[], np.ndarray], post: DBPostProcess, tiling: TileSettings,
                            reservation: _Reservation, start: float) -> dict[str, Any]:
        """Decode and run the tiles on the tile thread; a cancelled request stops at its next tile."""
        cancel = threading.Event()
        self._cancels.add(cancel)
        submitted = time.perf_counter()
        job = self.tiler.submit(self._tiled, load, post, tiling, cancel)
        job.add_done_callback(reservation.release)
        try:
            decode_s, result = await asyncio.wrap_future(job)
        finally:
            cancel.set()
            self._cancels.discard(cancel)
        h, w = result.src_hw
        inference, postprocess = result.times.inference, result.times.postprocess
        queue = max(0.0, time.perf_counter() - submitted - decode_s - inference - postprocess)
        times = {"decode": decode_s, "preprocess": 0.0, "queue": queue, "inference": inference,
                 "postprocess": postprocess}
        return self._answer(result.detections, h, w, times, start,
                            {"tiling": result.tiling} if result.tiling is not None else {})

    def _answer(self, detections, h: int, w: int, times: dict[str, float], start: float, extra: dict) -> dict:
        self.metrics.images.inc()
        timing = {**times, "total": time.perf_counter() - start}
        return {"detections": detections_json(detections), "width": w, "height": h,
                "timing_ms": {k: round(v * 1000, 2) for k, v in timing.items()}, **extra}

    def _prepare(self, load: Callable[[], np.ndarray]) -> _Prepared:
        """Decode and resize: only the network input is kept (the full-size pixels are freed here)."""
        start = time.perf_counter()
        image = load()
        decoded = time.perf_counter()
        tensor = self.predictor.network_input(image)[0]
        return _Prepared(image.shape[:2], tensor, decoded - start, time.perf_counter() - decoded)

    def _tiled(self, load: Callable[[], np.ndarray], post: DBPostProcess, tiling: TileSettings,
               cancel: threading.Event):
        """(decode seconds, the tiled result): the tiles one at a time through the shared batcher, so other
        requests run between them and a cancelled request (Cancelled) stops at its next tile."""
        if cancel.is_set():
            raise Cancelled("the request was cancelled before its tiles started")
        start = time.perf_counter()
        image = load()
        decode_s = time.perf_counter() - start
        self._check_tiles(*image.shape[:2], tiling)  # a PDF page's size is known only now
        batcher = self.batcher

        def forward(batch: np.ndarray) -> np.ndarray:
            if cancel.is_set():
                raise Cancelled("the request's remaining tiles were cancelled")
            futures = [batcher.submit(tensor, expected=False) for tensor in batch]
            return np.stack([future.result().prob_map[None] for future in futures])

        predictor = self.predictor.replace(backend=forward, postprocess=post, batch_size=1, workers=1, tile=tiling)
        return decode_s, next(iter(predictor.run([image])))

    def info(self) -> dict[str, Any]:
        limits = self.limits
        return {"model": self.detector.resolved.model, "backend": self.detector.backend,
                "settings": self.detector.describe(),
                "limits": {"max_batch": limits.max_batch, "max_wait_ms": limits.max_wait_ms,
                           "max_queue": limits.max_queue, "max_upload_mb": limits.max_upload_mb,
                           "max_pixels": limits.max_pixels, "max_pages": limits.max_pages,
                           "timeout_s": limits.timeout_s,
                           "max_tiles": limits.max_tiles, "max_pixels_in_flight": self.pixel_budget,
                           "read_timeout_s": limits.read_timeout_s, "min_upload_kbps": limits.min_upload_kbps}}
