"""Predictor and its per-image results: stage times per run, det_results.txt lines, drawings, the factory."""

from types import SimpleNamespace

import numpy as np
import pytest

from openocr_cli.data.labels import LabelSample
from openocr_cli.data.resize import ResizeSpec
from openocr_cli.errors import UserError
from openocr_cli.evaluation.evaluator import evaluate_model
from openocr_cli.inference import predictor as predictor_module
from openocr_cli.inference.predictor import Predictor
from openocr_cli.inference.results import BOX_COLOR_BGR, Result, StageTimes
from openocr_cli.postprocess import Detection
from tests.conftest import write_image

FORWARD_SECONDS = 0.5


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ConstantBackend:
    """Probability 0.9 everywhere; each forward pass takes FORWARD_SECONDS on the fake clock."""

    name = "fake"

    def __init__(self, clock: FakeClock):
        self.clock = clock

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.clock.now += FORWARD_SECONDS
        return np.full((batch.shape[0], 1, *batch.shape[2:]), 0.9, np.float32)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(predictor_module, "time", SimpleNamespace(perf_counter=fake))
    return fake


def make_predictor(clock, batch_size=1):
    return Predictor.from_config(ConstantBackend(clock), {}, batch_size=batch_size, workers=1)


def test_a_reused_predictor_reports_each_run_on_its_own(tmp_path, clock):
    h, w = 64, 96
    full = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    samples = [LabelSample(f"{i}.png", write_image(tmp_path / f"{i}.png", h, w, i), [full], ["x"], [False])
               for i in range(3)]
    predictor = make_predictor(clock)
    for _ in range(2):
        result = evaluate_model(predictor, samples)
        assert result.images == 3 and result.hmean == 1.0
        assert result.seconds == pytest.approx(3 * FORWARD_SECONDS)
        assert result.fps == pytest.approx(1 / FORWARD_SECONDS)


def test_each_image_carries_its_share_of_the_batch(tmp_path, clock):
    paths = [str(write_image(tmp_path / f"{i}.png", 64, 96, i)) for i in range(3)]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    results = list(make_predictor(clock, batch_size=3).run([*paths, str(tmp_path / "bad.png")]))
    assert [r.times.inference for r in results[:3]] == pytest.approx([FORWARD_SECONDS / 3] * 3)
    assert results[3].error is not None and results[3].times == StageTimes()
    total = sum((r.times for r in results), StageTimes())
    assert total.images == 3 and total.inference == pytest.approx(FORWARD_SECONDS)
    assert total.fps() == pytest.approx(3 / FORWARD_SECONDS)
    assert total.ms_per_image()["inference"] == pytest.approx(1000 * FORWARD_SECONDS / 3)


def test_image_result_line_json_and_drawing():
    image = np.zeros((32, 40, 3), np.uint8)
    points = np.array([[1, 2], [30, 2], [30, 20], [1, 20]], np.int32)
    result = Result(0, "imgs/a.png", [Detection(points, 0.87654321)], image)
    assert result.to_json() == [{"points": [[1, 2], [30, 2], [30, 20], [1, 20]], "score": 0.876543}]
    assert result.to_line() == 'imgs/a.png\t[{"points": [[1, 2], [30, 2], [30, 20], [1, 20]], "score": 0.876543}]\n'
    assert Result(1, "b.png").to_line() == "b.png\t[]\n"
    drawn = result.plot()
    assert tuple(drawn[2, 15]) == tuple(drawn[11, 30]) == BOX_COLOR_BGR  # on the top and right edges
    assert tuple(drawn[11, 15]) == (0, 0, 0) and not image.any()  # inside untouched; the input is not drawn on
    with pytest.raises(ValueError, match="keep_images"):
        Result(2, "c.png").plot()


def test_from_config_fills_only_the_stages_not_given(clock):
    cfg = {"PostProcess": {"name": "DBPostProcess", "box_thresh": 0.5, "box_type": "poly"},
           "Eval": {"dataset": {"transforms": [{"DetResizeForTest": {"limit_side_len": 640, "limit_type": "min"}},
                                               {"NormalizeImage": {"mean": [0.5] * 3, "std": [0.25] * 3}}]}}}
    predictor = Predictor.from_config(ConstantBackend(clock), cfg, batch_size=4, workers=3)
    assert predictor.postprocess.box_thresh == 0.5 and predictor.postprocess.box_type == "poly"
    assert predictor.resize == ResizeSpec(640, "min")
    assert predictor.normalizer.mean.tolist() == [0.5] * 3 and predictor.normalizer.std.tolist() == [0.25] * 3
    assert (predictor.batch_size, predictor.workers) == (4, 3)
    given = ResizeSpec(image_shape=(64, 64))
    assert Predictor.from_config(ConstantBackend(clock), cfg, resize=given).resize is given


def test_from_config_refuses_bad_post_processing(clock):
    with pytest.raises(UserError, match="post-processing settings are invalid") as info:
        Predictor.from_config(ConstantBackend(clock), {"PostProcess": {"box_thresh": 2}})
    assert info.value.exit_code == 2
