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

Memory: the decoded image, one batch of tiles and one stripe (a row of tiles) of the merged map at a time,
post-processed as it completes (Stripes); not the whole image's map, nor the network's activations for the
whole image, which is what makes full-resolution inference costly.

`auto` decides per image on probes: a few crops run at full resolution where the resize destroys the most
detail; it tiles when their boxes would be too small after the resize (probe_inputs, probe_reason).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from openocr_cli.errors import UserError
from openocr_cli.postprocess import DBPostProcess, Detection

DEFAULT_SIDE = 960  # the default limit side: tiles run at the size the model is evaluated at
DEFAULT_OVERLAP = 128
MODES = ("off", "auto")


@dataclass(frozen=True)
class TileSettings:
    """off, auto (decide per image) or fixed (every image), with the tile side and overlap in original pixels."""

    mode: str = "off"
    side: int = DEFAULT_SIDE
    overlap: int = DEFAULT_OVERLAP
    probe: bool = False  # off: still probe shrunk images, to say which lost text to the resize (predict's warning)

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
        settings = dataclasses.replace(settings, overlap=overlap)
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


@dataclass
class Tiled:
    """What a tiled image gave: its boxes, the tile count and size, and the merged map when it was asked for."""

    detections: list[Detection]
    count: int
    tile_hw: tuple[int, int]
    prob: Optional[np.ndarray] = None


def tiled_detections(image: np.ndarray, settings: TileSettings, normalize: Callable[[np.ndarray], np.ndarray],
                     forward: Callable[[np.ndarray], np.ndarray], post: DBPostProcess, batch_size: int = 4,
                     keep_map: bool = False) -> Tiled:
    """The boxes of a BGR image from tiles at its own resolution, one row of tiles (a stripe) at a time.

    `normalize` is the Predictor's (HWC uint8 -> CHW float32), `forward` the backend ((N,3,H,W) -> (N,1,H,W)).
    Only one stripe of the merged float32 map exists at once (plus the rows of regions still open at its
    lower edge), so memory grows with the tile side times the image width, not with the image area; the whole
    map is assembled only with `keep_map` (eval --tune asks for it).
    """
    h, w = image.shape[:2]
    (tile_h, tile_w), tiles = grid(h, w, settings.side, settings.overlap)
    whole = np.empty((h, w), np.float32) if keep_map else None
    stripes = Stripes(post, h, w, max_rows=CARRY_TILES * tile_h)
    rows: dict[tuple[int, int], list[Tile]] = {}
    for tile in tiles:
        rows.setdefault(tile.own_y, []).append(tile)
    for (y0, y1), row in rows.items():
        stripe = np.empty((y1 - y0, w), np.float32)
        for start in range(0, len(row), max(1, batch_size)):
            part = row[start:start + batch_size]
            batch = np.stack([normalize(_padded(image[t.y:t.y + tile_h, t.x:t.x + tile_w], tile_h, tile_w))
                              for t in part])
            for tile, prob in zip(part, forward(batch)):
                x0, x1 = tile.own_x
                stripe[:, x0:x1] = prob[0, y0 - tile.y:y1 - tile.y, x0 - tile.x:x1 - tile.x]
        if whole is not None:
            whole[y0:y1] = stripe
        stripes.add(stripe, final=y1 == h)
    return Tiled(stripes.detections, len(tiles), (tile_h, tile_w), whole)


# A region still open at a stripe's lower edge waits for the next stripe, with every row back to its top. One
# taller than this many tiles (a ruled line down a drawing, a dark photo) is cut there: memory stays bounded
# by the tile side, and such a region is not text DBNet boxes anyway.
CARRY_TILES = 3


