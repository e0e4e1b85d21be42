"""Deterministic synthetic text-detection data for the offline demo and the tests.

Each image gets a noisy, shaded background with a few non-text shapes, then 3-8 rotated words
drawn with OpenCV's Hershey fonts. A word's label is the rotated tight box of its ink (plus a
1-2 px margin), so the labels are exact by construction. About 10% of the words are tiny and
blurred and labelled "###" (do not care), like illegible text in real sets.

Output follows the PaddleOCR/OpenOCR layout: `train/0000.png`, `test/0000.png` and label files
`train_label.txt` / `test_label.txt` whose image paths are relative to `out_dir`, so
`--data-dir out_dir` works. Everything is drawn from `numpy.random.default_rng` seeded with
(seed, split, index): the same seed gives identical files, and one image does not depend on how
many others are made.
"""

from __future__ import annotations

import argparse
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import shapely

FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN)
ALPHABET = string.ascii_letters + string.digits
IGNORE_TEXT = "###"
IGNORE_PROB = 0.1
MIN_GAP = 2.0  # px between any two word boxes, so shrunk/expanded label maps stay separate
BORDER = 1  # px kept free at the image edge
SPLITS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SynthPaths:
    """Where `generate` wrote the data: pass `data_dir` as --data-dir with either label file."""

    data_dir: Path
    train_label: Path
    test_label: Path


@dataclass
class _Word:
    """A word rendered on its own patch: ink alpha in [0, 1] and the ink box corners (TL, TR, BR, BL)."""

    text: str
    alpha: np.ndarray
    quad: np.ndarray
    color: np.ndarray


def generate(out_dir: Path, num_train: int = 64, num_test: int = 16, seed: int = 0,
             size: tuple[int, int] = (256, 320)) -> SynthPaths:
    """Write `num_train` + `num_test` images of `size` (H, W) and their label files under `out_dir`."""
    out_dir = Path(out_dir)
    height, width = size
    if height < 32 or width < 32:
        raise ValueError(f"image size must be at least 32x32, got {height}x{width}")
    labels = {}
    for split, count in (("train", num_train), ("test", num_test)):
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for index in range(count):
            rng = np.random.default_rng([seed, SPLITS[split], index])
            image, regions = make_image(rng, height, width)
            rel = f"{split}/{index:04d}.png"
            if not cv2.imwrite(str(out_dir / rel), image):
                raise OSError(f"could not write {out_dir / rel}")
            lines.append(f"{rel}\t{json.dumps(regions, ensure_ascii=False)}\n")
        labels[split] = out_dir / f"{split}_label.txt"
        with open(labels[split], "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(lines)
    return SynthPaths(out_dir, labels["train"], labels["test"])


def make_image(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, list[dict]]:
    """One BGR uint8 image and its regions ({"transcription", "points"}), at least one word each."""
    light = rng.random() < 0.5
    bg_level = rng.uniform(170, 245) if light else rng.uniform(15, 80)
    canvas = _background(rng, height, width, bg_level)
    text_level = (0, 70) if light else (175, 255)
    _distractors(rng, canvas, text_level)

    regions: list[dict] = []
    placed: list[shapely.Polygon] = []
    wanted = int(rng.integers(3, 9))
    for _ in range(3 * wanted):  # words that find no free spot are dropped, with a bounded retry
        if len(regions) == wanted:
            break
        ignore = rng.random() < IGNORE_PROB
        word = _render_word(rng, height, width, text_level, ignore)
        quad = _place(rng, word, placed, height, width)
        if quad is None:
            continue
        _blend(canvas, word, quad[1])
        placed.append(shapely.Polygon(quad[0]))
        regions.append({"transcription": IGNORE_TEXT if ignore else word.text,
                        "points": quad[0].tolist()})
    if not regions:  # cannot happen for sizes >= 32x32: the first word always fits an empty image
        raise RuntimeError(f"could not place any word on a {height}x{width} image")

    sigma = rng.uniform(1.5, 6.0)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), regions


