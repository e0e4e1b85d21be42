"""`check-data`: what a training set looks like to the model, before hours are spent training on it.

The numbers come from the code training uses: the same label validation (so the same problems,
as `file:line: reason`), the evaluation resize for the text heights the detector will see, and
the real training transform chain for the share of crops with no text to learn from.
"""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from openocr_cli.config import find_transform, resize_params
from openocr_cli.data.labels import NOT_UTF8, LabelProblem, LabelSample, LabelSet
from openocr_cli.data.resize import ResizeSpec
from openocr_cli.data.text_heights import HEIGHT_BUCKETS, MAX_TINY_SHARE, TINY_HEIGHT, bucket_of, image_hw, text_heights
from openocr_cli.errors import UserError

log = logging.getLogger(__name__)

MAX_IGNORED_SHARE = 0.2
MAX_EMPTY_CROP_SHARE = 0.2
MAX_EXAMPLES = 3


@dataclass
class DataReport:
    """Counts over the usable label lines, the lines train refuses, and advice."""

    images: int
    background_images: int
    regions: int
    ignored_regions: int
    problems: list[LabelProblem]
    height_buckets: dict[str, int]
    empty_crop_fraction: float
    warnings: list[str]
    crops: int = 0  # training crops drawn for empty_crop_fraction (0: not measured)

    def to_json(self) -> dict:
        problems = sorted(self.problems, key=lambda p: (p.file, p.line))
        return {"images": self.images, "background_images": self.background_images, "regions": self.regions,
                "ignored_regions": self.ignored_regions,
                "problems": [{"file": p.file, "line": p.line, "reason": p.reason} for p in problems],
                "height_buckets": dict(self.height_buckets), "empty_crop_fraction": self.empty_crop_fraction,
                "warnings": list(self.warnings)}


def check_data(label_files: list[Path], data_dir: Path, cfg: dict, crops: int = 200, seed: int = 0,
               checked: Optional[LabelSet] = None, cache: str = "none") -> DataReport:
    """Validate (unless `checked` is the LabelSet train already validated), count, sample crops, advise.

    `cache` is the decode cache the crops read the images through (data.decode_cache; disk fills it for train).
    """
    from openocr_cli.data.dataset import validate_training_labels

    checked = checked if checked is not None else validate_training_labels(label_files, data_dir)
    samples = checked.samples
    regions = sum(len(s.polys) for s in samples)
    ignored = sum(sum(s.ignore) for s in samples)
    spec = ResizeSpec.from_params(resize_params(cfg))
    buckets = dict.fromkeys((name for name, _ in HEIGHT_BUCKETS), 0)
    for sample in samples:
        for height in text_heights(sample, spec):
            buckets[bucket_of(height)] += 1
    empty = _empty_crop_fraction(samples, cfg, crops, seed, cache)
    report = DataReport(images=len(samples), background_images=sum(not s.polys for s in samples), regions=regions,
                        ignored_regions=ignored, problems=sorted(checked.problems, key=lambda p: (p.file, p.line)),
                        height_buckets=buckets, empty_crop_fraction=empty, warnings=[],
                        crops=crops if samples else 0)
    report.warnings = _warnings(report, samples, crops, spec)
    return report


def _empty_crop_fraction(samples: list[LabelSample], cfg: dict, crops: int, seed: int, cache: str = "none") -> float:
    """Share of `crops` seeded training samples (real transform chain) whose shrink map is all zero."""
    if not samples or crops <= 0:
        return 0.0
    transforms = cfg["Train"]["dataset"]["transforms"]
    keep = list((find_transform(cfg, "Train", "KeepKeys") or {}).get("keep_keys") or [])
    if "shrink_map" not in keep:
        raise UserError("Train.dataset.transforms has no KeepKeys op keeping shrink_map, so training would have no "
                        "targets: add `- KeepKeys: {keep_keys: [image, threshold_map, threshold_mask, shrink_map, "
                        "shrink_mask]}` at the end of the list.")
    from openocr_cli.data.dataset import TrainDataset  # torch: only when crops are drawn

    dataset, where = TrainDataset(samples, transforms, seed, cache=cache), keep.index("shrink_map")
    summary = dataset.prepare_cache()
    if summary is not None:
        log.info("%s", summary.describe())
    rng = random.Random(seed)
    try:
        empty = sum(not np.any(dataset[(0, position, rng.randrange(len(samples)))][where] > 0)
                    for position in range(crops))
    except RuntimeError as exc:
        raise UserError(f"the training transforms fail on these samples: {exc}") from None
    return empty / crops


