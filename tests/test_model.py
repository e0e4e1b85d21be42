"""RepViT-DB model: checkpoint layout, shapes, DB head maths, re-parameterisation, config checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from openocr_cli.errors import UserError
from openocr_cli.model import DBDetector, build_detector
from openocr_cli.model.repvit import Conv2D_BN, RepVGGDW

REPO = Path(__file__).resolve().parents[1]
SPEC_JSON = REPO / "tests/data/repvit_db_state_dict.json"  # a copy of the released checkpoint's keys and shapes


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def n_bn(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads(SPEC_JSON.read_text())


@pytest.fixture(scope="module")
def model() -> DBDetector:
    torch.manual_seed(0)
    return build_detector().eval()


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine params, so fusion has something to fold."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            c = bn.num_features
            bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=gen) * 0.1)
            bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)


# --- checkpoint layout -----------------------------------------------------------------------

def test_state_dict_keys_order_and_shapes_match_release(model, spec):
    expected = spec["state_dict"]
    actual = model.state_dict()
    assert len(actual) == spec["num_entries"] == 424
    for i, ((key, tensor), (want_key, want_shape)) in enumerate(zip(actual.items(), expected.items())):
        assert key == want_key, f"entry {i}"
        assert list(tensor.shape) == want_shape, key
    assert list(actual) == list(expected)


def test_parameter_and_bn_counts(model, spec):
    assert n_params(model) == spec["num_parameters"] == 3_127_722
    assert n_params(model.backbone) == 2_908_960
    assert n_params(model.neck) == 172_248
    assert n_params(model.head) == 46_514
    assert n_bn(model) == 58
    assert (n_bn(model.backbone), n_bn(model.neck), n_bn(model.head)) == (54, 0, 4)
    assert model.backbone.out_channels == [48, 96, 192, 384]
    assert len(model.backbone.features) == 14


def test_strict_load_of_state_dict_built_from_spec(spec):
    torch.manual_seed(1)
    weights = {}
    for key, shape in spec["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            weights[key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            weights[key] = torch.rand(shape) + 0.5
        else:
            weights[key] = torch.randn(shape)
    model = build_detector()
    result = model.load_state_dict(weights, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    key = "head.thresh.conv3.bias"
    assert torch.equal(model.state_dict()[key], weights[key])
    assert model.state_dict()["backbone.features.0.0.bn.num_batches_tracked"].item() == 7


def test_weight_init():
    model = build_detector()
    for name, module in model.named_modules():
        if isinstance(module, Conv2D_BN):
            want = 0.0 if name.endswith("channel_mixer.m.2") else 1.0
            assert torch.all(module.bn.weight == want), name
            assert torch.all(module.bn.bias == 0), name
    zero_init = [n for n, m in model.named_modules()
                 if isinstance(m, Conv2D_BN) and torch.all(m.bn.weight == 0)]
    assert len(zero_init) == 13  # one per RepViT block


# --- shapes and outputs ----------------------------------------------------------------------

def test_feature_neck_and_eval_shapes_at_640(model):
    x = torch.randn(1, 3, 640, 640)
    with torch.no_grad():
        feats = model.backbone(x)
        assert [tuple(f.shape[1:]) for f in feats] == [
            (48, 160, 160), (96, 80, 80), (192, 40, 40), (384, 20, 20)]
        fused = model.neck(feats)
        assert fused.shape == (1, 96, 160, 160)
        out = model.head(fused)
    assert out.shape == (1, 1, 640, 640)
    assert out.min() >= 0 and out.max() <= 1


def test_train_output_is_p_t_and_binary_map():
    torch.manual_seed(2)
    model = build_detector().train()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x, {"ignored": True})
    assert out.shape == (2, 3, 64, 96)
    assert out.min() >= 0 and out.max() <= 1
    p, t, b = out[:, 0], out[:, 1], out[:, 2]
    torch.testing.assert_close(b, 1.0 / (1.0 + torch.exp(-50.0 * (p - t))), rtol=0, atol=1e-6)
    assert not torch.allclose(p, t)


def test_eval_output_skips_threshold_branch():
    model = build_detector().eval()
    calls = []
    model.head.thresh.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    assert out.min() >= 0 and out.max() <= 1
    assert calls == []


def test_neck_uses_hard_sigmoid_gate():
    from openocr_cli.model.neck import NeckSE

    se = NeckSE(8)
    with torch.no_grad():
        se.conv1.weight.zero_()
        se.conv1.bias.zero_()
        se.conv2.weight.zero_()
        se.conv2.bias.fill_(1.2)  # hard-sigmoid: 1.2/6 + 0.5 = 0.7 (Paddle's would give 0.74)
    x = torch.ones(1, 8, 4, 4)
    torch.testing.assert_close(se(x), x * 0.7)


# --- re-parameterisation ---------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: Conv2D_BN(6, 10, 3, 2, 1), lambda: Conv2D_BN(6, 6, 3, 1, 1, groups=6),
                                  lambda: RepVGGDW(6)])
def test_block_fuse_is_equivalent(make):
    torch.manual_seed(3)
    block = make()
    randomise_bn(block, seed=4)
    block.eval()
    x = torch.randn(2, 6, 9, 11)
    fused = block.fuse()
    assert isinstance(fused, nn.Conv2d) and fused.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(fused(x), block(x), rtol=1e-5, atol=1e-5)


def test_fused_detector_matches_unfused():
    torch.manual_seed(5)
    model = build_detector()
    randomise_bn(model, seed=6)
    model.eval()
    fused = copy.deepcopy(model).fuse()
    assert fused.is_fused and not model.is_fused
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ref_feats, got_feats = model.backbone(x), fused.backbone(x)
        for ref, got in zip(ref_feats, got_feats):
            assert (ref - got).abs().max() <= 1e-4 * max(1.0, ref.abs().max().item())
        ref, got = model(x), fused(x)
    assert got.shape == (1, 1, 96, 128)
    assert (ref - got).abs().max() <= 1e-4
    assert 0.01 < ref.mean() < 0.99  # not saturated, so the comparison means something

    assert n_params(fused) == 3_110_034
    assert len(fused.state_dict()) == 178
    assert n_bn(fused.backbone) == 0 and n_bn(fused.head) == 4
    assert not any(isinstance(m, (Conv2D_BN, RepVGGDW)) for m in fused.modules())
    # neck and head untouched
    for key, value in model.state_dict().items():
        if not key.startswith("backbone."):
            assert torch.equal(fused.state_dict()[key], value), key


def test_fuse_is_idempotent():
    model = build_detector().eval()
    assert model.fuse() is model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.fuse() is model
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())


# --- build_detector from config ----------------------------------------------------------------

def test_build_from_packaged_config():
    cfg = yaml.safe_load((REPO / "openocr_cli/configs/repvit_db.yml").read_text())
    model = build_detector(cfg["Architecture"])
    assert isinstance(model, DBDetector)
    assert list(model.state_dict()) == list(build_detector(None).state_dict())


@pytest.mark.parametrize("arch, words", [
    ({"Backbone": {"name": "ResNet_vd"}}, ["Backbone.name", "ResNet_vd", "RepSVTR_det"]),
    ({"Neck": {"name": "DBFPN", "out_channels": 96}}, ["Neck.name", "RSEFPN"]),
    ({"Neck": {"name": "RSEFPN", "out_channels": 256}}, ["Neck.out_channels", "96"]),
    ({"Head": {"name": "PSEHead"}}, ["Head.name", "DBHead"]),
    ({"Head": {"name": "DBHead", "k": -1}}, ["Head.k"]),
    ({"model_type": "rec"}, ["model_type", "det"]),
])
def test_unsupported_architecture_raises_user_error(arch, words):
    with pytest.raises(UserError) as info:
        build_detector(arch)
    for word in words:
        assert word in str(info.value)


def test_unknown_architecture_key_is_caught_by_the_config_schema():
    from openocr_cli import config as cfgmod

    with pytest.raises(UserError, match="Architecture.Backbone.depth") as info:
        cfgmod.apply_overrides(cfgmod.load_config(), ["Architecture.Backbone.depth=5"])
    assert info.value.exit_code == 2


def test_neck_without_shortcut_keeps_keys_and_changes_output():
    torch.manual_seed(7)
    with_sc = build_detector({"Neck": {"name": "RSEFPN", "out_channels": 96, "shortcut": True}}).eval()
    without = build_detector({"Neck": {"name": "RSEFPN", "out_channels": 96, "shortcut": False}}).eval()
    without.load_state_dict(with_sc.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(with_sc(x), without(x))