def _background(rng: np.random.Generator, height: int, width: int, level: float) -> np.ndarray:
    """Tinted flat colour plus a linear shading ramp in a random direction (float32 HxWx3)."""
    tint = rng.uniform(-25, 25, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    amplitude = rng.uniform(0, 35)
    xs = (np.arange(width, dtype=np.float32) / width - 0.5) * np.float32(2 * amplitude * np.cos(angle))
    ys = (np.arange(height, dtype=np.float32) / height - 0.5) * np.float32(2 * amplitude * np.sin(angle))
    ramp = ys[:, None] + xs[None, :]
    base = np.clip(level + tint, 0, 255).astype(np.float32)
    return ramp[..., None] + base[None, None, :]


def _distractors(rng: np.random.Generator, canvas: np.ndarray, text_level: tuple[int, int]) -> None:
    """Draw 1-4 lines, circles and rectangles at moderate contrast so not every edge is text."""
    height, width = canvas.shape[:2]
    for _ in range(int(rng.integers(1, 5))):
        mix = rng.uniform(0.2, 0.5)
        color = tuple(float(c) for c in canvas[height // 2, width // 2] * (1 - mix)
                      + rng.uniform(*text_level) * mix)
        kind = int(rng.integers(3))
        thickness = int(rng.integers(1, 4))
        x0, x1 = (int(v) for v in rng.integers(0, width, 2))
        y0, y1 = (int(v) for v in rng.integers(0, height, 2))
        if kind == 0:
            cv2.line(canvas, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
        elif kind == 1:
            radius = int(rng.integers(5, max(6, min(height, width) // 6)))
            cv2.circle(canvas, (x0, y0), radius, color, -1 if rng.random() < 0.5 else thickness, cv2.LINE_AA)
        else:
            cv2.rectangle(canvas, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)


def _render_word(rng: np.random.Generator, height: int, width: int, text_level: tuple[int, int],
                 ignore: bool) -> _Word:
    """Render random text on a patch; shorten/shrink it until its box fits well inside the image."""
    font = FONTS[int(rng.integers(len(FONTS)))]
    if ignore:
        scale, thickness, blur = rng.uniform(0.3, 0.45), 1, rng.uniform(0.8, 1.5)
    else:
        scale, blur = rng.uniform(0.6, 1.6), 0.0
        thickness = int(rng.integers(1, 4))
    text = "".join(rng.choice(list(ALPHABET), size=int(rng.integers(2, 9))))
    while True:
        (w, h), base = cv2.getTextSize(text, font, scale, thickness)
        box_w, box_h = w + thickness + 4, h + base + thickness + 4  # generous ink box + margin
        # sin(20 deg) < 0.35: the rotated box must still fit inside the image with room to spare.
        if (box_w + 0.35 * box_h < 0.9 * width - 4 and box_h + 0.35 * box_w < 0.9 * height - 4) \
                or (len(text) == 1 and scale <= 0.3):
            break
        text, scale = (text[:-1], scale) if len(text) > 1 else (text, max(0.3, scale * 0.8))

    pad = thickness + 4 + int(np.ceil(3 * blur))
    patch = np.zeros((h + base + 2 * pad, w + 2 * pad), np.uint8)
    cv2.putText(patch, text, (pad, pad + h), font, scale, 255, thickness, cv2.LINE_AA)
    alpha = patch.astype(np.float32) / 255
    if blur:
        alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
        alpha[alpha < 0.02] = 0  # drop far tails so the box stays tight
    ys, xs = np.nonzero(alpha)
    margin = float(rng.integers(1, 3))
    x0, x1, y0, y1 = xs.min() - margin, xs.max() + margin, ys.min() - margin, ys.max() + margin
    quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    color = np.clip(rng.uniform(*text_level) + rng.uniform(-20, 20, size=3), 0, 255).astype(np.float32)
    return _Word(text, alpha, quad, color)


def _place(rng: np.random.Generator, word: _Word, placed: list[shapely.Polygon], height: int,
           width: int, tries: int = 40) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Rotate by -20..20 deg and reject-sample a position clear of other words.

    Returns the integer quad (clockwise from top-left) and the patch->image affine matrix.
    """
    angle = rng.uniform(-20, 20)
    centre = word.quad.mean(axis=0)
    rot = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    offsets = word.quad @ rot[:, :2].T + rot[:, 2] - centre  # corners relative to the box centre
    lo = offsets.min(axis=0)
    hi = offsets.max(axis=0)
    x_range = (BORDER + 1 - lo[0], width - 2 - BORDER - hi[0])
    y_range = (BORDER + 1 - lo[1], height - 2 - BORDER - hi[1])
    if x_range[0] > x_range[1] or y_range[0] > y_range[1]:
        return None
    for _ in range(tries):
        target = np.array([rng.uniform(*x_range), rng.uniform(*y_range)])
        quad = np.rint(offsets + target).astype(np.int64)
        poly = shapely.Polygon(quad)
        if all(poly.distance(other) >= MIN_GAP for other in placed):
            matrix = rot.copy()
            matrix[:, 2] += target - centre
            return quad, matrix
    return None


def _blend(canvas: np.ndarray, word: _Word, matrix: np.ndarray) -> None:
    """Warp the word's alpha into the image (only around its box) and paint its colour through it."""
    height, width = canvas.shape[:2]
    corners = word.quad @ matrix[:, :2].T + matrix[:, 2]
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 3, (width, height))
    local = matrix.copy()
    local[:, 2] -= (x0, y0)
    alpha = cv2.warpAffine(word.alpha, local, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    roi = canvas[y0:y1, x0:x1]
    roi += (word.color - roi) * alpha


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 256x320), got {text!r}") from None
    return h, w


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openocr_cli.data.synth",
                                     description="Write a small synthetic text-detection dataset.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train", type=int, default=64, help="number of training images (default 64)")
    parser.add_argument("--test", type=int, default=16, help="number of test images (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=_parse_size, default=(256, 320), help="image size HxW (default 256x320)")
    args = parser.parse_args(argv)
    paths = generate(args.out_dir, args.train, args.test, args.seed, args.size)
    print(f"data dir:     {paths.data_dir}\ntrain labels: {paths.train_label}\ntest labels:  {paths.test_label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
