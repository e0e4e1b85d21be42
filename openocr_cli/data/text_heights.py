"""How high the text regions are where the detector sees them: after the evaluation resize, in pixels.

One measurement for `check-data` (data.doctor: the heights of a training set) and `eval` (evaluation.details:
recall by height), so both count a region in the same bucket.
"""

from __future__ import annotations

import cv2
import numpy as np

from openocr_cli.data.images import image_size
from openocr_cli.data.labels import LabelSample
from openocr_cli.data.resize import ResizeSpec, target_size
from openocr_cli.errors import UserError

HEIGHT_BUCKETS = (("0-8", 8.0), ("8-16", 16.0), ("16-32", 32.0), ("32+", float("inf")))
TINY_HEIGHT = 8.0  # the detector rarely finds text lower than this
MAX_TINY_SHARE = 0.05  # more tiny text than this share of the regions is worth a warning


def bucket_of(height: float) -> str:
    """The HEIGHT_BUCKETS name `height` falls in."""
    return next(name for name, upper in HEIGHT_BUCKETS if height < upper)


def image_hw(sample: LabelSample) -> tuple[int, int]:
    """(height, width): validation stores it; samples from elsewhere are read here."""
    size = sample.size if sample.size is not None else image_size(sample.image)
    if size is None:
        raise UserError(f"{sample.source}:{sample.line}: image {sample.image} cannot be decoded.")
    return size


def text_heights(sample: LabelSample, spec: ResizeSpec) -> list[float]:
    """Shorter side of each text region's minimum-area rectangle, in network-input pixels.

    As resize_for_test: an image with h + w < 64 is padded to at least 32 x 32 first, and the
    coordinates scale by target size / padded size.
    """
    h, w = image_hw(sample)
    if h + w < 64:
        h, w = max(32, h), max(32, w)
    th, tw = target_size(h, w, spec)
    scale = np.array([tw / w, th / h], dtype=np.float32)
    return [float(min(cv2.minAreaRect((poly * scale).astype(np.float32))[1]))
            for poly, ignored in zip(sample.polys, sample.ignore) if not ignored]
