"""Training data: validated label lines, a resumable rank-aware sampler, per-sample seeded transforms.

Every sample's randomness (python `random`, NumPy's global RNG, albumentations) is seeded from
(run seed, epoch, position in the epoch), so an augmented sample does not depend on which worker
produced it, how many workers or processes there are, or whether the run was resumed: this is
what makes "stop + resume" bit-for-bit equal to an uninterrupted run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import shapely
import torch
from torch.utils.data import Dataset, Sampler

from openocr_cli.data.decode_cache import CacheSummary, DecodeCache, check_mode
from openocr_cli.data.images import image_size
from openocr_cli.data.labels import LabelProblem, LabelSample, LabelSet, read_label_files
from openocr_cli.data.transforms import DecodeImage, DetLabelEncode, build_ops
from openocr_cli.log import run_logger

MAX_SAMPLE_RETRIES = 10
MAX_EXT_TRIES = 20


def validate_training_labels(files: Sequence[Path], data_dir: Path, workers: int = 4) -> LabelSet:
    """Parse every line once and check what training needs: a readable image and valid text polygons."""
    result = read_label_files(files, data_dir, check_images=True)
    good: list[LabelSample] = []
    for sample in result.samples:
        reason = _region_problem(sample)
        if reason:
            result.problems.append(LabelProblem(sample.source, sample.line, reason))
        else:
            good.append(sample)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        sizes = list(pool.map(image_size, [s.image for s in good]))
    result.samples = []
    for sample, size in zip(good, sizes):
        if size is not None:
            sample.size = size
            result.samples.append(sample)
        else:
            result.problems.append(LabelProblem(sample.source, sample.line, f"image {sample.image} cannot be decoded"))
    result.problems.sort(key=lambda p: (p.file, p.line))
    return result


def _region_problem(sample: LabelSample) -> Optional[str]:
    """Geometry is checked for text regions only: a do-not-care ('###') region just masks pixels.

    An empty region list is a background image, a valid negative sample (all-zero targets).
    """
    for n, (poly, ignored) in enumerate(zip(sample.polys, sample.ignore), 1):
        if ignored:
            continue
        geom = shapely.Polygon(poly)
        if not geom.is_valid:
            return f"region {n}: polygon is self-intersecting"
        if geom.area <= 0:
            return f"region {n}: polygon has zero area"
    return None


def select_by_ratio(per_file: Sequence[Sequence[LabelSample]], ratios: Sequence[float], seed: int) -> list[LabelSample]:
    """OpenOCR's ratio_list: round(len * ratio) lines per file, drawn without replacement (seeded)."""
    rng = random.Random(seed)
    out: list[LabelSample] = []
    for samples, ratio in zip(per_file, ratios):
        count = min(len(samples), int(round(len(samples) * ratio)))
        out.extend(samples if count == len(samples) else rng.sample(list(samples), count))
    return out


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 32-bit seed unique to (run seed, epoch, position in the epoch)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, position]).generate_state(1)[0])


class ResumableSampler(Sampler):
    """Seeded shuffle per epoch, split across ranks, able to start mid-epoch.

    Yields (epoch, position, index) keys: `position` is the sample's place in the epoch's global
    order, used to seed its augmentation. Like DistributedSampler, the order is padded so every
    rank gets the same count; unlike OpenOCR's, the epoch is always advanced (set_epoch).
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0
        self.per_rank = math.ceil(size / world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order; skip the first `start` samples of this rank (resume)."""
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.world_size  # pad by repeating, so every rank gets per_rank samples
        return (order * math.ceil(total / len(order)))[:total]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        order = self._order()
        for local in range(self.start, self.per_rank):
            position = local * self.world_size + self.rank
            yield self.epoch, position, order[position]

    def indices(self, first: int, count: int) -> list[int]:
        """Dataset indices of this rank's samples number first .. first + count - 1 of the epoch
        (e.g. the images of one batch, to name them in a report)."""
        order = self._order()
        last = min(first + count, self.per_rank)
        return [order[local * self.world_size + self.rank] for local in range(first, last)]

    def __len__(self) -> int:
        return self.per_rank - self.start


class TrainDataset(Dataset):
    """Labelled images through the configured transform chain, keyed by sampler (epoch, position, index)."""

    def __init__(self, samples: Sequence[LabelSample], transforms: list, seed: int, cache: str = "none",
                 cache_folder: Optional[Path] = None):
        self.samples = list(samples)
        self.seed = seed
        ops = build_ops(transforms, epoch=0)
        self.load_ops = [op for op in ops if isinstance(op, (DecodeImage, DetLabelEncode))]
        self.ops = [op for op in ops if not isinstance(op, (DecodeImage, DetLabelEncode))]
        self.ext_data_num = next((op.ext_data_num for op in self.ops if hasattr(op, "ext_data_num")), 0)
        self.reseedable = [op for op in self.ops if hasattr(op, "reseed")]
        decoder = next((op for op in self.load_ops if isinstance(op, DecodeImage)), None)
        # the cache holds DecodeImage's own decode; without that op the chain reads bytes, as it always did
        self.cache = (DecodeCache(cache, decoder.decode, decoder.flags, cache_folder)
                      if decoder is not None and check_mode(cache) != "none" else None)

    def prepare_cache(self, workers: int = 0) -> Optional[CacheSummary]:
        """Check (and for ram, fill) the decode cache before the loader starts its workers; None without one."""
        if self.cache is None:
            return None
        return self.cache.prepare([s.image for s in self.samples], [s.size for s in self.samples], workers)

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> Optional[dict]:
        sample = self.samples[index]
        pixels = self.cache.image(sample.image) if self.cache is not None else sample.image.read_bytes()
        data = {"img_path": str(sample.image), "image": pixels,
                "regions": [p.copy() for p in sample.polys], "region_texts": list(sample.texts),
                "region_ignore": list(sample.ignore)}
        for op in self.load_ops:
            data = op(data)
            if data is None:
                return None
        return data

    def _ext_data(self) -> list[dict]:
        found: list[dict] = []
        for _ in range(MAX_EXT_TRIES):
            if len(found) >= self.ext_data_num:
                break
            extra = self._load(int(np.random.randint(len(self.samples))))
            if extra is not None and extra["polys"].shape[1] == 4:
                found.append(extra)
        return found

    def _seed(self, value: int) -> None:
        random.seed(value)
        np.random.seed(value)
        for op in self.reseedable:
            op.reseed(value)

    def __getitem__(self, key) -> list:
        epoch, position, index = key if isinstance(key, tuple) else (0, int(key), int(key))
        self._seed(sample_seed(self.seed, epoch, position))
        for _ in range(MAX_SAMPLE_RETRIES):
            try:
                data = self._load(index)
                if data is not None:
                    data["ext_data"] = self._ext_data() if self.ext_data_num else []
                    for op in self.ops:
                        data = op(data)
                        if data is None:
                            break
                if data is not None:
                    return data
                reason = "a transform dropped it"
            except Exception as exc:  # a broken sample must not kill a long run; it is logged
                reason = f"{type(exc).__name__}: {exc}"
            sample = self.samples[index]
            where = f"{sample.image} ({sample.source}:{sample.line})"
            run_logger.warning("sample %s skipped, %s; using another sample", where, reason)
            index = int(np.random.randint(len(self.samples)))
        raise RuntimeError(f"{MAX_SAMPLE_RETRIES} consecutive samples failed in the transform chain; the last, "
                           f"{where}: {reason} (a training run's train.log lists each).")
