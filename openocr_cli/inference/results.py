"""Per-image results and det_results.txt: `image_path<TAB>[{"points": [[x, y], ...], "score": s}, ...]`.

One line per image, written by `Result.to_line`. OpenOCR's format plus a score, so OpenOCR
tooling still reads it; `formats.det_results` reads it back for `eval --predictions`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Optional

import cv2
import numpy as np

from openocr_cli.crops import crop_region
from openocr_cli.data.images import read_image
from openocr_cli.data.pdf import read_pdf, split_page_ref
from openocr_cli.errors import ImageReadError
from openocr_cli.postprocess import Detection

BOX_COLOR_BGR = (255, 255, 0)


@dataclass
class StageTimes:
    """Seconds spent per stage on `images` images. Each image's result carries its own (its inference
    time is its share of its batch's forward pass); add the results of one run for that run's totals."""

    images: int = 0
    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0

    def __add__(self, other: StageTimes) -> StageTimes:
        return StageTimes(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def ms_per_image(self) -> dict[str, float]:
        n = max(self.images, 1)
        return {k: 1000.0 * getattr(self, k) / n for k in ("preprocess", "inference", "postprocess")}

    def fps(self) -> float:
        """Images per second of forward passes (decoding and post-processing not counted); 0 if none ran."""
        return self.images / self.inference if self.inference > 0 else 0.0


@dataclass
class Result:
    """What the detector found in one image, or why it could not read it (`error`).

    `path` is the file (None for an in-memory image); `detections` hold the boxes in original-image
    pixels, also as `polygons` and `scores`. `image` is the BGR image when it was kept (in-memory
    inputs always are); `plot()` and `crops()` read the file again otherwise. `times` are this
    image's stage times (all zero for an unreadable image). `prob_map` is the (h, w) float32
    probability map post-processing received (network-input size, or the source size when tiled), kept
    only when asked for; `src_hw` is the source size the boxes were scaled to; `tiling` says how many
    tiles ran and why (None: the image ran whole).
    """

    index: int
    path: Optional[str]
    detections: list[Detection] = field(default_factory=list)
    image: Optional[np.ndarray] = field(default=None, repr=False)
    error: Optional[str] = None
    times: StageTimes = field(default_factory=StageTimes, repr=False)
    prob_map: Optional[np.ndarray] = field(default=None, repr=False)
    src_hw: Optional[tuple[int, int]] = None
    tiling: Optional[str] = None  # how and why the image was run as tiles (inference/tiling.py), None when it was not
    tiles: list[tuple[int, int, int, int]] = field(default_factory=list, repr=False)  # each tile's (x0, y0, x1, y1)
    small_text: Optional[str] = None  # --tile off with probes: why the resize probably lost text of it (tiling.py)

    @property
    def source(self) -> str:
        """The path as given, or `image<index>` for an in-memory image: what det_results.txt lines start with
        (OpenOCR writes the path it was given), the key of the JSONL and pre-annotation records."""
        return self.path if self.path is not None else f"image{self.index}"

    @property
    def name(self) -> str:
        """The file's name without its folders (`scan.pdf#page=2` for a PDF page), `image<index>` in memory."""
        return os.path.basename(self.source)

    @property
    def polygons(self) -> list[np.ndarray]:
        """One int32 (P, 2) array per region, in original-image pixels (quads: TL, TR, BR, BL)."""
        return [d.points for d in self.detections]

    @property
    def scores(self) -> list[float]:
        return [float(d.score) for d in self.detections]

    def to_json(self) -> list[dict]:
        """The boxes as det_results.txt holds them: integer points, score rounded to 6 decimals."""
        return detections_json(self.detections)

    def to_line(self) -> str:
        """This image's det_results.txt line, newline included."""
        return f"{self.source}\t{json.dumps(self.to_json())}\n"

    def load_image(self) -> np.ndarray:
        """The BGR image: the one kept, else the file decoded again."""
        if self.image is not None:
            return self.image
        try:
            return self._read_again() if self.path is not None else _missing(self.name, "no file to read")
        except ImageReadError as exc:
            return _missing(self.name, str(exc))

    def _read_again(self) -> np.ndarray:
        """The file decoded again; a PDF page rendered at the size its boxes are in (whatever its run's dpi)."""
        page = split_page_ref(self.path)
        if page is not None and self.src_hw is not None:
            return read_pdf(page[0], page[1], size=self.src_hw)
        return read_image(self.path)

    def plot(self) -> np.ndarray:
        """The boxes as closed polylines in OpenOCR's colour (BGR 255,255,0), thickness 2, on a copy of the
        image: what predict writes to vis/."""
        canvas = self.load_image().copy()
        polys = [np.asarray(d.points, dtype=np.int32).reshape(-1, 1, 2) for d in self.detections]
        if polys:
            cv2.polylines(canvas, polys, isClosed=True, color=BOX_COLOR_BGR, thickness=2)
        return canvas

    def crops(self) -> list[np.ndarray]:
        """One upright BGR crop per region, in detection order (see openocr_cli.crops): a recogniser's input."""
        image = self.load_image()
        return [crop_region(image, d.points) for d in self.detections]


def _missing(name: str, why: str) -> np.ndarray:
    raise ValueError(f"{name}: the image was not kept (predict with keep_images=True) and cannot be read "
                     f"again ({why}).")


def detections_json(detections: list[Detection]) -> list[dict]:
    """Detections as det_results.txt (and `serve`) write them: integer points, score rounded to 6 decimals."""
    return [{"points": np.asarray(d.points).astype(int).tolist(), "score": round(float(d.score), 6)}
            for d in detections]
