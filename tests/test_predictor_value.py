"""The predictor is one value: every variant (a per-call batch size, another resize, a request's post-processing)
is `predictor.replace(...)`, so what the caller set (tiling, PDF dpi) is never dropped on the way."""

import cv2
import numpy as np
import pytest

from openocr_cli import Detector
from openocr_cli.data.labels import LabelSample
from openocr_cli.data.resize import Normalizer, ResizeSpec
from openocr_cli.evaluation.sizes import sweep
from openocr_cli.inference.predictor import Predictor
from openocr_cli.inference.tiling import parse_tile
from openocr_cli.postprocess import make_postprocess
from tests.test_onnx_backend import tiny_model


@pytest.fixture(scope="module")
def bright(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "bright.onnx")


def bars(h=512, w=704):
    image = np.zeros((h, w, 3), np.uint8)
    image[40:70, 150:300] = 255
    image[400:430, 500:650] = 255
    return image


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_tiling_detector_tiles_at_any_batch_size(bright, batch_size):
    det = Detector(bright, device="cpu", tile=256, tile_overlap=64)
    (result,) = det.predict(bars(), batch_size=batch_size)
    assert result.tiling is not None and result.tiling.startswith("12 tiles of 224x224 px")
    assert det.predictor.batch_size == 1  # the per-call batch size changed nothing in the detector


class Recording:
    """A pointwise backend that records the input sizes it is given."""

    name = "recording"

    def __init__(self):
        self.shapes = []

    def __call__(self, batch):
        self.shapes.append(batch.shape[2:])
        return 1 / (1 + np.exp(-batch.mean(axis=1, keepdims=True)))


def test_eval_sizes_keeps_tiling(tmp_path):
    path = tmp_path / "page.png"
    cv2.imwrite(str(path), bars())
    sample = LabelSample("page.png", path, [np.array([[150, 40], [300, 40], [300, 70], [150, 70]])], ["x"], [False])
    backend = Recording()
    predictor = Predictor(backend, ResizeSpec(limit_side_len=960), Normalizer(), make_postprocess({}),
                          tile=parse_tile("256", 64))
    (row,) = sweep(predictor, [sample], [640], None, lambda side: lambda: None)
    assert row.limit_side_len == 640 and backend.shapes
    assert all(h <= 256 and w <= 256 for h, w in backend.shapes)  # tiles, not the 640-px resized page


def test_replace_changes_only_what_it_names(bright):
    predictor = Detector(bright, device="cpu", tile="auto", pdf_dpi=150, workers=3).predictor
    other = predictor.replace(batch_size=8, resize=ResizeSpec(limit_side_len=320))
    assert (other.batch_size, other.resize.limit_side_len) == (8, 320)
    assert (other.tile, other.pdf_dpi, other.workers, other.backend, other.normalizer, other.postprocess) == \
        (predictor.tile, 150, 3, predictor.backend, predictor.normalizer, predictor.postprocess)
    with pytest.raises(AttributeError):
        predictor.batch_size = 2  # frozen: a variant is a new value
    with pytest.raises(ValueError, match="batch size"):
        predictor.replace(batch_size=0)
