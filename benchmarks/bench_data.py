"""Training data pipeline speed: samples/s of a config's Train dataset on one core, time share per op.

Times `TrainDataset` over the config's `Train.dataset` (data_dir, label_file_list, ratio_list and
transforms, resolved as `train` resolves them) in one process with OpenCV and PyTorch limited to one
thread, as one DataLoader worker runs it. Without --config (or with --synthetic) it generates
720x1280 images with rendered words (openocr_cli.data.synth, PNG; --jpeg re-encodes them, as
ICDAR 2015 ships JPEG) and times the packaged repvit_db.yml chain on them, offline.

With --openocr PATH (an OpenOCR source tree holding opendet/ and tools/) OpenOCR's own SimpleDataSet
is built from the same config and data and timed in the same process, rounds interleaved with ours;
the ratio is taken round by round and its median printed.

With --cache ram|disk our dataset reads through the decode cache (data.decode_cache; disk: a fresh
folder in the temporary directory). The pass that fills it (prepare, then one sample per image) is
timed on its own and printed as the first epoch; the rounds are the steady state after it.
--size HxW sets the generated images' size (e.g. 480x640); --compare-eager adds our chain with
IaaAugment and the crop computing every step in full (no data.planned) to the same interleaved rounds.

    .venv/bin/python benchmarks/bench_data.py [--samples 100] [--rounds 3] [--json out.json]
    .venv/bin/python benchmarks/bench_data.py --config my.yml --samples 200 --openocr ~/OpenOCR
    .venv/bin/python benchmarks/bench_data.py --jpeg --cache disk --size 480x640 --openocr ~/OpenOCR
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Optional

import cv2
import torch

from openocr_cli import config as cfgmod
from openocr_cli.data.augment import IaaAugment
from openocr_cli.data.dataset import TrainDataset, select_by_ratio, validate_training_labels
from openocr_cli.errors import UserError
from openocr_cli.training.settings import DataSource


class Timed:
    """Wraps an op and adds its wall time to a shared table."""

    def __init__(self, op, name: str, totals: dict):
        self.op, self.name, self.totals = op, name, totals
        for attr in ("ext_data_num", "reseed"):
            if hasattr(op, attr):
                setattr(self, attr, getattr(op, attr))

    def __call__(self, data):
        start = time.perf_counter()
        out = self.op(data)
        self.totals[self.name] += time.perf_counter() - start
        return out


def timed_function(function, name: str, totals: dict):
    def timed(*args):
        start = time.perf_counter()
        try:
            return function(*args)
        finally:
            totals[name] += time.perf_counter() - start
    return timed


class Pipeline:
    """One dataset under test: a callable producing sample i, and its per-op time table."""

    def __init__(self, name: str, fetch, totals: dict, size: int):
        self.name, self.fetch, self.totals, self.size = name, fetch, totals, size
        self.rates: list[float] = []
        self.op_seconds: dict[str, float] = defaultdict(float)
        self.samples = 0

    def run(self, count: int, epoch: int) -> float:
        """Produce `count` samples; returns samples/s and accumulates the per-op table."""
        self.totals.clear()
        start = time.perf_counter()
        for i in range(count):
            self.fetch(epoch, i, i % self.size)
        wall = time.perf_counter() - start
        for name, seconds in self.totals.items():
            self.op_seconds[name] += seconds
        self.op_seconds["(wall)"] += wall
        self.samples += count
        self.rates.append(count / wall)
        return count / wall


def ours(cfg: dict, cache: str = "none", cache_folder: Optional[Path] = None, eager: bool = False,
         name: str = "openocr-det") -> Pipeline:
    """Our TrainDataset on the config's training data, resolved as the train command does.

    `cache`: the decode cache (the disk one in `cache_folder`); `eager`: IaaAugment computes its whole
    image and the crop resizes its window of it, instead of one warp of the window (data.planned), for
    the A/B comparison.
    """
    source = DataSource.read(cfg, "Train")
    checked = validate_training_labels(source.label_files, source.data_dir)
    if checked.problems:
        raise UserError(f"{len(checked.problems)} training label line(s) cannot be used, first: {checked.problems[0]}")
    per_file = [[s for s in checked.samples if s.source == str(f)] for f in source.label_files]
    seed = int(cfg.get("Global", {}).get("seed") or 0)
    samples = select_by_ratio(per_file, source.ratios, seed)
    dataset = TrainDataset(samples, cfg["Train"]["dataset"]["transforms"], seed=seed, cache=cache,
                           cache_folder=cache_folder)
    if eager:
        for op in dataset.ops:
            if isinstance(op, IaaAugment):
                op.defer_pixels = False
    totals: dict[str, float] = defaultdict(float)
    dataset.load_ops = [Timed(op, type(op).__name__, totals) for op in dataset.load_ops]
    dataset.ops = [Timed(op, type(op).__name__, totals) for op in dataset.ops]
    dataset.reseedable = [op for op in dataset.ops if hasattr(op, "reseed")]
    pipe = Pipeline(name, lambda epoch, pos, idx: dataset[(epoch, pos, idx)], totals, len(dataset))
    pipe.dataset = dataset
    if dataset.cache is not None:  # the file read, or the cached array's lookup (its pages are read by the ops)
        dataset.cache.image = timed_function(dataset.cache.image, "cache read", totals)
    return pipe


def fill_cache(pipe: Pipeline) -> dict:
    """The first epoch with an empty cache: prepare (ram: decode everything) + one pass over every image."""
    start = time.perf_counter()
    summary = pipe.dataset.prepare_cache()
    prepared = time.perf_counter() - start
    for i in range(pipe.size):
        pipe.fetch(9999, i, i)
    wall = time.perf_counter() - start
    pipe.totals.clear()
    return {"images": pipe.size, "prepare_s": round(prepared, 3), "first_epoch_s": round(wall, 3),
            "first_epoch_samples_per_s": round(pipe.size / wall, 2), "cache_bytes": summary.size,
            "described": summary.describe()}


def openocr(cfg: dict, source_tree: Path) -> Pipeline:
    """OpenOCR's SimpleDataSet (task det) built from the same config, imported from `source_tree`."""
    if not (source_tree / "opendet" / "preprocess").is_dir() or not (source_tree / "tools" / "data").is_dir():
        raise UserError(f"--openocr {source_tree}: not an OpenOCR source tree (needs opendet/ and tools/data/).")
    sys.path.insert(0, str(source_tree))
    import opendet.preprocess as det_pre

    # SimpleDataSet imports `transform` from openrec, which only the recogniser needs; the detector's is the same.
    shim = types.ModuleType("openrec.preprocess")
    shim.transform = det_pre.transform
    sys.modules.setdefault("openrec", types.ModuleType("openrec"))
    sys.modules.setdefault("openrec.preprocess", shim)
    from tools.data.simple_dataset import SimpleDataSet

    cfg = copy.deepcopy(cfg)
    cfg["Train"]["dataset"]["label_file_list"] = [str(p) for p in DataSource.read(cfg, "Train").label_files]
    cfg["Train"]["dataset"]["data_dir"] = str(DataSource.read(cfg, "Train").data_dir) + "/"
    dataset = SimpleDataSet(cfg, "Train", logging.getLogger("openocr"), seed=int(cfg["Global"].get("seed") or 0),
                            task="det")
    totals: dict[str, float] = defaultdict(float)
    dataset.ops = [Timed(op, type(op).__name__, totals) for op in dataset.ops]
    return Pipeline("OpenOCR", lambda epoch, pos, idx: dataset[idx], totals, len(dataset))


