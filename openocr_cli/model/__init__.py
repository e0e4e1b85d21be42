"""RepViT-DB text detector: `build_detector(arch)` builds the model, `DBDetector.fuse()` speeds up inference."""

from openocr_cli.model.build import DBDetector, build_detector

__all__ = ["DBDetector", "build_detector"]
