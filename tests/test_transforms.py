"""The transform list: validate_ops messages, build_ops, and the shared normaliser."""

from __future__ import annotations

import copy
from importlib import resources

import numpy as np
import pytest
import yaml

from openocr_cli.data.augment import EastRandomCropData
from openocr_cli.data.resize import Normalizer
from openocr_cli.data.targets import MakeBorderMap, MakeShrinkMap
from openocr_cli.data.transforms import (
    DecodeImage,
    KeepKeys,
    NormalizeImage,
    ToCHWImage,
    build_ops,
    op_parameters,
    validate_ops,
)
from openocr_cli.errors import UserError

TRAIN = "Train.dataset.transforms"

# Every parameter name OpenOCR's own ops accept.
OPENOCR_PARAMS = {
    "DecodeImage": ["img_mode", "channel_first", "ignore_orientation"],
    "DetLabelEncode": [],
    "CopyPaste": ["objects_paste_ratio", "limit_paste"],
    "IaaAugment": ["augmenter_args"],
    "EastRandomCropData": ["size", "max_tries", "min_crop_side_ratio", "keep_ratio"],
    "MakeBorderMap": ["shrink_ratio", "thresh_min", "thresh_max", "epoch", "total_epoch"],
    "MakeShrinkMap": ["min_text_size", "shrink_ratio", "epoch", "total_epoch"],
    "NormalizeImage": ["scale", "mean", "std", "order"],
    "ToCHWImage": [],
    "KeepKeys": ["keep_keys"],
    "DetResizeForTest": ["image_shape", "keep_ratio", "limit_side_len", "limit_type", "resize_long"],
}


