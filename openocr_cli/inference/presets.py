"""Other tools' inference settings by name (`--preset`): their models run with the numbers they were made for.

A foreign ONNX detector states no pre- or post-processing, so without a preset it runs with openocr-det's
config (longer side to 960). PaddleOCR's OCR pipeline (PaddleOCR 3.x, PaddleX's OCR.yaml) runs its PP-OCRv5 and
PP-OCRv6 detectors with the shorter side scaled up to at least 736 px, the DB thresholds below and box scores
from each box's bounding rectangle (score_mode fast: its DBPostProcess default, which its model files keep); its
normalisation (BGR / 255, ImageNet mean and std) is openocr-det's own, so a preset names only what differs or
what a checkpoint's saved config could otherwise change. A preset sits above the config and the model's own
values and below --postprocess, -o and explicit flags (inference/resolve.py).
"""

from __future__ import annotations

from types import MappingProxyType

_PADDLE_PIPELINE = MappingProxyType({"limit_type": "min", "limit_side_len": 736, "thresh": 0.3,
                                     "box_thresh": 0.6, "unclip_ratio": 1.5, "score_mode": "fast"})

PRESETS = MappingProxyType({
    "ppocr-v5": _PADDLE_PIPELINE,  # PP-OCRv5_server_det / PP-OCRv5_mobile_det in PaddleOCR()
    "ppocr-v6": _PADDLE_PIPELINE,  # PP-OCRv6 detectors: same resize and thresholds
})
RESIZE_KEYS = ("limit_type", "limit_side_len")
POSTPROCESS_KEYS = ("thresh", "box_thresh", "unclip_ratio", "score_mode")
