"""Decode only the top rows of a training image: a sample rarely needs the whole picture.

CopyPaste takes a few word crops from a second image, and those crops decide how far down that
image is read; the training image itself is read down to the last row its crop window comes from
(data.planned), with CopyPaste's pastes recorded and painted after decoding. On the default chain
that is about two thirds of the rows. Both formats store rows top to bottom:

- Baseline JPEG, in bands of 8 or 16 rows (one MCU row). Writing a smaller height into a copy of
  the frame header makes OpenCV's decoder stop after that band and skip the rest of the file.
  Every row more than one band above that new bottom comes out bit-identical to the full decode
  (chroma upsampling only looks one chroma row ahead; tests/test_top_rows.py checks every
  subsampling). The decoder warns about the skipped data on stderr ("extraneous bytes"); that is
  silenced by pointing file descriptor 2 at /dev/null for the call, which is only done while no
  other Python thread could write there (a data-loader worker: its main thread and
  multiprocessing's helpers), so no other output is lost; elsewhere the file is decoded in full.
- 8-bit, non-interlaced PNG, row by row. libpng would inflate the whole stream even when asked for
  fewer rows, so a copy with a smaller IHDR height is read by Pillow, which stops inflating there.
  PNG is lossless: the rows equal OpenCV's. Pillow decodes 10-15% slower per row than OpenCV,
  so it is used only when at most PNG_PARTIAL_SHARE of the rows are needed.

Progressive or arithmetic-coded JPEGs, rotated EXIF orientations, PNGs with transparency chunks or
other bit depths, and every other format are decoded in full by OpenCV, as before.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from typing import Optional

import cv2
import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
BASELINE_FRAMES = (0xC0, 0xC1)  # Huffman-coded sequential (8- or 12-bit); progressive/arithmetic excluded
STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPES = (0, 2, 3, 6)  # grey, RGB, palette, RGBA; grey + alpha is left to OpenCV
PNG_HEIGHT_OFFSET = 20  # signature (8), IHDR length and type (8), width (4)
PNG_PARTIAL_SHARE = 0.8


class TopRows:
    """An image whose pixels are decoded on demand, only down to the rows asked for.

    `shape` and `dtype` are known from the header; `rows(n)` returns at least the first n rows
    (possibly all), exactly as `cv2.imdecode(data, IMREAD_COLOR)` gives them with the recorded
    `paste`s painted over in order.
    """

    def __init__(self, data: bytes, height: int, width: int, kind: str, band: int, height_offset: int):
        self.data, self.kind, self.band, self.height_offset = data, kind, band, height_offset
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.pastes: list[tuple[int, int, np.ndarray, np.ndarray]] = []

    @classmethod
    def parse(cls, data: bytes) -> Optional[TopRows]:
        """A TopRows for a JPEG or PNG whose rows can be decoded from the top, else None (decode it in full)."""
        header = _jpeg_frame(data) or _png_header(data)
        if header is None:
            return None
        return cls(data, *header) if header[0] > 0 and header[1] > 0 else None

    def paste(self, x: int, y: int, pixels: np.ndarray, mask: np.ndarray) -> None:
        """Paint `pixels` where `mask` is set, top-left at (x, y), once the rows are decoded."""
        self.pastes.append((x, y, pixels, mask))

    def rows(self, count: int) -> np.ndarray:
        """At least the top `count` rows, bit-identical to the same rows of a full decode."""
        return self._painted(self._decode(max(int(count), 1)))

    def full(self) -> np.ndarray:
        return self._painted(self._decode(self.shape[0]))

    def _decode(self, count: int) -> np.ndarray:
        height = self.shape[0]
        if self.kind == "jpeg":
            decoded = -(-count // self.band) * self.band + self.band  # one band beyond the last row needed
            if decoded < height and _alone():
                with _stderr_silenced():
                    return _opencv(self._with_height(decoded))
        elif count <= PNG_PARTIAL_SHARE * height:
            return _pillow(self._with_height(count))
        return _opencv(self.data)

    def _painted(self, image: np.ndarray) -> np.ndarray:
        for x, y, pixels, mask in self.pastes:
            region = image[y:y + pixels.shape[0], x:x + pixels.shape[1]]
            inside = mask[:region.shape[0]]
            region[inside] = pixels[:region.shape[0]][inside]
        return image

    def _with_height(self, height: int) -> bytes:
        """A copy of the file whose header says `height` rows (PNG: with the IHDR checksum redone)."""
        data, start = self.data, self.height_offset
        if self.kind == "jpeg":
            return b"".join((data[:start], struct.pack(">H", height), memoryview(data)[start + 2:]))
        ihdr = data[12:start] + struct.pack(">I", height) + data[start + 4:29]  # chunk type and fields
        return b"".join((data[:12], ihdr, struct.pack(">I", zlib.crc32(ihdr)), memoryview(data)[33:]))


def _opencv(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable image")
    return image


def _pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _jpeg_segments(data: bytes):
    """(marker, segment offset, payload) of each header segment up to the first frame or scan."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in STANDALONE_MARKERS:
            pos += 2
            continue
        length = struct.unpack_from(">H", data, pos + 2)[0]
        yield marker, pos, data[pos + 4:pos + 2 + length]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) or marker == 0xDA:  # SOFn, SOS
            return
        pos += 2 + length


