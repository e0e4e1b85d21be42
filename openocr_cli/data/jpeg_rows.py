"""Decode only the top rows of a baseline JPEG: a training sample rarely needs the whole picture.

CopyPaste takes a few word crops from a second image, and those crops decide how far down that
image is read; the training image itself is read down to the last row its crop window comes from
(data.planned), with CopyPaste's pastes recorded and painted after decoding. A baseline JPEG is
stored band by band from the top (one MCU row of 8 or 16 pixel rows per band), so writing a smaller
height into a copy of the frame header makes OpenCV's decoder stop after that band and skip the
rest of the file. Every row more than one MCU row above that new bottom comes out bit-identical to
the full decode (chroma upsampling only looks one chroma row ahead; tests/test_jpeg_rows.py checks
this on every subsampling). Progressive and arithmetic-coded files, rotated EXIF orientations and
anything that is not a JPEG are decoded in full, as before.

The decoder warns about the data it skipped on stderr ("extraneous bytes"); that warning is
silenced by pointing file descriptor 2 at /dev/null for the call, which is only done while no other
Python thread could write there (a data-loader worker: its main thread and multiprocessing's helpers),
so no other output is lost; elsewhere the file is decoded in full.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Optional

import cv2
import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
BASELINE_FRAMES = (0xC0, 0xC1)  # Huffman-coded sequential (8- or 12-bit); progressive/arithmetic excluded
STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])


class TopRows:
    """A baseline JPEG whose pixels are decoded on demand, only down to the rows asked for.

    `shape` and `dtype` are known from the header; `rows(n)` returns at least the first n rows
    (possibly all), exactly as `cv2.imdecode(data, IMREAD_COLOR)` gives them with the recorded
    `paste`s painted over in order.
    """

    def __init__(self, data: bytes, height: int, width: int, height_offset: int, mcu_rows: int):
        self.data, self.height_offset, self.mcu_rows = data, height_offset, mcu_rows
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.pastes: list[tuple[int, int, np.ndarray, np.ndarray]] = []

    def paste(self, x: int, y: int, pixels: np.ndarray, mask: np.ndarray) -> None:
        """Paint `pixels` where `mask` is set, top-left at (x, y), once the rows are decoded."""
        self.pastes.append((x, y, pixels, mask))

    @classmethod
    def parse(cls, data: bytes) -> Optional[TopRows]:
        """A TopRows for a baseline JPEG OpenCV would not rotate, else None (decode it in full)."""
        frame = _baseline_frame(data)
        if frame is None:
            return None
        height, width, offset, mcu_rows = frame
        return cls(data, height, width, offset, mcu_rows) if height > 0 and width > 0 else None

    def rows(self, count: int) -> np.ndarray:
        """At least the top `count` rows, bit-identical to the same rows of a full decode."""
        band = self.mcu_rows
        decoded_rows = -(-max(int(count), 1) // band) * band + band  # one band beyond the last row needed
        if decoded_rows >= self.shape[0] or not _alone():
            return self.full()
        data = bytearray(self.data)
        data[self.height_offset:self.height_offset + 2] = struct.pack(">H", decoded_rows)
        with _stderr_silenced():
            return self._decode(bytes(data))

    def full(self) -> np.ndarray:
        return self._decode(self.data)

    def _decode(self, data: bytes) -> np.ndarray:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("not a decodable image")
        for x, y, pixels, mask in self.pastes:
            region = image[y:y + pixels.shape[0], x:x + pixels.shape[1]]
            inside = mask[:region.shape[0]]
            region[inside] = pixels[:region.shape[0]][inside]
        return image


def _baseline_frame(data: bytes) -> Optional[tuple[int, int, int, int]]:
    """(height, width, offset of the height field, MCU height) of a baseline JPEG, else None."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in STANDALONE_MARKERS:
            pos += 2
            continue
        length = struct.unpack_from(">H", data, pos + 2)[0]
        segment = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00") and _rotated(segment[6:]):
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header (SOFn)
            if marker not in BASELINE_FRAMES or len(segment) < 6:
                return None
            height, width, components = struct.unpack_from(">HHB", segment, 1)
            if components not in (1, 3) or len(segment) < 6 + 3 * components:
                return None
            vertical = max(segment[7 + 3 * i] & 0x0F for i in range(components))
            return height, width, pos + 5, 8 * max(vertical, 1)
        if marker == 0xDA:  # scan data before any frame header: not a file we understand
            return None
        pos += 2 + length
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
