"""Batched detection over a stream of images: decode + resize in threads, forward, post-process.

Images are batched only with others of the same network input size, so a batch gives exactly
the boxes single-image inference gives (no padding artefacts). Results come back in input order.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Union

import numpy as np

from openocr_cli import config as cfgmod
from openocr_cli.data.images import ImageLimits, ImageReadError, read_image
from openocr_cli.data.pdf import DEFAULT_PDF_DPI
from openocr_cli.data.pixels import as_bgr
from openocr_cli.data.resize import Normalizer, ResizeSpec, resize_for_test
from openocr_cli.inference import tiling
from openocr_cli.inference.results import Result, StageTimes
from openocr_cli.inference.tiling import Probes, TileSettings, probe_inputs, probe_reason, tile_boxes, tiled_detections
from openocr_cli.postprocess import DBPostProcess, Detection, make_postprocess, reading_order

# a file path, or pixels (a BGR uint8 ndarray, a PIL image)
Input = Union[str, "os.PathLike[str]", Any]


class Backend(Protocol):
    """A forward pass: a normalised NCHW float32 batch in, (N, 1, H, W) probabilities out (torch or onnxruntime).

    Declared here, torch-free, so that the ONNX path never imports PyTorch.
    """

    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class _Prepared:
    index: int
    path: Optional[str]
    tensor: Optional[np.ndarray] = None
    src_hw: tuple[int, int] = (0, 0)
    image: Optional[np.ndarray] = None
    error: Optional[str] = None
    seconds: float = 0.0
    probes: Optional[Probes] = None  # --tile off with probe: full-resolution crops for the small-text warning


@dataclass(frozen=True, eq=False)
class Predictor:
    """One value: the model and every stage around it. A variant (another batch size, resize or post-processing)
    is `predictor.replace(...)`, so nothing set here (tiling, PDF dpi) is lost on the way."""

    backend: Backend
    resize: ResizeSpec
    normalizer: Normalizer
    postprocess: DBPostProcess
    batch_size: int = 1
    workers: int = 2
    pdf_dpi: float = DEFAULT_PDF_DPI  # the resolution `doc.pdf#page=N` inputs are rendered at
    tile: TileSettings = TileSettings()  # off: the normal resize; auto / fixed: inference/tiling.py
    limits: ImageLimits = ImageLimits()  # the largest file and image a path may be (checked before reading)
    reading_order: bool = False  # boxes top to bottom, left to right within a line (else the contours' order)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        object.__setattr__(self, "workers", max(1, self.workers))

    def replace(self, **changes: Any) -> Predictor:
        """This predictor with some fields changed (the others, tiling included, kept)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_config(cls, backend: Backend, cfg: dict, *, resize: ResizeSpec | None = None,
                    normalizer: Normalizer | None = None, postprocess: DBPostProcess | None = None,
                    batch_size: int = 1, workers: int = 2) -> Predictor:
        """A predictor for `backend`; each stage left as None is built from the config's Eval transforms
        (DetResizeForTest, NormalizeImage) and PostProcess section."""
        if resize is None:
            resize = ResizeSpec.from_params(cfgmod.resize_params(cfg))
        if normalizer is None:
            normalizer = Normalizer(**cfgmod.normalize_params(cfg))
        if postprocess is None:
            postprocess = make_postprocess(cfgmod.postprocess_params(cfg))
        return cls(backend, resize, normalizer, postprocess, batch_size=batch_size, workers=workers)

    def network_input(self, item: Input, name: str = "image") -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
        """One input as the backend receives it: (normalised CHW float32 tensor, source (h, w), BGR image).

        A path is decoded (ImageReadError if it cannot be), pixels are converted (data.pixels, `name` in
        errors); then resized and normalised. run() prepares every input with it; int8 calibration too.
        """
        if isinstance(item, (str, os.PathLike)):
            image = read_image(str(item), self.pdf_dpi, self.limits)
        else:
            image = as_bgr(item, name)
        resized, src_hw = resize_for_test(image, self.resize)
        return self.normalizer(resized), src_hw, image

    def _prepare(self, index: int, item: Input, keep_image: bool) -> _Prepared:
        start = time.perf_counter()
        path = str(item) if isinstance(item, (str, os.PathLike)) else None
        try:
            tensor, src_hw, image = self.network_input(item, f"image{index}")
        except ImageReadError as exc:
            return _Prepared(index, path, error=str(exc))
        keep_image = keep_image or path is None  # in-memory pixels are the caller's: kept, not copied
        probes = probe_inputs(image, tensor.shape[1:], self.normalizer, count=tiling.WARN_PROBE_COUNT) \
            if self.tile.probe and self.resize.image_shape is None else None  # a fixed-size input takes no probe
        return _Prepared(index, path, tensor, src_hw, image if keep_image else None,
                         seconds=time.perf_counter() - start, probes=probes)

    def run(self, paths: Iterable[Input], keep_images: bool = False, keep_maps: bool = False) -> Iterator[Result]:
        """Yield one Result per input, in input order (failed reads carry `error`).

        An input is a file path, or in-memory pixels (a BGR uint8 ndarray or a PIL image; see
        data.pixels), whose result has no path and always keeps its image.

        Each result carries its own stage times; add up one run's results for that run's totals.
        With `keep_maps` each result also holds its float32 probability map and source size, exactly
        what post-processing received (`eval --tune` searches post-processing settings on them).
        """
        if self.tile.enabled:
            yield from self._run_tiled(paths, keep_images, keep_maps)
            return
        max_pending = self.batch_size * 4
        prefetch = max(self.batch_size * 2, self.workers * 2)
        buckets: dict[tuple[int, int], list[_Prepared]] = {}
        done: dict[int, Result] = {}
        next_out = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="preprocess") as pool:
            queue: deque[Future] = deque()
            source = iter(enumerate(paths))
            exhausted = False
            while True:
                while not exhausted and len(queue) < prefetch:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                    else:
                        queue.append(pool.submit(self._prepare, item[0], item[1], keep_images))
                if not queue:
                    break
                prepared = queue.popleft().result()
                if prepared.error is not None:
                    done[prepared.index] = Result(prepared.index, prepared.path, error=prepared.error)
                else:
                    bucket = buckets.setdefault(prepared.tensor.shape[1:], [])
                    bucket.append(prepared)
                    if len(bucket) >= self.batch_size:
                        self._flush(buckets.pop(prepared.tensor.shape[1:]), done, keep_maps)
                    elif sum(map(len, buckets.values())) >= max_pending:
                        self._flush(buckets.pop(max(buckets, key=lambda k: len(buckets[k]))), done, keep_maps)
                if len(done) >= max_pending and next_out not in done and buckets:
                    # the oldest image waits in a part-filled batch; run it so output order cannot stall
                    oldest = min(buckets, key=lambda k: min(p.index for p in buckets[k]))
                    self._flush(buckets.pop(oldest), done, keep_maps)
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
            for key in sorted(buckets, key=lambda k: min(p.index for p in buckets[k])):
                self._flush(buckets[key], done, keep_maps)
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1

    def _run_tiled(self, paths: Iterable[Input], keep_images: bool, keep_maps: bool) -> Iterator[Result]:
        """One image at a time (each may be many tiles), decoding the next ones in the pool meanwhile."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="preprocess") as pool:
            queue: deque[Future] = deque()
            source = iter(enumerate(paths))
            while True:
                while len(queue) < self.workers:  # large images: only a few in flight
                    item = next(source, None)
                    if item is None:
                        break
                    queue.append(pool.submit(self._prepare, item[0], item[1], True))
                if not queue:
                    return
                prepared = queue.popleft().result()
                if prepared.error is not None:
                    yield Result(prepared.index, prepared.path, error=prepared.error)
                    continue
                yield self._tiled_one(prepared, keep_images, keep_maps)

    def _tiled_one(self, prepared: _Prepared, keep_images: bool, keep_maps: bool) -> Result:
        """`auto`: tiles when full-resolution probes show text the resize shrinks too far, else the normal pass
        (an image the resize does not shrink runs exactly as with --tile off); fixed: tiles."""
        image = prepared.image
        h, w = image.shape[:2]
        reason, inference, post = f"--tile {self.tile.side}", 0.0, 0.0
        if self.tile.mode == "auto":  # the normal pass first: its resolved lines are part of the evidence
            start = time.perf_counter()
            prob = self.backend(prepared.tensor[None])[0, 0]
            inference = time.perf_counter() - start
            start = time.perf_counter()
            dets = self.postprocess(prob, h, w)
            post = time.perf_counter() - start
            start = time.perf_counter()
            probes = probe_inputs(image, prepared.tensor.shape[1:], self.normalizer)
            reason = None if probes is None else probe_reason(probes, self.backend, self.postprocess, dets)
            inference += time.perf_counter() - start
            if reason is None:
                return Result(prepared.index, prepared.path, self._ordered(dets), image if keep_images else None,
                              times=StageTimes(1, prepared.seconds, inference, post),
                              prob_map=prob if keep_maps else None, src_hw=(h, w))
        start = time.perf_counter()  # post-processing runs stripe by stripe between the tiles: timed as inference
        tiled = tiled_detections(image, self.tile, self.normalizer, self.backend, self.postprocess, self.batch_size,
                                 keep_map=keep_maps)
        inference += time.perf_counter() - start
        (th, tw) = tiled.tile_hw
        return Result(prepared.index, prepared.path, self._ordered(tiled.detections), image if keep_images else None,
                      times=StageTimes(1, prepared.seconds, inference, post), prob_map=tiled.prob,
                      src_hw=(h, w), tiling=f"{tiled.count} tiles of {th}x{tw} px: {reason}",
                      tiles=tile_boxes(h, w, self.tile))

    def _ordered(self, detections: list[Detection]) -> list[Detection]:
        return reading_order(detections) if self.reading_order else detections

    def _flush(self, items: list[_Prepared], done: dict[int, Result], keep_maps: bool = False) -> None:
        start = time.perf_counter()
        maps = self.backend(np.stack([p.tensor for p in items]))
        inference = (time.perf_counter() - start) / len(items)
        for prepared, prob in zip(items, maps):
            start = time.perf_counter()
            found = self.postprocess(prob[0], *prepared.src_hw)
            dets = self._ordered(found)
            times = StageTimes(1, prepared.seconds, inference, time.perf_counter() - start)
            small = None if prepared.probes is None else probe_reason(prepared.probes, self.backend, self.postprocess,
                                                                      found)
            done[prepared.index] = Result(prepared.index, prepared.path, dets, prepared.image, times=times,
                                          prob_map=prob[0] if keep_maps else None, src_hw=prepared.src_hw,
                                          small_text=small)
