"""Decode only the top rows of a training image: a sample rarely needs the whole picture.

CopyPaste takes a few word crops from a second image, and those crops decide how far down that
image is read; the training image itself is read down to the last row its crop window comes from
(data.planned), with CopyPaste's pastes recorded and painted after decoding. On the default chain
that is about two thirds of the rows. Both formats store rows top to bottom, and in both the rows
come out exactly as `cv2.imdecode(data, IMREAD_COLOR)` gives them (tests/test_top_rows.py):

- Baseline JPEG, in bands of 8 or 16 rows (one MCU row). Writing a smaller height into a copy of
  the frame header makes OpenCV's decoder stop after that band and skip the rest of the file.
  Every row more than one band above that new bottom is bit-identical to the full decode (chroma
  upsampling only looks one chroma row ahead). The decoder warns about the skipped data on stderr
  ("extraneous bytes"); that is silenced by pointing file descriptor 2 at /dev/null for the call,
  which is only done while no other Python thread could write there (a data-loader worker: its
  main thread and multiprocessing's helpers), so no other output is lost; elsewhere the file is
  decoded in full.
- Non-interlaced PNG, row by row. Inflating is most of the cost and libpng inflates the whole
  stream even when asked for fewer rows, so ISA-L (the `isal` package, about 2x zlib's speed)
  inflates just the rows needed, and OpenCV unfilters them from a copy of the file holding only
  those rows, stored uncompressed. This is faster than OpenCV's own decode even for every row.

Progressive or arithmetic-coded JPEGs, rotated EXIF orientations, interlaced PNGs and every other
format are decoded in full by OpenCV, as before.
"""

from __future__ import annotations

import functools
import os
import struct
import threading
import zlib
from typing import Optional, Protocol

import cv2
import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
BASELINE_FRAMES = (0xC0, 0xC1)  # Huffman-coded sequential (8- or 12-bit); progressive/arithmetic excluded
STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
STORED_BLOCK = 0xFFFF  # the largest uncompressed deflate block


class _Rows(Protocol):
    def decode(self, count: int) -> np.ndarray: ...


class TopRows:
    """An image whose pixels are decoded on demand, only down to the rows asked for.

    `shape` and `dtype` are known from the header; `rows(n)` returns at least the first n rows
    (possibly all), exactly as `cv2.imdecode(data, IMREAD_COLOR)` gives them with the recorded
    `paste`s painted over in order.
    """

    def __init__(self, height: int, width: int, reader: _Rows):
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.reader = reader
        self.pastes: list[tuple[int, int, np.ndarray, np.ndarray]] = []

    @classmethod
    def parse(cls, data: bytes) -> Optional[TopRows]:
        """A TopRows for a JPEG or PNG whose rows can be decoded from the top, else None (decode it in full)."""
        found = _JpegRows.parse(data) or _PngRows.parse(data)
        return None if found is None else cls(*found)

    def paste(self, x: int, y: int, pixels: np.ndarray, mask: np.ndarray) -> None:
        """Paint `pixels` where `mask` is set, top-left at (x, y), once the rows are decoded."""
        self.pastes.append((x, y, pixels, mask))

    def rows(self, count: int) -> np.ndarray:
        """At least the top `count` rows, bit-identical to the same rows of a full decode."""
        image = self._decode(min(max(int(count), 1), self.shape[0]))
        for x, y, pixels, mask in self.pastes:
            region = image[y:y + pixels.shape[0], x:x + pixels.shape[1]]
            inside = mask[:region.shape[0]]
            region[inside] = pixels[:region.shape[0]][inside]
        return image

    def full(self) -> np.ndarray:
        return self.rows(self.shape[0])

    def _decode(self, count: int) -> np.ndarray:
        return self.reader.decode(count)