class Stripes:
    """Post-processing of a merged map fed stripe by stripe, top to bottom: a region is boxed once it is complete
    (no row of it reaches the newest stripe's lower edge), with all of its rows, so one crossing a stripe border
    gives the one box post-processing of the whole map gives (the score of a `fast`-mode box whose rectangle
    reaches past its region's rows is taken from those rows only)."""

    def __init__(self, post: DBPostProcess, h: int, w: int, max_rows: int):
        self.post, self.h, self.w, self.max_rows = post, h, w, max_rows
        self.pending = np.empty((0, w), np.float32)
        self.top = 0  # image row of pending[0]
        self.detections: list[Detection] = []

    def add(self, stripe: np.ndarray, final: bool) -> None:
        pending = np.concatenate([self.pending, stripe]) if len(self.pending) else stripe
        cut = len(pending) if final else self._complete_rows(pending)
        if cut:
            self._box(pending[:cut])
        self.pending, self.top = pending[cut:].copy(), self.top + cut

    def _complete_rows(self, pending: np.ndarray) -> int:
        """How many leading rows hold only complete regions: above every region that reaches the lower edge,
        and not through any region."""
        bitmap = (pending > self.post.thresh).astype(np.uint8)
        if self.post.use_dilation:
            bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
        _, _, stats, _ = cv2.connectedComponentsWithStats(bitmap, connectivity=8)
        tops = stats[1:, cv2.CC_STAT_TOP]
        bottoms = tops + stats[1:, cv2.CC_STAT_HEIGHT]
        open_ = bottoms >= len(pending)
        cut = int(tops[open_].min()) if open_.any() else len(pending)
        while True:
            through = (tops < cut) & (bottoms > cut)
            if not through.any():
                break
            cut = int(tops[through].min())
        if cut == 0 and len(pending) > self.max_rows:
            return len(pending)
        return cut

    def _box(self, rows: np.ndarray) -> None:
        # the candidate cap grows with the stripe's area (postprocess.CAP_AREA)
        self.detections += self.post.boxes(rows, (self.h, self.w), self.h, self.w, top=self.top)


def tile_boxes(h: int, w: int, settings: TileSettings) -> list[tuple[int, int, int, int]]:
    """The (x0, y0, x1, y1) each tile covers in an h x w image (eval --report draws them)."""
    (th, tw), tiles = grid(h, w, settings.side, settings.overlap)
    return [(t.x, t.y, min(t.x + tw, w), min(t.y + th, h)) for t in tiles]


# --- the evidence `auto` (and predict --tile off's warning) decide on -------------------------------------------
# A downscaled pass cannot say how small an image's text is: text the resize erased leaves no box, or blobs of
# merged lines whose heights look fine. So a few crops are run at the image's own resolution ("probes"), where the
# text is as the model was trained to see it, and their boxes' heights are scaled by the resize.
PROBE_SIDE = 256  # px: 55-px text (about 80-px boxes) fits whole; 3 probes cost about 0.3 of a 960 x 720 pass
PROBE_COUNT = 3
# A sparse page (wide margins, a few short lines) can leave three probes with too few whole boxes to judge by:
# while they hold fewer than ENOUGH_BOXES and some, but too few, small ones, up to PROBE_ROUNDS - 1 more rounds
# of PROBE_COUNT probes look further. An image whose probes show no small text at all (a photo, a page whose
# text survives the resize) is decided after the first round and pays for that one only.
ENOUGH_BOXES = 6
PROBE_ROUNDS = 3
# predict --tile off probes only the one crop that loses the most detail, for its warning: three would add about
# 29 % to every 1280x720 photo the default run shrinks (measured), one about a third of that.
WARN_PROBE_COUNT = 1
# Probes go where the resize destroys the most detail: the mean absolute difference between the image and the
# image downscaled as the network sees it and scaled back, measured on every k-th pixel of every k-th row (at
# most PROBE_WORK_PIXELS of them: sampling, not averaging, keeps the fine detail of small text, and costs next to
# nothing). Text, small text most of all, is where that detail is; blank margins have none, and cells under
# PROBE_MIN_DETAIL (grey levels) are never probed.
PROBE_WORK_PIXELS = 2_000_000
PROBE_MIN_DETAIL = 1.0
# A probe box under AUTO_MIN_TEXT_PX after the resize is text the normal pass loses: boxes are unclipped, about
# 1.5x the text's height, and eval's recall-by-height shows the model loses most text under about 8 px. `auto`
# tiles when at least AUTO_MIN_SMALL probe boxes, and AUTO_MIN_SHARE of them, are that small: one or two small
# boxes (a footnote, a speck the model took for text, pieces of a big glyph) do not buy a tiled pass; a fifth of
# the text does. (Measured with benchmarks/bench_huge.py: pages of small text gave 4 to 10 such boxes, a page of
# 50-230 px text 2.)
AUTO_MIN_TEXT_PX = 12.0
AUTO_MIN_SMALL = 3
AUTO_MIN_SHARE = 0.2
# Text larger than the model was trained on is the opposite case: at full resolution a probe sees pieces of one
# big glyph (strokes, bars) as small "text", while the downscaled pass reads the word whole. So a small probe box
# is not evidence when it lies inside a line the downscaled pass resolved: a box at least RESOLVED_LINE_PX tall
# after the resize (twice the smallest text kept) and shaped like a line (long side >= LINE_ASPECT x short). A
# downscaled box holding two line-shaped probe boxes one above the other is merged lines, not one resolved line,
# and explains nothing (small text seen at 0.25x as blobs of merged lines, which fooled the rule before probes).
RESOLVED_LINE_PX = 2 * AUTO_MIN_TEXT_PX
LINE_ASPECT = 2.0


