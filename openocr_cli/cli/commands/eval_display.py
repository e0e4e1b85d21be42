"""The tables `eval` prints for recall by height, the size sweep and tuning (rich, via openocr_cli.cli.ui).

The command layer's: the evaluation modules compute these results and print nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from openocr_cli.cli.ui import console, table, warn
from openocr_cli.evaluation.guard import CONFIDENCE, Verdict
from openocr_cli.evaluation.sizes import SizeRow
from openocr_cli.evaluation.tune import TuneOutcome


def print_by_height(buckets: Optional[dict[str, dict]]) -> None:
    if buckets is None:
        console.print("recall by text height: not available (the images are needed for their sizes).")
        return
    rows = [(f"{name} px", b["gt"], b["matched"], f"{b['recall']:.4f}") for name, b in buckets.items()]
    console.print(table("recall by text height", ["height", "gt", "matched", "recall"], rows))


def print_sizes(rows: Sequence[SizeRow]) -> None:
    console.print(table("by limit_side_len", ["limit_side_len", "precision", "recall", "hmean", "FPS"], [
        (row.limit_side_len, f"{row.result.precision:.4f}", f"{row.result.recall:.4f}", f"{row.result.hmean:.4f}",
         f"{row.result.fps or 0.0:.2f}") for row in rows]))


def print_tune(outcome: TuneOutcome, images: int, grids: dict) -> None:
    base = outcome.default

    def row(label: str, trial) -> tuple:
        t, b, r = trial.params
        gain = 100 * (trial.hmean - base.hmean)
        return (label, f"{t:g}", f"{b:g}", f"{r:g}", f"{trial.precision:.4f}", f"{trial.recall:.4f}",
                f"{trial.hmean:.4f}", f"{gain:+.2f}")

    rows = [row("current", base)] + [row(f"#{n}", t) for n, t in enumerate(outcome.top(), 1)]
    console.print(table(f"tune: {len(outcome.trials)} trials on {images} images in {outcome.seconds:.1f} s "
                        f"({outcome.jobs} process{'es' if outcome.jobs > 1 else ''})",
                        ["", "thresh", "box_thresh", "unclip_ratio", "precision", "recall", "hmean", "gain (pts)"],
                        rows))
    t, b, r = outcome.best.params
    if outcome.best is base:
        console.print("The current settings are already the best found.")
    else:
        console.print(f"Tuned: --thresh {t!r} --box-thresh {b!r} --unclip-ratio {r!r} "
                      f"(hmean {base.hmean:.4f} -> {outcome.best.hmean:.4f}); or pass the --json file to "
                      "--postprocess.")
    edges = outcome.at_edges(grids)
    if edges and outcome.best is not base:
        warn(f"a tuned value is at the end of its searched range, so a wider range may do better: try "
             f"--tune {','.join(edges)}.")


def print_precision_check(verdict: Verdict, reference_hmean: float, precision: str) -> None:
    """`eval --precision`: the candidate against the same model at float32, and the guard's verdict."""
    lo, hi = verdict.interval or (0.0, 0.0)
    console.print(table(f"{precision} against fp32 (the int8 guard's rule)",
                        ["fp32 hmean", f"{precision} hmean", "drop (pts)", f"{100 * CONFIDENCE:.0f}% interval",
                         "agreement", "verdict"],
                        [(f"{reference_hmean:.4f}", f"{verdict.hmean:.4f}", f"{verdict.drop:+.2f}",
                          f"{lo:+.2f} to {hi:+.2f}", f"{verdict.agreement['hmean']:.4f}", verdict.decision)]))
    (console.print if verdict.ok else warn)(f"{precision}: {verdict.reason}.")