@pytest.fixture(scope="module")
def default_cfg() -> dict:
    text = resources.files("openocr_cli").joinpath("configs/repvit_db.yml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def error(op_configs, where=TRAIN) -> str:
    with pytest.raises(UserError) as info:
        validate_ops(op_configs, where)
    assert info.value.exit_code == 1
    return str(info.value)


def test_openocr_parameter_names_are_exactly_the_accepted_ones():
    for name, params in OPENOCR_PARAMS.items():
        assert op_parameters(name) == tuple(sorted(params)), name


def test_the_config_check_lists_every_op_with_the_parameters_it_takes():
    """config_schema (below the data layer) keeps the names the ops are built under: they must not drift."""
    from openocr_cli.config_schema import KNOWN_OPS, TRANSFORM_PARAMS
    from openocr_cli.data.transforms import _TRAIN_OPS

    assert set(TRANSFORM_PARAMS) == {*_TRAIN_OPS, "DetResizeForTest"} and KNOWN_OPS == tuple(sorted(TRANSFORM_PARAMS))
    assert {name: op_parameters(name) for name in KNOWN_OPS} == TRANSFORM_PARAMS


def test_default_train_and_eval_lists_are_valid(default_cfg):
    validate_ops(default_cfg["Train"]["dataset"]["transforms"], TRAIN)
    validate_ops(default_cfg["Eval"]["dataset"]["transforms"], "Eval.dataset.transforms")


def test_every_openocr_parameter_is_accepted():
    validate_ops([{name: dict.fromkeys(params, 1) or None} for name, params in OPENOCR_PARAMS.items()], TRAIN)


def test_unknown_parameter_names_full_path_and_suggestion(default_cfg):
    ops = copy.deepcopy(default_cfg["Train"]["dataset"]["transforms"])
    i = next(i for i, op in enumerate(ops) if "EastRandomCropData" in op)
    ops[i]["EastRandomCropData"]["sizes"] = ops[i]["EastRandomCropData"].pop("size")
    assert error(ops) == (
        f"Train.dataset.transforms.{i}.EastRandomCropData.sizes is not a parameter of EastRandomCropData (did you "
        f"mean `Train.dataset.transforms.{i}.EastRandomCropData.size`?). Its parameters: keep_ratio, max_tries, "
        "min_crop_side_ratio, size.")
    with pytest.raises(UserError, match="EastRandomCropData.sizes is not a parameter"):
        build_ops(ops, epoch=0)


def test_unknown_parameter_without_close_match_and_op_without_parameters():
    message = error([{"KeepKeys": {"zzz": 1}}])
    assert message.startswith("Train.dataset.transforms.0.KeepKeys.zzz is not a parameter of KeepKeys. ")
    assert "did you mean" not in message and message.endswith("Its parameters: keep_keys.")
    message = error([{"DecodeImage": None}, {"DetLabelEncode": {"use_gpu": True}}])
    assert message == ("Train.dataset.transforms.1.DetLabelEncode.use_gpu is not a parameter of DetLabelEncode. "
                       "DetLabelEncode takes no parameters.")


def test_eval_only_parameters_are_checked():
    message = error([{"DetResizeForTest": {"limit_side": 960}}], "Eval.dataset.transforms")
    assert message.startswith("Eval.dataset.transforms.0.DetResizeForTest.limit_side is not a parameter of "
                              "DetResizeForTest (did you mean `Eval.dataset.transforms.0.DetResizeForTest."
                              "limit_side_len`?)")


def test_unknown_op_names_path_and_suggestion():
    message = error([{"DecodeImage": None}, {"NormaliseImage": {"scale": 1}}])
    assert message.startswith("Train.dataset.transforms.1.NormaliseImage is not a transform openocr-det knows "
                              "(did you mean `Train.dataset.transforms.1.NormalizeImage`?). Known: ")
    assert "DetResizeForTest" in message


@pytest.mark.parametrize("ops, expected", [
    ([["DecodeImage"]], "Train.dataset.transforms.0 must be one transform like `- Name: {params}`"),
    ([{"DecodeImage": None, "ToCHWImage": None}], "Train.dataset.transforms.0 must be one transform"),
    (["ToCHWImage"], "Train.dataset.transforms.0 must be one transform"),
    ([{"ToCHWImage": None}, {"KeepKeys": ["image"]}],
     "Train.dataset.transforms.1.KeepKeys must be a mapping of parameters (or empty)"),
    ({"DecodeImage": None}, "Train.dataset.transforms must be a list of transforms"),
])
def test_malformed_entries(ops, expected):
    assert error(ops).startswith(expected)


def test_build_ops_gives_ops_only_their_parameters_and_epoch(default_cfg):
    ops = build_ops(default_cfg["Train"]["dataset"]["transforms"], epoch=0)
    assert [type(op).__name__ for op in ops] == [next(iter(e)) for e in default_cfg["Train"]["dataset"]["transforms"]]
    crop = next(op for op in ops if isinstance(op, EastRandomCropData))
    assert (crop.size, crop.max_tries, crop.keep_ratio, crop.min_crop_side_ratio) == ((640, 640), 50, True, 0.1)
    border = next(op for op in ops if isinstance(op, MakeBorderMap))
    shrink = next(op for op in ops if isinstance(op, MakeShrinkMap))
    assert border.shrink_ratio == shrink.shrink_ratio == pytest.approx(0.4)  # epoch 0: schedule is a no-op


def test_build_ops_refuses_test_time_op():
    with pytest.raises(UserError, match=r"transforms\.1\.DetResizeForTest is a test-time transform"):
        build_ops([{"DecodeImage": None}, {"DetResizeForTest": {"limit_side_len": 960}}])


def test_build_ops_without_epoch_keeps_configured_schedule():
    ops = build_ops([{"MakeShrinkMap": {"shrink_ratio": 0.4, "total_epoch": 500, "epoch": 250}}])
    assert ops[0].shrink_ratio == pytest.approx(0.5)


def test_normalize_image_hwc_matches_inference_normalizer_bit_for_bit():
    image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    data = NormalizeImage(scale="1./255.", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], order="hwc")(
        {"image": image})
    assert data["image"].dtype == np.float32 and data["image"].shape == (5, 7, 3)
    expected = (image.astype(np.float32) * np.float32(1 / 255) - np.float32([0.485, 0.456, 0.406])) / np.float32(
        [0.229, 0.224, 0.225])
    assert np.array_equal(data["image"], expected)
    chw = ToCHWImage()(data)["image"]
    assert chw.flags.c_contiguous and np.array_equal(chw, Normalizer()(image))


