"""An uploaded image, checked before it is decoded, then decoded exactly as `predict` decodes a file.

The pixel count comes from the header alone (PIL reads only the header when it opens a file), so a
decompression bomb (a 40000x40000 PNG is a few hundred KB) is refused without allocating its pixels. A JPEG
or PNG whose end marker is missing is loaded once by PIL to tell trailing bytes from truncation: OpenCV
would decode a truncated JPEG silently, grey below the cut.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from openocr_cli.data import pdf
from openocr_cli.data.images import decode_image_bytes
from openocr_cli.errors import ImageReadError
from openocr_cli.serve.problems import RequestError

# what PIL can size from the header and OpenCV decodes (PIL's format names)
FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "BMP": "BMP", "TIFF": "TIFF", "WEBP": "WebP", "PPM": "PNM",
           "JPEG2000": "JPEG 2000", "SUN": "Sun raster", "DIB": "BMP"}
_BAD_IMAGE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError)


def image_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the header; RequestError for an empty body, a non-image, an unsupported format,
    more than `max_pixels` pixels (413) or a truncated file, none of which is decoded."""
    if not data:
        raise RequestError(422, "the image is empty (0 bytes); send the image file's bytes.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind, (width, height) = image.format, image.size
    except Image.DecompressionBombError as exc:  # PIL's own limit, far above any sane --max-pixels
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,}" if found else f"more than {2 * Image.MAX_IMAGE_PIXELS:,}"
        raise RequestError(413, f"the image header declares {size} pixels, over the server's limit of "
                                f"{max_pixels:,} (--max-pixels); it was not decoded. Send a smaller image.") from None
    except _BAD_IMAGE:
        raise RequestError(415, f"the upload is not an image in a supported format ({supported()}).") from None
    if kind not in FORMATS:
        raise RequestError(415, f"{kind} images are not supported; send {supported()}.")
    if width * height > max_pixels:
        raise RequestError(413, f"the image is {width}x{height} = {width * height:,} pixels, over the server's limit "
                                f"of {max_pixels:,} (--max-pixels); it was not decoded. Send a smaller image.")
    if width == 0 or height == 0:
        raise RequestError(422, f"the image is {width}x{height} pixels: it has no pixels.")
    if _truncated(data, kind):
        raise RequestError(422, f"the {FORMATS[kind]} file is truncated (it ends before its last byte); send the "
                                "whole file.")
    return width, height


def decode(data: bytes, max_pixels: int):
    """The checked upload as the BGR uint8 array `predict` would decode from the same file."""
    image_size(data, max_pixels)
    try:
        return decode_image_bytes(np.frombuffer(data, dtype=np.uint8), "the image")
    except ImageReadError as exc:
        raise RequestError(422, f"{exc}: the file is damaged or its format is not one OpenCV decodes.") from None


def supported() -> str:
    return ", ".join(dict.fromkeys(FORMATS.values()))


def _truncated(data: bytes, kind: str) -> bool:
    if kind == "JPEG":
        complete = data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")
    elif kind == "PNG":
        complete = b"IEND" in data[-16:]
    else:
        return False  # OpenCV refuses the other formats when they are cut short
    if complete:
        return False
    try:  # no end marker: bytes after the image, or a cut one? A full PIL load tells.
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        return False
    except _BAD_IMAGE:
        return True


def is_pdf(data: bytes) -> bool:
    """A PDF by its signature (within the first KB, where PDF readers look for it)."""
    return b"%PDF-" in data[:1024]


class PdfUpload:
    """An uploaded PDF in a temporary file (removed on exit), its pages rendered by data.pdf exactly as `predict
    doc.pdf` renders them, so the boxes are the same."""

    def __init__(self, data: bytes, max_pages: int):
        self.data, self.max_pages, self.path = data, max_pages, ""

    def __enter__(self) -> PdfUpload:
        handle, self.path = tempfile.mkstemp(suffix=".pdf", prefix="openocr-det-upload-")
        with os.fdopen(handle, "wb") as f:
            f.write(self.data)
        return self

    def __exit__(self, *exc_info) -> None:
        os.unlink(self.path)

    def count(self) -> int:
        """The page count; RequestError for a PDF that cannot be read (422) or has more than max_pages (413)."""
        try:
            pages = pdf.page_count(self.path)
        except ImageReadError as exc:
            raise RequestError(422, _named(str(exc), self.path)) from None
        if pages > self.max_pages:
            raise RequestError(413, f"the PDF has {pages} pages, over the server's limit of {self.max_pages} "
                                    "(--max-pages); send fewer pages per request.")
        return pages

    def size(self, number: int, dpi: float, max_pixels: int) -> tuple[int, int]:
        """(h, w) of page `number` once rendered, found without rendering it; RequestError as for page()."""
        with self._as_request_errors():
            return pdf.page_size(self.path, number, dpi=dpi, max_pixels=max_pixels)

    def page(self, number: int, dpi: float, max_pixels: int) -> np.ndarray:
        with self._as_request_errors():
            return pdf.read_pdf(self.path, number, dpi=dpi, max_pixels=max_pixels)

    @contextlib.contextmanager
    def _as_request_errors(self):
        """A page too large is 413, one that cannot be read 422; the messages name 'the PDF', not the temporary file."""
        try:
            yield
        except ImageReadError as exc:
            status = 413 if "over the limit" in str(exc) or "exceeds" in str(exc) else 422
            raise RequestError(status, _named(str(exc), self.path)) from None


def _named(message: str, path: str) -> str:
    """A data.pdf message about the temporary file, about 'the PDF' instead."""
    return message.replace(path, "the PDF")
