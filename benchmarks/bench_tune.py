"""`eval --tune` against a plain `eval` on the same set: wall time of each and their ratio (goal: <= 3x).

Generates a synthetic labelled set (`openocr_cli.data.synth`, rendered words, default 24 images of
720x1280, evaluated at limit_side_len 960) and runs exactly what the eval command runs, in process:
the plain pass (forward + post-processing + metric), then the pass that also keeps the maps plus
the search (default ranges, one process per core). The maps and the search cost depend on the
weights: pass a trained checkpoint (default: demo/run/best.pth from `make demo`); a random-weight
model finds almost no text and makes tuning look cheaper than it is (the script says so).

    .venv/bin/python benchmarks/bench_tune.py [--weights demo/run/best.pth] [--images 24] [--jobs N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from openocr_cli.data.labels import load_labels
from openocr_cli.data.resize import Normalizer, ResizeSpec
from openocr_cli.data.synth import generate
from openocr_cli.evaluation import tune
from openocr_cli.evaluation.evaluator import evaluate_model
from openocr_cli.evaluation.mapcache import MapCache
from openocr_cli.inference.backends.torch_backend import TorchBackend
from openocr_cli.inference.predictor import Predictor
from openocr_cli.model import build_detector
from openocr_cli.postprocess import DBPostProcess


def plain(predictor: Predictor, samples) -> tuple[float, float]:
    start = time.perf_counter()
    result = evaluate_model(predictor, samples)
    return time.perf_counter() - start, result.hmean


def tuned(predictor: Predictor, samples, jobs: int) -> tuple[float, tune.TuneOutcome, float]:
    start = time.perf_counter()
    with MapCache() as cache:
        result = evaluate_model(predictor, samples, on_map=cache.add)
        images = [tune.TuneImage(m, samples[m.index].polys, samples[m.index].ignore) for m in cache.maps]
        base = predictor.postprocess
        with tune.TrialRunner(images, base, jobs) as runner:
            outcome = tune.search(runner, tune.parse_ranges(None), (base.thresh, base.box_thresh, base.unclip_ratio))
    assert outcome.default.hmean == result.hmean, "the search's starting point must reproduce the eval"
    return time.perf_counter() - start, outcome, outcome.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Path("demo/run/best.pth"))
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--jobs", type=int, default=tune.default_jobs())
    args = parser.parse_args()

    model = build_detector()
    if args.weights.is_file():
        from openocr_cli.checkpoint import load_weights

        load_weights(model, args.weights)
        weights = str(args.weights)
    else:
        torch.manual_seed(0)
        weights = "random init (no trained weights: run `make demo` first for representative maps)"
    model.eval()
    backend = TorchBackend(model, torch.device("cpu"), channels_last=True)  # unfused, as eval
    predictor = Predictor(backend, ResizeSpec(960, "max"), Normalizer(), DBPostProcess(), batch_size=1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = generate(Path(tmp), num_train=0, num_test=args.images, seed=1, size=(720, 1280))
        samples = load_labels([paths.test_label], paths.data_dir, check_images=True)
        evaluate_model(predictor, samples[:2])  # warm-up
        plain_s, hmean = plain(predictor, samples)
        tune_s, outcome, search_s = tuned(predictor, samples, args.jobs)

    print(f"weights: {weights}; {args.images} images 1280x720 -> 544x960, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), search in {outcome.jobs} process(es)\n")
    print("| run | seconds | hmean | trials |")
    print("|---|---:|---:|---:|")
    print(f"| eval | {plain_s:.1f} | {hmean:.4f} | 1 |")
    print(f"| eval --tune (search {search_s:.1f} s) | {tune_s:.1f} | {outcome.best.hmean:.4f} | "
          f"{len(outcome.trials)} |")
    print(f"\nratio tune / eval: {tune_s / plain_s:.2f}x")


if __name__ == "__main__":
    main()
