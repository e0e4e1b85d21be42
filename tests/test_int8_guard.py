"""The int8 guard's decision rule (evaluation/guard.py) and the stage search (export/int8/search.py)."""

from pathlib import Path

import numpy as np
import pytest

from openocr_cli.evaluation.guard import FAIL, PASS, Run, Verdict, bootstrap_drop, judge
from openocr_cli.evaluation.iou_metric import ImageRecord
from openocr_cli.export.int8.search import STAGES, best, search


def box(x: int) -> np.ndarray:
    return np.array([[x, 0], [x + 10, 0], [x + 10, 10], [x, 10]], dtype=np.float32)


def run(images: int, missed: int, labelled: bool = True) -> Run:
    """One box per image; the last `missed` images lose theirs. Labels are the full set's boxes."""
    polygons = [[box(0)] if i < images - missed else [] for i in range(images)]
    records = [ImageRecord(1, len(p), len(p)) for p in polygons] if labelled else None
    return Run(polygons, [np.zeros((4, 4), np.float32) for _ in polygons], records, 1.0)


def test_identical_records_give_a_zero_interval():
    records = [ImageRecord(2, 2, 1)] * 5
    assert bootstrap_drop(records, records) == (0.0, 0.0)


def test_a_tiny_set_is_unresolved_and_agreement_decides():
    verdict = judge(run(3, 0), run(3, 1), max_drop=0.5, min_agreement=0.95)
    assert verdict.drop == pytest.approx(100 * (1 - 0.8))
    lo, hi = verdict.interval
    assert lo <= 0.5 < hi
    assert verdict.basis == "agreement" and "3 labelled image(s) cannot resolve --max-drop 0.5" in verdict.reason
    assert verdict.agreement["hmean"] == pytest.approx(0.8) and verdict.decision == FAIL
    lenient = judge(run(3, 0), run(3, 1), max_drop=0.5, min_agreement=0.75)
    assert lenient.decision == PASS and lenient.basis == "agreement"


def test_a_real_loss_on_many_images_fails_on_the_labels():
    verdict = judge(run(200, 0), run(200, 20), max_drop=0.5, min_agreement=0.0)  # agreement cannot rescue it
    assert verdict.interval[0] > 0.5 and verdict.decision == FAIL and verdict.basis == "labels"
    assert "above --max-drop 0.5" in verdict.reason


def test_no_loss_on_many_images_passes_on_the_labels():
    verdict = judge(run(200, 0), run(200, 0), max_drop=0.5, min_agreement=1.0)
    assert verdict.interval == (0.0, 0.0) and verdict.decision == PASS and verdict.basis == "labels"


def test_without_labels_agreement_decides_and_maps_are_compared():
    reference, candidate = run(10, 0, labelled=False), run(10, 0, labelled=False)
    candidate.maps[3][1, 2] = 0.25
    verdict = judge(reference, candidate, max_drop=0.5, min_agreement=0.95)
    assert verdict.hmean is None and verdict.interval is None
    assert verdict.decision == PASS and verdict.basis == "agreement" and verdict.max_prob_diff == pytest.approx(0.25)
    assert judge(reference, run(10, 2, labelled=False), 0.5, 0.95).decision == FAIL  # agreement 0.89


def test_nothing_to_compare_fails():
    empty = run(4, 4, labelled=False)
    verdict = judge(empty, empty, max_drop=0.5, min_agreement=0.95)
    assert verdict.decision == FAIL and "finds no text on the 4 check image(s)" in verdict.reason


def verdict(agreement: float, ok: bool) -> Verdict:
    return Verdict({"precision": agreement, "recall": agreement, "hmean": agreement}, 0.0, 0.0, None, None, None,
                   1.0, PASS if ok else FAIL, "agreement", "")


def test_search_measures_single_stages_then_combines_the_most_helpful(tmp_path):
    helps = {"head": 0.9, "neck": 0.92}  # each alone is not enough; together they pass

    def quantize(output: Path, stages) -> Path:
        output.write_text("+".join(stages))
        return output

    def judge_file(path: Path) -> Verdict:
        stages = set(filter(None, path.read_text().split("+")))
        if {"head", "neck"} <= stages:
            return verdict(0.99, True)
        return verdict(max([helps.get(s, 0.5) for s in stages] or [0.4]), False)

    attempts = search(quantize, judge_file, tmp_path, ".onnx")
    assert [a.float_stages for a in attempts] == [(), *[(s,) for s in STAGES], ("neck", "head")]
    assert best(attempts) is attempts[-1] and attempts[-1].label == "int8, fp32 neck+head"


def test_search_stops_at_the_first_pass_and_keeps_the_closest_on_failure(tmp_path):
    def quantize(output: Path, stages) -> Path:
        output.write_text("+".join(stages))
        return output

    attempts = search(quantize, lambda p: verdict(0.97, p.read_text() == "head"), tmp_path, ".onnx")
    assert [a.float_stages for a in attempts] == [(), ("head",)]
    failing = search(quantize, lambda p: verdict(0.9 if p.read_text() == "stage2" else 0.5, False), tmp_path, ".xml")
    assert len(failing) == 1 + len(STAGES) + len(STAGES) - 2
    assert best(failing).float_stages == ("stage2",)