@dataclass(frozen=True)
class Probes:
    """Full-resolution crops of one image, normalised for the backend, where they lie and the resize's scale."""

    batch: np.ndarray  # (K, 3, PROBE_SIDE, PROBE_SIDE) float32
    boxes: tuple[tuple[int, int, int, int], ...]  # each crop's (x0, y0, x1, y1) in the image
    src_hw: tuple[int, int]
    net_hw: tuple[int, int]

    @property
    def scale(self) -> float:
        return min(self.net_hw[0] / self.src_hw[0], self.net_hw[1] / self.src_hw[1])


def probe_inputs(image: np.ndarray, net_hw: tuple[int, int], normalize: Callable[[np.ndarray], np.ndarray],
                 side: int = PROBE_SIDE, count: int = PROBE_COUNT * PROBE_ROUNDS) -> Optional[Probes]:
    """The probes of a BGR image the resize to `net_hw` shrinks (None when it does not, or it has no detail)."""
    h, w = image.shape[:2]
    scale = min(net_hw[0] / h, net_hw[1] / w)
    if scale >= 1.0:
        return None
    boxes = tuple(_probe_boxes(image, scale, side, count))
    if not boxes:
        return None
    crops = [normalize(_padded(image[y0:y1, x0:x1], side, side)) for x0, y0, x1, y1 in boxes]
    return Probes(np.stack(crops), boxes, (h, w), tuple(net_hw))


