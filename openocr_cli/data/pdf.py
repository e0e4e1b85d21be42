"""PDF pages as detector inputs: a PDF stands for its pages, `doc.pdf#page=N` (1-based), rendered one at a time.

A page reference is a plain string, so results, det_results.txt lines and the Python API name a page the
way they name a file. Rendering uses PDFium (pypdfium2, an optional extra): no poppler binary, and the
page's /Rotate is applied, so a rotated page comes out upright. Nothing is rendered until a page is read,
and a read opens the file, renders that one page and closes it again: memory holds only the pages in flight.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterator
from typing import Optional

import cv2
import numpy as np

from openocr_cli.errors import ImageReadError, UserError

# 200 dpi: 10 pt text is 10/72 in * 200 = ~28 px (em height), which a recogniser reads well from the drawn
# images and crops (boxes are in these page pixels). The network itself sees at most limit_side_len (960 by
# default, long side): an A4 page at any dpi above ~82 is scaled down to 960 px, so a higher dpi only helps
# the network together with a larger --limit-side-len; 200 keeps an A4 page at 1654 x 2339 px (~11 MB BGR).
DEFAULT_PDF_DPI = 200
MAX_SIDE = 20000  # px; a page above it at this dpi is refused (PDFium's bitmaps and memory would not cope)
INSTALL_HINT = "pip install 'openocr-det[pdf]' (or: pip install pypdfium2)"

_PAGE_REF = re.compile(r"(?P<file>.+\.pdf)#page=(?P<page>[1-9][0-9]*)", re.IGNORECASE)
_ERR_PASSWORD = 4  # PDFium's FPDF_ERR_PASSWORD
_LOCK = threading.Lock()  # PDFium is not thread-safe, even across documents: one call at a time per process


def import_pdfium():
    """The pypdfium2 package, or a UserError saying how to install it."""
    try:
        import pypdfium2
    except ImportError:
        raise UserError(f"reading PDF files needs the pypdfium2 package: {INSTALL_HINT}.") from None
    return pypdfium2


def is_pdf_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() == ".pdf"


def page_ref(path: str, number: int) -> str:
    """The name of page `number` (1-based) of the PDF at `path`: `path#page=number`."""
    return f"{path}#page={number}"


def split_page_ref(text: str) -> Optional[tuple[str, int]]:
    """(PDF path, 1-based page) for a `doc.pdf#page=N` string, else None (a real file of that name wins)."""
    match = _PAGE_REF.fullmatch(text)
    if match is None or os.path.exists(text):
        return None
    return match.group("file"), int(match.group("page"))


def page_count(path: str) -> int:
    """How many pages the PDF has (the cross-reference is read, no page is rendered); ImageReadError if none."""
    with _LOCK, _open(path) as doc:
        count = len(doc)
    if count == 0:
        raise ImageReadError(f"{path} is a PDF with no pages")
    return count


def page_size(path: str, page: int, dpi: float = DEFAULT_PDF_DPI,
              max_pixels: Optional[int] = None) -> tuple[int, int]:
    """(h, w) in pixels that `read_pdf(path, page, dpi)` will give, found without rendering the page (a server
    reserves memory for exactly that); the same ImageReadErrors as read_pdf for a page too large or missing."""
    with _LOCK, _open(path) as doc:
        if page > len(doc):
            raise ImageReadError(f"{page_ref(path, page)}: the PDF has {len(doc)} page(s)")
        pdf_page = doc[page - 1]
        try:
            return _checked_scale(pdf_page, path, page, dpi, None, max_pixels)[1]
        finally:
            pdf_page.close()


def _checked_scale(pdf_page, path: str, number: int, dpi: float, size: Optional[tuple[int, int]],
                   max_pixels: Optional[int]) -> tuple[float, tuple[int, int]]:
    """The render scale for `dpi` (or for the width of `size`) and the (h, w) it gives; ImageReadError for a
    page beyond MAX_SIDE or `max_pixels` at that scale."""
    width, height = pdf_page.get_size()  # points, /Rotate applied
    scale = size[1] / width if size is not None else dpi / 72.0
    if max(width, height) * scale > MAX_SIDE:
        raise ImageReadError(f"{page_ref(path, number)} is {width / 72:.0f} x {height / 72:.0f} in; at "
                             f"{dpi:g} dpi it exceeds {MAX_SIDE} px: lower --pdf-dpi")
    h, w = math.ceil(height * scale), math.ceil(width * scale)  # as pypdfium2 sizes its bitmap
    if max_pixels is not None and h * w > max_pixels:
        raise ImageReadError(f"{page_ref(path, number)} at {dpi:g} dpi is {h * w:,} pixels, over the limit "
                             f"of {max_pixels:,}: lower --pdf-dpi (or raise --max-pixels)")
    return scale, (h, w)


def expand_pdf(path: str) -> Iterator[str]:
    """The page references of a PDF, in page order; a PDF that cannot be opened stays as its plain path, for
    reading it to report why (per file, as for an unreadable image)."""
    try:
        count = page_count(path)
    except ImageReadError:
        yield path
        return
    for number in range(1, count + 1):
        yield page_ref(path, number)


def read_pdf(path: str, page: Optional[int] = None, dpi: float = DEFAULT_PDF_DPI,
             size: Optional[tuple[int, int]] = None, max_pixels: Optional[int] = None) -> np.ndarray:
    """One page (1-based) as a BGR uint8 array rendered at `dpi`, upright (/Rotate applied), on white.

    `page` None reads a one-page PDF. `size` (h, w) renders at the scale that gives that size instead (a page
    read again to draw on it matches the pixels its boxes are in, whatever dpi the run used).
    """
    if dpi <= 0:
        raise UserError(f"the PDF resolution must be a positive dpi, not {dpi}.", exit_code=2)
    with _LOCK, _open(path) as doc:
        count = len(doc)
        if count == 0:
            raise ImageReadError(f"{path} is a PDF with no pages")
        if page is None and count > 1:
            raise ImageReadError(f"{path} has {count} pages; name one as {page_ref(path, 1)} (predict and "
                                 "Detector.predict expand a PDF into its pages)")
        number = page or 1
        if number > count:
            raise ImageReadError(f"{page_ref(path, number)}: the PDF has {count} page(s)")
        pdf_page = doc[number - 1]
        try:
            scale, _ = _checked_scale(pdf_page, path, number, dpi, size, max_pixels)
            image = _render(pdf_page, scale, page_ref(path, number))
        finally:
            pdf_page.close()
    if size is not None and image.shape[:2] != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return image


class _open:
    """PdfDocument(path) as a context manager whose failures are per-file ImageReadErrors naming the file."""

    def __init__(self, path: str):
        self.path = path
        self.doc = None

    def __enter__(self):
        pdfium = import_pdfium()
        if not os.path.isfile(self.path):
            raise ImageReadError(f"cannot read {self.path}: no such file")
        try:
            self.doc = pdfium.PdfDocument(self.path)
        except pdfium.PdfiumError as exc:
            # PDFium's last-error code is not reset by a load that fails otherwise (one with no pages, say):
            # "password" counts only when the file has an /Encrypt dictionary
            if getattr(exc, "err_code", None) == _ERR_PASSWORD and _has_encrypt_dict(self.path):
                raise ImageReadError(f"{self.path} is an encrypted PDF (it needs a password); save a decrypted "
                                     "copy (e.g. qpdf --decrypt --password=... in.pdf out.pdf) and pass "
                                     "that") from None
            raise ImageReadError(f"{self.path} is not a readable PDF: damaged, truncated, not a PDF, or a PDF "
                                 "without pages (PDFium cannot open it)") from None
        except OSError as exc:
            raise ImageReadError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        return self.doc

    def __exit__(self, *exc_info) -> None:
        self.doc.close()


def _has_encrypt_dict(path: str, chunk: int = 1 << 20) -> bool:
    """Whether the file names an /Encrypt dictionary (read in chunks: only a PDF that failed to open is read)."""
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            if b"/Encrypt" in tail + block:
                return True
            tail = block[-8:]
    return False


def _render(pdf_page, scale: float, name: str) -> np.ndarray:
    """The page's pixels, copied out of PDFium's bitmap (which is freed here)."""
    pdfium = import_pdfium()
    try:
        bitmap = pdf_page.render(scale=scale)
    except pdfium.PdfiumError as exc:
        raise ImageReadError(f"{name} could not be rendered: {exc}") from None
    try:
        pixels = bitmap.to_numpy()
        if bitmap.mode == "RGB":
            return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        if bitmap.mode in ("BGRA", "BGRX"):
            return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
        if bitmap.mode == "L":
            return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(pixels, dtype=np.uint8).copy()  # BGR
    finally:
        bitmap.close()