def test_normalize_image_chw_order():
    image = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    out = NormalizeImage(mean=[0.5, 0.4, 0.3], std=[0.1, 0.2, 0.3])({"image": chw})["image"]
    assert out.dtype == np.float32 and out.shape == (3, 5, 7) and out.flags.c_contiguous
    assert np.array_equal(out, Normalizer([0.5, 0.4, 0.3], [0.1, 0.2, 0.3])(image))
    with pytest.raises(UserError, match="order 'hcw'"):
        NormalizeImage(order="hcw")


def _formula(image, mean, std, scale, shape=(3,)):
    """The reference normalisation, written out: (x * scale - mean) / std in float32."""
    return (image.astype(np.float32) * np.float32(scale) - np.float32(mean).reshape(shape)) / np.float32(
        std).reshape(shape)


@pytest.mark.parametrize("mean, std, scale", [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255),
                                              ((0.5, 0.4, 0.3), (0.1, 0.2, 0.3), 1 / 127.5), ((0, 0, 0), (1, 1, 1), 1)])
def test_normalizer_table_lookup_is_the_formula_bit_for_bit(mean, std, scale):
    """Every uint8 value of every channel, in every layout the callers use, equals the written-out formula."""
    norm = Normalizer(mean, std, scale)
    image = np.stack(np.meshgrid(np.arange(256), np.arange(3), indexing="ij"), -1)[:, :, :1].repeat(3, 2)
    image = np.concatenate([image, np.random.default_rng(2).integers(0, 256, (256, 1, 3))], 1).astype(np.uint8)
    expected = _formula(image, mean, std, scale)
    assert np.array_equal(norm.normalize(image), expected)
    out = norm(image)
    assert out.flags.c_contiguous and np.array_equal(out, expected.transpose(2, 0, 1))
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    assert np.array_equal(norm.normalize(chw, channels_first=True), _formula(chw, mean, std, scale, (3, 1, 1)))
    flipped = image[:, ::-1, ::-1]  # strided views (the RGB normaliser passes one)
    assert np.array_equal(norm(flipped), _formula(flipped, mean, std, scale).transpose(2, 0, 1))
    as_float = image.astype(np.float32) + 0.25  # not uint8: computed, not looked up
    assert np.array_equal(norm.normalize(as_float), _formula(as_float, mean, std, scale))


def test_normalize_then_chw_needs_no_copy():
    image = np.random.default_rng(3).integers(0, 256, size=(6, 4, 3), dtype=np.uint8)
    hwc = NormalizeImage(order="hwc")({"image": image})["image"]
    chw = ToCHWImage()({"image": hwc})["image"]
    assert chw.flags.c_contiguous and np.shares_memory(chw, hwc)


@pytest.mark.parametrize("op", [DecodeImage, KeepKeys, ToCHWImage, NormalizeImage, EastRandomCropData, MakeShrinkMap])
def test_global_keys_no_longer_reach_ops(op):
    with pytest.raises(TypeError):  # no **kwargs: a Global key (or a typo) handed to an op cannot vanish
        op(use_gpu=True)


def test_bench_data_json_reports_samples_per_s(tmp_path):
    """The data benchmark runs offline on generated images and writes its figure (and per-op times) as JSON."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_data.py"
    out = tmp_path / "data.json"
    proc = subprocess.run([sys.executable, str(script), "--images", "2", "--samples", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["samples_per_s"] > 0 and result["samples_per_round"] == 3
    assert {"DecodeImage", "IaaAugment", "EastRandomCropData", "NormalizeImage"} <= set(result["ms_per_op"])
    assert "| transform | ms/sample | share |" in proc.stdout