def synthetic_config(folder: Path, images: int, jpeg: bool, size: tuple[int, int] = (720, 1280)) -> dict:
    """The packaged config pointed at `images` generated (height, width) training images in `folder`."""
    from openocr_cli.data.synth import generate

    synth = generate(folder, num_train=images, num_test=0, seed=0, size=size)
    label = synth.train_label
    if jpeg:  # same pictures and regions, JPEG files (quality 95), as real scene-text sets ship
        lines = []
        for line in label.read_text(encoding="utf-8").splitlines():
            rel, _, regions = line.partition("\t")
            image = cv2.imread(str(synth.data_dir / rel))
            rel = str(Path(rel).with_suffix(".jpg"))
            cv2.imwrite(str(synth.data_dir / rel), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            lines.append(f"{rel}\t{regions}")
        label = label.with_name("train_label_jpg.txt")
        label.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = cfgmod.load_config()
    cfg["Train"]["dataset"]["data_dir"] = str(synth.data_dir)
    cfg["Train"]["dataset"]["label_file_list"] = [str(label)]
    cfg["Train"]["dataset"]["ratio_list"] = [1.0]
    return cfg


def table(pipe: Pipeline) -> list[str]:
    wall = pipe.op_seconds["(wall)"]
    rows = [f"{pipe.name}: per op (all rounds)", "| transform | ms/sample | share |", "|---|---:|---:|"]
    ops = {k: v for k, v in pipe.op_seconds.items() if k != "(wall)"}
    for name, seconds in sorted(ops.items(), key=lambda kv: -kv[1]):
        rows.append(f"| {name} | {1000 * seconds / pipe.samples:.2f} | {100 * seconds / wall:.0f}% |")
    other = wall - sum(ops.values())
    rows.append(f"| other (file reads, seeding) | {1000 * other / pipe.samples:.2f} | {100 * other / wall:.0f}% |")
    return rows


def measure(cfg: dict, args: argparse.Namespace, cache_folder: Optional[Path] = None) -> dict:
    pipes = [ours(cfg, args.cache, cache_folder)]
    if args.openocr:
        pipes.append(openocr(cfg, Path(args.openocr)))
    if args.compare_eager:
        pipes.append(ours(cfg, args.cache, cache_folder, eager=True, name="openocr-det, whole-image IaaAugment"))
    first = None
    if args.cache != "none":  # the pass that fills the cache is timed on its own and left out of the rounds
        first = fill_cache(pipes[0])
        for pipe in pipes[1:]:
            if getattr(pipe, "dataset", None) is not None:
                pipe.dataset.prepare_cache()
        print(f"cache {args.cache}: {first['described']}; first epoch ({first['images']} images, cache filled) "
              f"{first['first_epoch_s']:.2f} s = {first['first_epoch_samples_per_s']:.1f} samples/s"
              + (f", of which prepare {first['prepare_s']:.2f} s" if args.cache == "ram" else ""))
    for pipe in pipes:  # warm-up: imports, caches, first allocations
        pipe.run(min(5, args.samples), epoch=1000)
        pipe.op_seconds.clear()
        pipe.rates.clear()
        pipe.samples = 0
    for r in range(args.rounds):
        for pipe in pipes if r % 2 == 0 else pipes[::-1]:  # alternate who goes first
            pipe.run(args.samples, epoch=r)
    result = {"samples_per_s": statistics.median(pipes[0].rates), "rounds": args.rounds, "cache": args.cache,
              "first_epoch": first, "image_size": list(args.size),
              "samples_per_round": args.samples, "rates": [round(x, 2) for x in pipes[0].rates],
              "ms_per_op": {k: 1000 * v / pipes[0].samples for k, v in pipes[0].op_seconds.items() if k != "(wall)"}}
    if args.openocr:
        ratios = [a / b for a, b in zip(pipes[0].rates, pipes[1].rates)]
        result.update(openocr_samples_per_s=statistics.median(pipes[1].rates), ratio=statistics.median(ratios),
                      openocr_rates=[round(x, 2) for x in pipes[1].rates], ratios=[round(x, 3) for x in ratios],
                      openocr_ms_per_op={k: 1000 * v / pipes[1].samples for k, v in pipes[1].op_seconds.items()
                                         if k != "(wall)"})
    if args.compare_eager:
        eager = pipes[-1]
        result.update(eager_samples_per_s=statistics.median(eager.rates),
                      planned_over_eager=statistics.median([a / b for a, b in zip(pipes[0].rates, eager.rates)]),
                      eager_ms_per_op={k: 1000 * v / eager.samples for k, v in eager.op_seconds.items()
                                       if k != "(wall)"})
    for pipe in pipes:
        print(f"{pipe.name}: median {statistics.median(pipe.rates):.1f} samples/s over {args.rounds} round(s) of "
              f"{args.samples} (rounds: {', '.join(f'{x:.1f}' for x in pipe.rates)})")
    if args.openocr:
        print(f"ratio openocr-det / OpenOCR, median of rounds: x{result['ratio']:.2f} "
              f"(rounds: {', '.join(f'{x:.2f}' for x in result['ratios'])})")
    if args.compare_eager:
        print(f"ratio planned / whole-image IaaAugment, median of rounds: x{result['planned_over_eager']:.2f}")
    for pipe in pipes:
        print("\n" + "\n".join(table(pipe)))
    return result


def _size(text: str) -> tuple[int, int]:
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit() or int(height) < 32 or int(width) < 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 480x640 (each at least 32)")
    return int(height), int(width)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="config whose Train dataset is timed (default: synthetic data)")
    parser.add_argument("--synthetic", action="store_true", help="generated 720x1280 images (the default)")
    parser.add_argument("--images", type=int, default=32, help="synthetic training images (default 32)")
    parser.add_argument("--jpeg", action="store_true", help="synthetic images as JPEG instead of PNG")
    parser.add_argument("--size", type=_size, default=(720, 1280), metavar="HxW",
                        help="synthetic image size, height x width (default 720x1280; e.g. 480x640)")
    parser.add_argument("--cache", choices=("none", "ram", "disk"), default="none",
                        help="our decode cache (Train.dataset.cache); its filling pass is timed apart, as the first "
                             "epoch, and left out of the rounds (disk: a fresh folder in a temporary directory)")
    parser.add_argument("--compare-eager", action="store_true",
                        help="also time our chain with IaaAugment computing its whole image (no data.planned)")
    parser.add_argument("--samples", type=int, default=100, help="samples per round (default 100)")
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds, interleaved with --openocr")
    parser.add_argument("--openocr", help="OpenOCR source tree: time its SimpleDataSet on the same data too")
    parser.add_argument("--json", type=Path, help='write {"samples_per_s": x, ...} to this file')
    args = parser.parse_args(argv)
    if args.samples < 1 or args.rounds < 1 or args.images < 1:
        parser.error("--samples, --rounds and --images must be at least 1")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            synthetic = args.synthetic or args.config is None
            cfg = (synthetic_config(Path(tmp), args.images, args.jpeg, args.size) if synthetic
                   else cfgmod.load_config(args.config))
            result = measure(cfg, args, Path(tmp) / "decode-cache")
    except UserError as exc:
        sys.exit(f"error: {exc}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