def _probe_boxes(image: np.ndarray, scale: float, side: int, count: int) -> list[tuple[int, int, int, int]]:
    """Up to `count` side x side crops, one per grid cell, where the resize loses the most detail; not two in
    neighbouring cells while other cells with detail remain (spread over the page, not one paragraph)."""
    h, w = image.shape[:2]
    # sampled at least twice as finely as the network sees the image, or the resize would lose nothing of it
    step = max(1, min(math.ceil(math.sqrt(h * w / PROBE_WORK_PIXELS)), int(0.5 / scale)))
    gray = cv2.cvtColor(np.ascontiguousarray(image[::step, ::step]), cv2.COLOR_BGR2GRAY)
    gh, gw = gray.shape
    rel = min(1.0, scale * step)
    seen = cv2.resize(gray, (max(1, round(gw * rel)), max(1, round(gh * rel))), interpolation=cv2.INTER_AREA)
    detail = cv2.absdiff(gray, cv2.resize(seen, (gw, gh), interpolation=cv2.INTER_LINEAR)).astype(np.float32)
    rows, cols = -(-h // side), -(-w // side)
    cells = cv2.resize(detail, (cols, rows), interpolation=cv2.INTER_AREA)
    order = np.argsort(-cells, axis=None, kind="stable")
    picked: list[tuple[int, int]] = []
    for spread in (True, False):
        for flat in order:
            r, c = divmod(int(flat), cols)
            if len(picked) == count or cells[r, c] < PROBE_MIN_DETAIL:
                break
            if (r, c) in picked or (spread and any(abs(r - pr) <= 1 and abs(c - pc) <= 1 for pr, pc in picked)):
                continue
            picked.append((r, c))
    out = []
    for r, c in picked:
        y0, x0 = max(0, min(r * side, h - side)), max(0, min(c * side, w - side))
        out.append((x0, y0, min(w, x0 + side), min(h, y0 + side)))
    return out


def probe_reason(probes: Probes, forward: Callable[[np.ndarray], np.ndarray], post: DBPostProcess,
                 resolved: Sequence[Detection] = ()) -> Optional[str]:
    """Why the resize loses text of this image (None: the probes show none it loses), from the probes' boxes;
    `resolved`: the downscaled pass's boxes (source pixels), whose resolved lines explain small probe boxes."""
    found: list[np.ndarray] = []  # whole probe boxes, in source pixels
    used = small = 0
    scale = probes.scale
    while used < len(probes.boxes) and (used == 0 or (len(found) < ENOUGH_BOXES and 0 < small < AUTO_MIN_SMALL)):
        batch = slice(used, used + PROBE_COUNT)
        found += _whole_boxes(probes.boxes[batch], forward(probes.batch[batch]), post, probes.src_hw)
        used = min(used + PROBE_COUNT, len(probes.boxes))
        explained = _explained(found, resolved, scale)
        small = sum(_height(box) * scale < AUTO_MIN_TEXT_PX and not seen for box, seen in zip(found, explained))
    if small < AUTO_MIN_SMALL or small < AUTO_MIN_SHARE * len(found):
        return None
    net_h, net_w = probes.net_hw
    return (f"{small} of {len(found)} boxes found at full resolution in {used} probes would be "
            f"under {AUTO_MIN_TEXT_PX:g} px after the resize to {net_w}x{net_h} ({scale:.2f}x)")


def _whole_boxes(boxes: Sequence[tuple[int, int, int, int]], maps: np.ndarray, post: DBPostProcess,
                 src_hw: tuple[int, int]) -> list[np.ndarray]:
    """The probes' boxes in source pixels, leaving out those a probe's edge cut (see below)."""
    h, w = src_hw
    found = []
    for (x0, y0, x1, y1), prob in zip(boxes, maps):
        ph, pw = y1 - y0, x1 - x0
        for det in post(prob[0, :ph, :pw], ph, pw):
            xs, ys = det.points[:, 0], det.points[:, 1]
            # A box cut by the probe's edge (not the image's) is part of a word. Cut across its length (a line cut
            # by a side edge, wider than tall) it keeps its height; cut along it (the last strokes of a word: a
            # sliver taller than wide) its short side is the cut, not the text's height, and it is left out.
            wide = np.ptp(xs) > np.ptp(ys)
            side_cut = (x0 > 0 and xs.min() <= 1) or (x1 < w and xs.max() >= pw - 2)
            end_cut = (y0 > 0 and ys.min() <= 1) or (y1 < h and ys.max() >= ph - 2)
            if (side_cut and (end_cut or not wide)) or (end_cut and wide):
                continue
            found.append(det.points.astype(np.float32) + np.float32([x0, y0]))
    return found


def _explained(found: Sequence[np.ndarray], resolved: Sequence[Detection], scale: float) -> list[bool]:
    """Which probe boxes lie (by their centre) inside a line the downscaled pass resolved (see RESOLVED_LINE_PX)."""
    explained = [False] * len(found)
    centres = [tuple(float(v) for v in box.mean(axis=0)) for box in found]
    for det in resolved:
        if _height(det.points) * scale < RESOLVED_LINE_PX or not _line_like(det.points):
            continue
        contour = np.asarray(det.points, np.float32).reshape(-1, 1, 2)
        inside = [i for i, c in enumerate(centres) if cv2.pointPolygonTest(contour, c, False) >= 0]
        lines = [found[i][:, 1] for i in inside if _line_like(found[i])]
        if lines and max(ys.min() for ys in lines) >= min(ys.max() for ys in lines):
            continue  # two probe lines one above the other: merged lines
        for i in inside:
            explained[i] = True
    return explained


def _line_like(points: np.ndarray) -> bool:
    """A box shaped like a word or a line: its long side at least LINE_ASPECT times its short side."""
    sides = cv2.minAreaRect(np.asarray(points, np.float32))[1]
    return max(sides) >= LINE_ASPECT * min(sides)


def _height(points: np.ndarray) -> float:
    """A box's height: the shorter side of its minimum-area rectangle."""
    return float(min(cv2.minAreaRect(np.asarray(points, np.float32))[1]))
