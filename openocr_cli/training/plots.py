"""results.png: loss terms, learning rate and precision/recall/hmean against the training step.

Drawn from metrics.jsonl, so a resumed run's figure covers the whole run. matplotlib runs on the
Agg backend (no display needed) and is imported only when a figure is drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

from openocr_cli.fileio import atomic_path
from openocr_cli.training.loss import LOSS_KEYS

EVAL_KEYS = ("precision", "recall", "hmean")


def read_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut short by a crash: the rest is still worth drawing
            continue
    return records


def plot_results(metrics: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    records = read_records(metrics)
    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval"]
    fig, (losses, rate, quality) = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    steps = [r["global_step"] for r in train]
    for key in LOSS_KEYS:
        losses.plot(steps, [r[key] for r in train], label=key.removeprefix("loss_") if key != "loss" else "total")
    rate.plot(steps, [r["lr"] for r in train], color="tab:purple")
    eval_steps = [r["global_step"] for r in evals]
    for key in EVAL_KEYS:
        quality.plot(eval_steps, [r[key] for r in evals], marker="o", label=key)
    for axis, title in ((losses, "loss (smoothed)"), (rate, "learning rate"), (quality, "evaluation")):
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    losses.legend()
    quality.legend()
    quality.set_ylim(0, 1)
    try:
        with atomic_path(out) as tmp:  # the temporary name has no .png suffix: the format is given
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return out
