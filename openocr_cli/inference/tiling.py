"""Tiled inference for images too large for the normal resize: one full-resolution probability map from tiles.

Resizing a 4000-pixel scan to 960 pixels shrinks 12-pixel text to 3 pixels, below what the model
detects. Running tiles at the image's own resolution keeps it, and merging their *probability
maps* (not their boxes) before post-processing means a word across a seam is one connected region,
so one box, with no box-merging heuristic.

Tiles are at most `side` x `side` original pixels, all one size (a multiple of 32, so they batch
together): the fewest tiles along each axis that share at least `overlap` pixels with their
neighbours, spread evenly (a 3072-pixel side with side 960 and overlap 128 is 4 tiles of 864, not 4
of 960 with the last one moved in: 1.13x the pixels instead of 1.25x). Each pixel of the merged map
is taken from the tile in which it lies farthest from an inner edge: the cut between two neighbours
is the middle of their overlap, so every kept pixel had at least overlap / 2 pixels of context on
that side. The default overlap, DEFAULT_OVERLAP, gives 64 pixels of context: text up to about
128 px tall crossing a seam is seen whole by one of the two tiles, and taller text is rare in
scans that need tiling.

Memory: the decoded image, its float32 map (4 bytes per pixel) and one batch of tiles; not the
network's activations for the whole image, which is what makes full-resolution inference costly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from openocr_cli.errors import UserError

DEFAULT_SIDE = 960  # the default limit side: tiles run at the size the model is evaluated at
DEFAULT_OVERLAP = 128
# `auto` tiles a downscaled image when its smallest detected text (the 10th percentile of the boxes' heights)
# is below this height after the resize. eval's recall-by-height shows the model loses most text under about
# 8 px; the boxes that survive the resize are the larger ones, so text found at under 12 px means smaller text
# of the same image was probably lost (on 2304x3072 mosaics with 12-55 px text, resized to 960: yes).
AUTO_MIN_TEXT_PX = 12.0
MODES = ("off", "auto")


@dataclass(frozen=True)
class TileSettings:
    """off, auto (decide per image) or fixed (every image), with the tile side and overlap in original pixels."""

    mode: str = "off"
    side: int = DEFAULT_SIDE
    overlap: int = DEFAULT_OVERLAP

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


def parse_tile(value, overlap: Optional[int] = None) -> TileSettings:
    """'off' | 'auto' | N (tile side in pixels) -> TileSettings; bad values are usage errors naming --tile."""
    text = "off" if value is None else str(value).strip().lower()
    if text in MODES:
        settings = TileSettings(mode=text)
    else:
        try:
            side = int(text)
        except ValueError:
            raise UserError(f"--tile {value!r}: use off, auto or a tile side in pixels (e.g. --tile 1024).",
                            exit_code=2) from None
        if side < 64 or side % 32:
            raise UserError(f"--tile {side}: the tile side must be a multiple of 32, at least 64.", exit_code=2)
        # tiles of 128 px and under get half their side as the default overlap (128 would leave no step)
        settings = TileSettings(mode="fixed", side=side, overlap=min(DEFAULT_OVERLAP, side // 2))
    if overlap is not None:
        if overlap < 0 or overlap >= settings.side // 2:
            raise UserError(f"--tile-overlap {overlap}: use 0 to less than half the tile side ({settings.side}).",
                            exit_code=2)
        settings = TileSettings(settings.mode, settings.side, overlap)
    return settings


def _axis(length: int, side: int, overlap: int) -> tuple[int, list[int]]:
    """(tile size, tile starts) along one axis: the fewest tiles of at most `side` that overlap by at least
    `overlap`, all the same size (a multiple of 32), spread evenly so no pixels are computed needlessly."""
    if length <= side:
        return -(-length // 32) * 32, [0]
    count = -(-(length - overlap) // (side - overlap))
    size = min(side, -(-(length + (count - 1) * overlap) // count // 32) * 32)
    while count > 1 and (size * count - length) // (count - 1) < overlap:  # rounding left too little overlap
        size += 32
    size = min(size, side)
    return size, [round(i * (length - size) / (count - 1)) for i in range(count)]


def _cuts(starts: Sequence[int], side: int, length: int) -> list[tuple[int, int]]:
    """For each tile, the [begin, end) it owns: neighbours split their overlap in the middle."""
    owned = []
    for i, start in enumerate(starts):
        begin = 0 if i == 0 else (start + starts[i - 1] + side) // 2
        end = length if i == len(starts) - 1 else (starts[i + 1] + start + side) // 2
        owned.append((begin, end))
    return owned


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    own_y: tuple[int, int]
    own_x: tuple[int, int]


def grid(h: int, w: int, side: int, overlap: int) -> tuple[tuple[int, int], list[Tile]]:
    """The tile size (h, w) and the tiles covering an h x w image, each with the region of the merged map it
    provides."""
    (th, ys), (tw, xs) = _axis(h, side, overlap), _axis(w, side, overlap)
    own_ys, own_xs = _cuts(ys, th, h), _cuts(xs, tw, w)
    return (th, tw), [Tile(y, x, oy, ox) for y, oy in zip(ys, own_ys) for x, ox in zip(xs, own_xs)]


def _padded(crop: np.ndarray, side_h: int, side_w: int) -> np.ndarray:
    """A crop smaller than the tile (an image smaller than `side` on that axis) padded by edge replication."""
    h, w = crop.shape[:2]
    if h == side_h and w == side_w:
        return crop
    return np.pad(crop, ((0, side_h - h), (0, side_w - w), (0, 0)), mode="edge")


def tiled_map(image: np.ndarray, settings: TileSettings, normalize: Callable[[np.ndarray], np.ndarray],
              forward: Callable[[np.ndarray], np.ndarray], batch_size: int = 4
              ) -> tuple[np.ndarray, int, tuple[int, int]]:
    """The (h, w) float32 probability map of a BGR image from tiles at its own resolution, the tile count and
    the tile size.

    `normalize` is the Predictor's (HWC uint8 -> CHW float32), `forward` the backend ((N,3,H,W) -> (N,1,H,W)).
    """
    h, w = image.shape[:2]
    (tile_h, tile_w), tiles = grid(h, w, settings.side, settings.overlap)
    merged = np.empty((h, w), np.float32)
    for start in range(0, len(tiles), max(1, batch_size)):
        part = tiles[start:start + batch_size]
        batch = np.stack([normalize(_padded(image[t.y:t.y + tile_h, t.x:t.x + tile_w], tile_h, tile_w))
                          for t in part])
        maps = forward(batch)
        for tile, prob in zip(part, maps):
            (y0, y1), (x0, x1) = tile.own_y, tile.own_x
            merged[y0:y1, x0:x1] = prob[0, y0 - tile.y:y1 - tile.y, x0 - tile.x:x1 - tile.x]
    return merged, len(tiles), (tile_h, tile_w)


def tile_boxes(h: int, w: int, settings: TileSettings) -> list[tuple[int, int, int, int]]:
    """The (x0, y0, x1, y1) each tile covers in an h x w image (eval --report draws them)."""
    (th, tw), tiles = grid(h, w, settings.side, settings.overlap)
    return [(t.x, t.y, min(t.x + tw, w), min(t.y + th, h)) for t in tiles]


def auto_reason(src_hw: tuple[int, int], net_hw: tuple[int, int], text_heights: Sequence[float]) -> Optional[str]:
    """Why `auto` tiles this image (None: it does not): the resize put its smallest text below AUTO_MIN_TEXT_PX.

    `text_heights` are the detected boxes' heights in source pixels from the normal pass. An image that
    is not downscaled is never tiled, so its boxes stay exactly the normal ones.
    """
    scale = min(net_hw[0] / src_hw[0], net_hw[1] / src_hw[1])
    if scale >= 1.0:
        return None
    if not text_heights:
        return f"no text found at {scale:.2f}x (the resize to {net_hw[1]}x{net_hw[0]} may have erased it)" \
            if scale < 0.5 else None
    small = float(np.percentile(text_heights, 10)) * scale
    if small < AUTO_MIN_TEXT_PX:
        return (f"its smallest text is {small:.1f} px after the resize to {net_hw[1]}x{net_hw[0]} ({scale:.2f}x), "
                f"below {AUTO_MIN_TEXT_PX:g} px")
    return None


def shrunk_text(src_hw: tuple[int, int], net_hw: tuple[int, int], text_heights: Sequence[float]) -> bool:
    """Whether the resize left most of an image's detected boxes under AUTO_MIN_TEXT_PX, so that smaller text of
    it was probably lost (predict then suggests --tile auto). Boxes are unclipped, about 1.5x the text's height:
    12-pixel boxes hold 8-pixel text."""
    scale = min(net_hw[0] / src_hw[0], net_hw[1] / src_hw[1])
    return scale < 1.0 and bool(text_heights) and float(np.median(text_heights)) * scale < AUTO_MIN_TEXT_PX


def text_heights(polygons: Sequence[np.ndarray]) -> list[float]:
    """Each box's height: the shorter side of its minimum-area rectangle (source pixels)."""
    import cv2

    return [float(min(cv2.minAreaRect(np.asarray(p, np.float32))[1])) for p in polygons]
