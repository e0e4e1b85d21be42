"""The one resolver: every inference value, its precedence (config < model < file < -o < explicit) and source."""

from __future__ import annotations

import json

import pytest
import torch

from openocr_cli.errors import UserError
from openocr_cli.inference.options import InferenceOptions
from openocr_cli.inference.resolve import CHECKPOINT_SOURCE, Setting, resolve
from tests.conftest import make_constant_checkpoint


@pytest.fixture(scope="module")
def tuned_ckpt(tmp_path_factory):
    path = make_constant_checkpoint(tmp_path_factory.mktemp("ckpt") / "tuned.pth")
    state = torch.load(path, weights_only=True)
    state["config"] = {"PostProcess": {"thresh": 0.25, "box_thresh": 0.55, "unclip_ratio": 1.7}}
    torch.save(state, path)
    return path


def test_layers_in_order_with_their_sources(tmp_path, tuned_ckpt):
    pp = tmp_path / "pp.json"
    pp.write_text(json.dumps({"tuned": {"box_thresh": 0.5, "unclip_ratio": 1.6}}))
    base = InferenceOptions(weights=str(tuned_ckpt), device="cpu")
    s = resolve(base).settings
    assert s["thresh"] == Setting(0.25, CHECKPOINT_SOURCE) and s["unclip_ratio"] == Setting(1.7, CHECKPOINT_SOURCE)
    assert s["max_candidates"] == Setting(1000, "config") and s["backend"] == Setting("torch", "default")
    s = resolve(base.replace(postprocess=pp)).settings
    assert s["box_thresh"] == Setting(0.5, f"--postprocess {pp}") and s["thresh"].source == CHECKPOINT_SOURCE
    s = resolve(base.replace(postprocess=pp, overrides=("PostProcess.box_thresh=0.45",))).settings
    assert s["box_thresh"] == Setting(0.45, "-o") and s["unclip_ratio"] == Setting(1.6, f"--postprocess {pp}")
    s = resolve(base.replace(postprocess=pp, overrides=("PostProcess.box_thresh=0.45",), box_thresh=0.4,
                             limit_side_len=640)).settings
    assert s["box_thresh"] == Setting(0.4, "flag") and s["limit_side_len"] == Setting(640, "flag")
    assert s["limit_type"] == Setting("max", "config")


def test_an_explicit_config_replaces_the_models_values(tmp_path, tuned_ckpt):
    from openocr_cli.config import default_config_path

    s = resolve(InferenceOptions(weights=str(tuned_ckpt), device="cpu", config=default_config_path())).settings
    assert s["thresh"] == Setting(0.3, "config") and s["box_thresh"] == Setting(0.6, "config")


def test_bad_values_fail_before_the_model_loads(tmp_path):
    with pytest.raises(UserError, match="thresh"):  # the weights file does not even exist: settings come first
        resolve(InferenceOptions(weights=str(tmp_path / "none.pth"), thresh=1.5))
    with pytest.raises(UserError, match="--onnx-model is used by the onnx backend only"):
        resolve(InferenceOptions(backend="torch", onnx_model="x.onnx"))
