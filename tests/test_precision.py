"""Inference at --precision bf16/fp16: torch autocast, refusals, and eval's check against float32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from openocr_cli.errors import UserError
from openocr_cli.inference.options import InferenceOptions
from tests.conftest import label_line, write_image

NATIVE_BF16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
needs_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has neither AVX-512 BF16 nor AMX")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")


@pytest.fixture
def labelled(tmp_path):
    """Two images, each labelled with one region covering it (the constant checkpoint's one box)."""
    data = tmp_path / "data"
    write_image(data / "a.png", 96, 128)
    write_image(data / "b.png", 64, 100, seed=1)
    labels = data / "test_label.txt"
    labels.write_text(label_line("a.png", [{"transcription": "A", "points": [[0, 0], [128, 0], [128, 96], [0, 96]]}])
                      + label_line("b.png", [{"transcription": "B", "points": [[0, 0], [100, 0], [100, 64], [0, 64]]}]))
    return data, labels


def test_precision_is_checked_before_any_model_loads():
    with pytest.raises(UserError, match="--precision 'int4' is not one of fp32, bf16, fp16") as err:
        InferenceOptions(precision="int4")
    assert err.value.exit_code == 2
    with pytest.raises(UserError, match="onnx backend runs a file at the precision it was exported") as err:
        InferenceOptions(onnx_model="m.onnx", precision="bf16").precision_name()
    assert err.value.exit_code == 2
    assert InferenceOptions().precision_name() == "fp32"


def test_fp16_on_cpu_is_refused_naming_what_runs(constant_ckpt):
    from openocr_cli import Detector

    with pytest.raises(UserError, match="--precision fp16 cannot run on cpu: fp16 autocast runs on CUDA only") as err:
        Detector(constant_ckpt, device="cpu", precision="fp16")
    assert err.value.exit_code == 2
    assert ("or bf16" in str(err.value)) == NATIVE_BF16


@needs_bf16
def test_detector_bf16_matches_fp32(random_ckpt, tmp_path):
    """Same boxes and probability maps within bf16's rounding (8 bits of mantissa) on the random model."""
    from openocr_cli import Detector
    from openocr_cli.evaluation.iou_metric import match_image, summarize

    images = [str(write_image(tmp_path / f"{i}.png", 96, 128, seed=i)) for i in range(3)]
    # its map lies between 0.5 and 0.62 everywhere: box_thresh 0.5 makes each image's one region a box
    fp32 = Detector(random_ckpt, device="cpu", box_thresh=0.5)
    bf16 = Detector(random_ckpt, device="cpu", precision="bf16", box_thresh=0.5)
    assert bf16.settings["precision"].value == "bf16" and fp32.settings["precision"].value == "fp32"
    a, b = fp32.predict(images, return_maps=True), bf16.predict(images, return_maps=True)
    assert all(r.prob_map.dtype == np.float32 for r in b)
    assert max(float(np.abs(x.prob_map - y.prob_map).max()) for x, y in zip(a, b)) < 0.05
    boxes = [([d.points for d in x.detections], [d.points for d in y.detections]) for x, y in zip(a, b)]
    assert all(ref for ref, _ in boxes)
    records = [match_image(ref, [False] * len(ref), cand).record() for ref, cand in boxes]
    assert summarize(records)["hmean"] == 1.0
    # the model's weights are untouched: float32
    assert all(p.dtype == torch.float32 for p in bf16.resolved.backend.model.parameters())


@needs_bf16
def test_eval_bf16_reports_the_drop_against_fp32(cli, tmp_path, labelled, constant_ckpt):
    data, labels = labelled
    out_json = tmp_path / "m.json"
    code, out, err = cli("eval", "-w", constant_ckpt, "--data-dir", data, "--label-file", labels, "--device", "cpu",
                         "--precision", "bf16", "--json", out_json)
    assert code == 0, err
    check = json.loads(out_json.read_text())["precision_check"]
    assert check["precision"] == "bf16" and check["fp32_hmean"] == 1.0 and check["hmean"] == 1.0
    assert check["drop"] == 0.0 and check["interval"] == [0.0, 0.0]
    assert check["decision"] == "pass" and check["basis"] == "labels"
    assert "bf16 against fp32" in out


@needs_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_precisions_match_fp32(random_ckpt, tmp_path, precision):
    from openocr_cli import Detector

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")
    image = str(write_image(tmp_path / "a.png", 96, 128))
    a = Detector(random_ckpt, device="cuda").predict(image, return_maps=True)[0]
    b = Detector(random_ckpt, device="cuda", precision=precision).predict(image, return_maps=True)[0]
    assert float(np.abs(a.prob_map - b.prob_map).max()) < 0.05


@pytest.mark.slow
def test_export_fp16_is_checked_against_float32(cli, tmp_path, labelled, constant_ckpt):
    """export --fp16 --check-data LABELS: the fp16 file is judged against the float32 model before it is kept."""
    data, labels = labelled
    path = tmp_path / "half.onnx"
    code, out, err = cli("export", "-w", constant_ckpt, "--output", path, "--fp16", "--check-data", labels,
                         "--data-dir", data)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "fp16 accuracy check" in flat and "within --max-drop 0.5" in flat and path.is_file()