def _opencv(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable image")
    return image


# --------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------

class _JpegRows:
    def __init__(self, data: bytes, height: int, height_offset: int, band: int):
        self.data, self.height, self.height_offset, self.band = data, height, height_offset, band

    @classmethod
    def parse(cls, data: bytes) -> Optional[tuple[int, int, _JpegRows]]:
        """(height, width, reader) of a baseline JPEG OpenCV would not rotate, else None."""
        for marker, pos, segment in _jpeg_segments(data):
            if marker == 0xE1 and segment.startswith(b"Exif\x00\x00") and _rotated(segment[6:]):
                return None
            if marker in BASELINE_FRAMES and len(segment) >= 6:
                height, width, components = struct.unpack_from(">HHB", segment, 1)
                if components not in (1, 3) or len(segment) < 6 + 3 * components or not height or not width:
                    return None
                vertical = max(segment[7 + 3 * i] & 0x0F for i in range(components))
                # the height field follows the marker, the length and the sample precision
                return height, width, cls(data, height, pos + 5, 8 * max(vertical, 1))
        return None  # progressive, arithmetic-coded, lossless, a scan before any frame, or not a JPEG

    def decode(self, count: int) -> np.ndarray:
        rows = -(-count // self.band) * self.band + self.band  # one band beyond the last row needed
        if rows >= self.height or not _alone():
            return _opencv(self.data)
        start = self.height_offset
        shortened = b"".join((self.data[:start], struct.pack(">H", rows), memoryview(self.data)[start + 2:]))
        with _stderr_silenced():
            return _opencv(shortened)


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


# --------------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------------

class _PngRows:
    def __init__(self, data: bytes, height: int, row_bytes: int, first_data: int):
        self.data, self.height, self.row_bytes, self.first_data = data, height, row_bytes, first_data

    @classmethod
    def parse(cls, data: bytes) -> Optional[tuple[int, int, _PngRows]]:
        """(height, width, reader) of a non-interlaced PNG without an EXIF chunk, else None."""
        if not data.startswith(PNG_SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR" or _isal_zlib() is None:
            return None
        width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
        if colour not in PNG_CHANNELS or interlace or not width or not height:
            return None
        pos = 33
        while pos + 8 <= len(data):  # the chunks before the image data
            length, kind = struct.unpack_from(">I4s", data, pos)
            if kind == b"IDAT":
                row_bytes = 1 + (width * PNG_CHANNELS[colour] * depth + 7) // 8  # filter byte + samples
                return height, width, cls(data, height, row_bytes, pos)
            if kind == b"eXIf":  # OpenCV may turn the image
                return None
            pos += 12 + length
        return None

    def decode(self, count: int) -> np.ndarray:
        raw = self._inflate(count * self.row_bytes)
        if len(raw) < count * self.row_bytes:  # a truncated stream: OpenCV decides what it gives
            return _opencv(self.data)
        return _opencv(self._stored_copy(raw, count))

    def _inflate(self, size: int) -> bytes:
        """The first `size` bytes of the filtered rows; the rest of the stream is never read."""
        inflater, parts, pos = _isal_zlib().decompressobj(), [], self.first_data
        while size > 0 and pos + 8 <= len(self.data):
            length, kind = struct.unpack_from(">I4s", self.data, pos)
            if kind != b"IDAT":
                break
            part = inflater.decompress(memoryview(self.data)[pos + 8:pos + 8 + length], size)
            parts.append(part)
            size -= len(part)
            pos += 12 + length
        return b"".join(parts)

    def _stored_copy(self, raw: bytes, count: int) -> bytes:
        """This file with `count` rows in its header and those rows in one IDAT chunk, stored as is."""
        isal_zlib = _isal_zlib()
        view = memoryview(raw)
        stream = [b"\x78\x01"]  # zlib header; then deflate blocks of type "stored"
        for start in range(0, len(raw), STORED_BLOCK):
            block = view[start:start + STORED_BLOCK]
            stream.append(struct.pack("<BHH", start + STORED_BLOCK >= len(raw), len(block), len(block) ^ 0xFFFF))
            stream.append(block)
        stream.append(struct.pack(">I", isal_zlib.adler32(raw)))
        checksum = isal_zlib.crc32(b"IDAT")
        for part in stream:
            checksum = isal_zlib.crc32(part, checksum)
        header = bytearray(self.data[:self.first_data])  # signature, IHDR and the chunks before the data
        header[20:24] = struct.pack(">I", count)
        header[29:33] = struct.pack(">I", zlib.crc32(bytes(header[12:29])))
        size = sum(len(part) for part in stream)
        return b"".join((header, struct.pack(">I", size), b"IDAT", *stream, struct.pack(">I", checksum), PNG_END))


@functools.cache
def _isal_zlib():
    """ISA-L's zlib interface, or None where the package is missing (PNGs are then decoded whole)."""
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    return isal_zlib
