"""Recovering accuracy an int8 model lost: keep whole stages of the network in float32, chosen by measurement.

Ranking single tensors by how much quantization disturbs them (signal-to-noise) does not predict
the detection metric: on an OpenOCR-trained model, 4 to 32 such tensors kept float changed nothing
or made it worse, while the whole neck and head kept float gave the float32 model's precision and
recall. So the candidates are the network's stages, and their effect is measured, not guessed:

1. quantize everything; stop if the guard (evaluation/guard.py) passes;
2. keep one stage float at a time (head, neck, then backbone stages from the deepest), stopping at
   the first that passes;
3. keep the stages that helped agreement most, two, then three, ... together, until one passes.

Every attempt is measured the same way (agreement, hmean drop, ms/image), so the table shows what
each bought and what it cost. The stage patterns match the node names our exporter writes (they
carry the PyTorch module paths, /backbone/features.N/..., /neck/..., /head/...), which both
onnxruntime's quantizer (node names) and NNCF (ignored-scope patterns) take.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from openocr_cli.evaluation.guard import NOTHING_TO_COMPARE, Verdict


def _features(first: int, last: int) -> str:
    return r"^/backbone/features\.(" + "|".join(str(i) for i in range(first, last + 1)) + r")/.*"


# Backbone stages end at the feature maps the neck takes (model/repvit.py OUT_INDICES = 2, 5, 10, 13).
STAGES: dict[str, str] = {
    "head": r"^/head/.*",
    "neck": r"^/neck/.*",
    "stage4": _features(11, 13),  # the backbone's stride-32 stage
    "stage3": _features(6, 10),
    "stage2": _features(3, 5),
    "stage1": _features(0, 2),  # with the stride-4 stem
}


@dataclass(frozen=True)
class Attempt:
    """One quantized model: the stages kept float32, its file (in the work folder) and its verdict."""

    float_stages: tuple[str, ...]
    path: Path
    verdict: Verdict

    @property
    def label(self) -> str:
        return "int8" if not self.float_stages else f"int8, fp32 {'+'.join(self.float_stages)}"


def patterns(stages: Sequence[str]) -> list[str]:
    return [STAGES[name] for name in stages]


def search(quantize: Callable[[Path, Sequence[str]], Path], judge: Callable[[Path], Verdict], workdir: Path,
           suffix: str, on_attempt: Callable[[Attempt], None] = lambda a: None) -> list[Attempt]:
    """The attempts in the order made; the last one passed the guard, or none did.

    `quantize(output, stage_names)` writes a model with those stages kept float32; `judge(path)` measures it.
    """
    attempts: list[Attempt] = []

    def attempt(stages: tuple[str, ...]) -> Attempt:
        path = quantize(Path(workdir) / f"attempt{len(attempts)}{suffix}", stages)
        made = Attempt(stages, path, judge(path))
        attempts.append(made)
        on_attempt(made)
        return made

    first = attempt(()).verdict
    if first.ok or first.basis == NOTHING_TO_COMPARE:  # no attempt can pass a check that has nothing to compare
        return attempts
    singles = []
    for name in STAGES:
        single = attempt((name,))
        if single.verdict.ok:
            return attempts
        singles.append(single)
    ranked = [a.float_stages[0] for a in sorted(singles, key=lambda a: -a.verdict.agreement["hmean"])]
    for count in range(2, len(ranked)):  # all stages float would be the float32 model
        if attempt(tuple(ranked[:count])).verdict.ok:
            return attempts
    return attempts


def best(attempts: Sequence[Attempt]) -> Attempt:
    """The attempt to keep: the one that passed, else the one that agrees most with float32."""
    if attempts[-1].verdict.ok:
        return attempts[-1]
    return max(attempts, key=lambda a: a.verdict.agreement["hmean"])