def _warnings(report: DataReport, samples: list[LabelSample], crops: int, spec: ResizeSpec) -> list[str]:
    out = []
    if not samples:
        fix = ("Fix the problems listed below, or pass label files that list images." if report.problems else
               "The label files list no image (empty, or blank lines only): pass files with a line per image.")
        out.append(f"no usable label line: train would refuse this data. {fix}")
    ignored, regions = report.ignored_regions, report.regions
    if regions and ignored > MAX_IGNORED_SHARE * regions:
        out.append(f"{ignored} of {regions} regions ({ignored / regions:.0%}) are do-not-care ('###' or '*'): "
                   "they teach the model nothing. Transcribe the legible ones, or check that "
                   "the converter kept the transcriptions.")
    if crops > 0 and report.empty_crop_fraction > MAX_EMPTY_CROP_SHARE:
        out.append(f"{report.empty_crop_fraction:.0%} of {crops} training crops contain no text to learn from. Use "
                   "fewer background images, or a larger crop (Train.dataset.transforms EastRandomCropData.size) "
                   "for images with little text.")
    text = report.regions - report.ignored_regions
    tiny = report.height_buckets["0-8"]
    if text and tiny > MAX_TINY_SHARE * text:
        out.append(f"{tiny} of {text} text regions ({tiny / text:.0%}) are under {TINY_HEIGHT:g} px high after the "
                   f"evaluation resize ({_describe(spec)}): the detector rarely finds text that small. Raise "
                   "DetResizeForTest.limit_side_len in Eval.dataset.transforms, or mark these regions '###'.")
    out.extend(_listing_warnings(samples))
    return out


def _describe(spec: ResizeSpec) -> str:
    if spec.image_shape is not None:
        return f"image_shape {list(spec.image_shape)}"
    if spec.resize_long is not None:
        return f"resize_long {spec.resize_long}"
    return f"limit_side_len {spec.limit_side_len}, limit_type {spec.limit_type}"


def _listing_warnings(samples: list[LabelSample]) -> list[str]:
    """Images listed twice, regions outside their image, label files with no text region at all."""
    out = []
    lines = defaultdict(list)
    for s in samples:
        lines[os.path.normpath(s.image)].append(f"{s.source}:{s.line}")
    twice = [f"{image} ({', '.join(where)})" for image, where in lines.items() if len(where) > 1]
    if twice:
        out.append(f"{len(twice)} image(s) are listed more than once, so training sees them more often and their "
                   f"regions are split over lines: {_examples(twice)}. Merge each image's regions into one line.")
    outside = [f"{s.source}:{s.line} region {n}" for s in samples for n, poly in enumerate(s.polys, 1)
               if _outside(poly, image_hw(s))]
    if outside:
        out.append(f"{len(outside)} region(s) reach outside their image: {_examples(outside)}. Check that the points "
                   "are [x, y] pixels of this image file (not of a resized or rotated copy).")
    garbled = [f"{s.source}:{s.line}" for s in samples if any(NOT_UTF8 in text for text in s.texts)]
    if garbled:
        out.append(f"{len(garbled)} line(s) have transcriptions that are not UTF-8 text: {_examples(garbled)}. "
                   "Detection does not read them, but `convert` and a recogniser trained on these labels do: save "
                   "the file as UTF-8 (e.g. iconv -f GBK -t UTF-8 in.txt > out.txt).")
    by_file = defaultdict(list)
    for s in samples:
        by_file[s.source].extend(s.ignore)
    for file, flags in by_file.items():
        if flags and all(flags):
            out.append(f"every region in {file} is do-not-care ('###' or '*'): it gives the model no text to learn. "
                       "Check that the file's transcriptions were exported.")
    return out


def _outside(poly: np.ndarray, size: tuple[int, int]) -> bool:
    h, w = size
    return bool((poly.min(axis=0) < 0).any() or poly[:, 0].max() > w or poly[:, 1].max() > h)


def _examples(items: list[str]) -> str:
    more = len(items) - MAX_EXAMPLES
    return "; ".join(items[:MAX_EXAMPLES]) + (f"; and {more} more" if more > 0 else "")
