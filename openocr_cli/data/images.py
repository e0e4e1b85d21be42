"""Finding and decoding input images: files, folders, globs; failures become per-file messages."""

from __future__ import annotations

import glob
import io
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image

from openocr_cli.data import pdf
from openocr_cli.errors import ImageReadError, UserError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2",
                              ".pbm", ".pgm", ".ppm", ".pnm", ".dib", ".jpe", ".sr", ".ras"})


EXIF_ORIENTATION = 0x0112
# Decoding allocates 3 bytes per pixel at once, and inference needs a few times that on top: 250 megapixels
# (a 750 MB image; an A0 drawing at 400 dpi, a 600-dpi A2 scan) keeps a tiled run under about 2 GB. Larger files
# are refused from their header, before any pixel is decoded; --max-pixels raises the limit.


MAX_IMAGE_MB = 512  # --max-image-mb: a larger file is skipped by name without being read
MAX_PIXELS = 150_000_000  # --max-pixels: about 450 MB decoded, twice that while decoding


@dataclass(frozen=True)
class ImageLimits:
    """The largest input file (bytes) and image (pixels, from the header) read_image decodes; None: no limit.

    Both are checked before the file is read, so one huge file in a folder costs nothing and fails alone.
    """

    max_bytes: Optional[int] = MAX_IMAGE_MB * 1024 ** 2
    max_pixels: Optional[int] = MAX_PIXELS

    def check_file(self, path: str) -> None:
        """ImageReadError naming the file and the flag when it is over a limit (sized without decoding)."""
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise ImageReadError(f"cannot read {path}: {exc.strerror or exc}") from None
        if self.max_bytes is not None and size > self.max_bytes:
            raise ImageReadError(f"{path} is {size / 1024 ** 2:,.1f} MB, over the limit of "
                                 f"{self.max_bytes / 1024 ** 2:g} MB (--max-image-mb); it was not read")
        if self.max_pixels is None:
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:  # the header only
                    width, height = image.size
            size, pixels = f"{width}x{height} = {width * height:,} pixels", width * height
        except Image.DecompressionBombError as exc:  # PIL's own limit: its message has the count
            found = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = int(found.group(1)) if found else 2 * Image.MAX_IMAGE_PIXELS
            size = f"{pixels:,} pixels"
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError):
            return  # a format PIL cannot size: OpenCV decides
        if pixels > self.max_pixels:
            raise ImageReadError(f"{path} is {size}, over the limit of {self.max_pixels:,} (--max-pixels); it was "
                                 "not decoded")


NO_LIMITS = ImageLimits(None, None)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_input_name(name: str) -> bool:
    """A name folders and globs keep: a known image extension or a PDF."""
    return is_image_name(name) or pdf.is_pdf_name(name)


def collect_images(sources: Iterable[str], recursive: bool = False) -> list[str]:
    """Expand SOURCE arguments into image paths as the user wrote them (sorted per folder, no duplicates).

    A file named explicitly is taken whatever its extension (decoding decides); folders and globs
    keep only known image extensions and PDFs. A PDF becomes its pages, `doc.pdf#page=N` in page order
    (counted, not rendered); `doc.pdf#page=N` names one page.
    """
    found: list[str] = []
    for source in sources:
        if os.path.isfile(source):
            found.extend(_expand_pdfs([source]))
        elif pdf.split_page_ref(source) is not None and os.path.isfile(pdf.split_page_ref(source)[0]):
            found.append(source)  # one page; its number is checked when it is rendered
        elif os.path.isdir(source):
            matches = _list_folder(source, recursive)
            if not matches:
                hint = "" if recursive else " (use --recursive to include subfolders)"
                raise UserError(f"folder {source} contains no images{hint}. "
                                f"Supported: {', '.join(sorted(e[1:] for e in IMAGE_EXTENSIONS))}, pdf.")
            found.extend(_expand_pdfs(matches))
        elif glob.has_magic(source):
            matches = sorted(p for p in glob.glob(source, recursive=recursive)
                             if os.path.isfile(p) and is_input_name(p))
            if not matches:
                raise UserError(f"pattern {source} matches no image files.")
            found.extend(_expand_pdfs(matches))
        else:
            raise UserError(f"{source} does not exist. Pass image files, PDFs, folders or glob patterns.")
    seen: set[str] = set()
    unique = []
    for path in found:
        norm = os.path.normpath(os.path.abspath(path))
        if norm not in seen:
            seen.add(norm)
            unique.append(path)
    return unique


def _list_folder(folder: str, recursive: bool) -> list[str]:
    if recursive:
        paths = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    else:
        paths = [os.path.join(folder, name) for name in os.listdir(folder)]
    return sorted(p for p in paths if is_input_name(p) and os.path.isfile(p))


def _expand_pdfs(paths: list[str]) -> Iterable[str]:
    """Each path as is, except a PDF: its pages (a PDF that cannot be opened stays whole, to fail when read)."""
    for path in paths:
        if pdf.is_pdf_name(path):
            yield from pdf.expand_pdf(path)
        else:
            yield path


def read_image(path: str | Path, pdf_dpi: float = pdf.DEFAULT_PDF_DPI,
               limits: ImageLimits = NO_LIMITS) -> np.ndarray:
    """Decode a file to a 3-channel BGR uint8 array (alpha dropped, grey expanded, EXIF applied).

    `doc.pdf#page=N` renders that page at `pdf_dpi` (data.pdf), as does a .pdf path of a one-page PDF. A file
    over `limits` is an ImageReadError before it is read.
    """
    text = str(path)
    ref = pdf.split_page_ref(text)
    if ref is not None:
        return pdf.read_pdf(ref[0], ref[1], dpi=pdf_dpi, max_pixels=limits.max_pixels)
    if pdf.is_pdf_name(text) and os.path.isfile(text):
        return pdf.read_pdf(text, dpi=pdf_dpi, max_pixels=limits.max_pixels)
    limits.check_file(text)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_image_bytes(data, text)


def decode_image_bytes(data, name: str) -> np.ndarray:
    """An image file's bytes (bytes or a uint8 array) -> BGR uint8, as read_image decodes the file: the
    same picture sent to `serve` gives the same pixels, so the same boxes."""
    buffer = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise ImageReadError(f"{name} is empty")
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV refuses buffers over 2 GB, images over its own pixel limit
        raise ImageReadError(f"{name} cannot be decoded ({str(exc).strip().splitlines()[-1]})") from None
    if image is None or image.size == 0:
        raise ImageReadError(f"{name} is not a decodable image")
    return image


def image_size(path: Path) -> Optional[tuple[int, int]]:
    """(height, width) of a readable image as training decodes it, None if it cannot be decoded.

    The file is read once: a reduced decode proves it decodes, the size comes from the header.
    OpenCV cannot reduce an image under 8 px, so such an image is decoded in full (it is tiny).
    """
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    except cv2.error:
        decoded = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    return None if decoded is None else _header_size(data)


def _header_size(data: np.ndarray) -> Optional[tuple[int, int]]:
    """OpenCV applies the EXIF orientation when DecodeImage decodes, so orientations 5-8 (a quarter turn)
    swap the sides; a format PIL cannot read costs one full decode instead.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
        return (width, height) if turned else (height, width)
    except (OSError, ValueError, Image.DecompressionBombError):
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
        return None if decoded is None else (decoded.shape[0], decoded.shape[1])