def _jpeg_frame(data: bytes) -> Optional[tuple[int, int, str, int, int]]:
    """(height, width, "jpeg", MCU height, height field offset) of a baseline JPEG OpenCV would not
    rotate, else None."""
    for marker, pos, segment in _jpeg_segments(data):
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00") and _rotated(segment[6:]):
            return None
        if marker in BASELINE_FRAMES and len(segment) >= 6:
            height, width, components = struct.unpack_from(">HHB", segment, 1)
            if components not in (1, 3) or len(segment) < 6 + 3 * components:
                return None
            vertical = max(segment[7 + 3 * i] & 0x0F for i in range(components))
            return height, width, "jpeg", 8 * max(vertical, 1), pos + 5  # after marker, length, precision
    return None  # progressive, arithmetic-coded, lossless, a scan before any frame, or not a JPEG


def _png_header(data: bytes) -> Optional[tuple[int, int, str, int, int]]:
    """(height, width, "png", 1, height field offset) of an 8-bit non-interlaced PNG without
    transparency or EXIF chunks, else None."""
    if not data.startswith(PNG_SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if depth != 8 or colour not in PNG_COLOUR_TYPES or interlace:
        return None
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:  # Pillow would warn or refuse
        return None
    pos = 33
    while pos + 8 <= len(data):  # the chunks before the image data
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IDAT":
            return height, width, "png", 1, PNG_HEIGHT_OFFSET
        if kind in (b"tRNS", b"eXIf"):
            return None
        pos += 12 + length
    return None


def _rotated(tiff: bytes) -> bool:
    """Whether the EXIF block asks for a turn or mirror (OpenCV applies it when decoding)."""
    exif = Image.Exif()
    try:
        exif.load(tiff)
    except Exception:  # an unreadable EXIF block: let the full decode decide what it means
        return True
    return exif.get(EXIF_ORIENTATION, 1) not in (0, 1)


def _alone() -> bool:
    """Whether no other Python thread could write to stderr meanwhile: this is the main thread, and any
    other is one of multiprocessing's helpers a data-loader worker runs (the queue feeder sending its
    batches, the resource sharer handing over tensor file descriptors)."""
    main = threading.main_thread()
    return threading.current_thread() is main and all(
        t is main or t.name == "QueueFeederThread" or t.name.endswith("(_serve)") for t in threading.enumerate())


class _stderr_silenced:
    """File descriptor 2 points at /dev/null inside the block (the decoder writes there directly)."""

    _null: Optional[int] = None

    def __enter__(self) -> None:
        if _stderr_silenced._null is None:
            _stderr_silenced._null = os.open(os.devnull, os.O_WRONLY)
        self.saved = os.dup(2)
        os.dup2(_stderr_silenced._null, 2)

    def __exit__(self, *exc) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)
