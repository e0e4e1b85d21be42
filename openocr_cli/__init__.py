"""openocr-det: OpenOCR's RepViT-DB text detector as one command-line tool."""

__version__ = "0.1.0"
