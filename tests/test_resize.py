import numpy as np
import pytest

from openocr_cli.data.resize import Normalizer, ResizeSpec, resize_for_test, target_size
from openocr_cli.errors import UserError


def test_icdar_example_from_spec():
    # 1280x720 at limit 960/max -> 960 x 540 -> rounded to 960 x 544
    assert target_size(720, 1280, ResizeSpec(960, "max")) == (544, 960)


def test_rounding_is_half_to_even_to_multiples_of_32():
    spec = ResizeSpec(960, "max")
    assert target_size(720, 752, spec) == (704, 768)  # 22.5 -> 22, 23.5 -> 24
    assert target_size(10, 900, spec) == (32, 896)  # minimum 32


def test_max_never_upscales_and_min_never_downscales():
    assert target_size(100, 200, ResizeSpec(960, "max")) == (96, 192)
    assert target_size(100, 200, ResizeSpec(736, "min")) == (736, 1472)
    assert target_size(1000, 2000, ResizeSpec(736, "min")) == (992, 1984)  # 62.5 -> 62 (half-to-even)


def test_resize_long_types():
    assert target_size(100, 200, ResizeSpec(960, "resize_long")) == (480, 960)
    assert target_size(300, 500, ResizeSpec(resize_long=960)) == (640, 1024)  # 576 -> 640, 960 -> 1024


def test_mode_selection_from_config_params():
    assert ResizeSpec.from_params({"limit_side_len": 640}).limit_type == "min"
    assert ResizeSpec.from_params({}).limit_side_len == 736
    assert ResizeSpec.from_params({"resize_long": 512}).resize_long == 512
    assert ResizeSpec.from_params({"image_shape": [640, 640], "keep_ratio": True}).image_shape == (640, 640)
    with pytest.raises(UserError):
        ResizeSpec.from_params({"limit_side_len": 960, "limit_type": "middle"})


def test_tiny_image_is_padded_but_keeps_source_size():
    image = np.full((20, 30, 3), 7, np.uint8)
    out, src = resize_for_test(image, ResizeSpec(960, "max"))
    assert src == (20, 30)
    assert out.shape == (32, 32, 3)
    assert out[:20, :30].min() == 7 and out[20:].max() == 0


def test_resize_output_shape():
    out, src = resize_for_test(np.zeros((720, 1280, 3), np.uint8), ResizeSpec(960, "max"))
    assert out.shape == (544, 960, 3) and src == (720, 1280)


def test_normalizer_applies_rgb_stats_positionally_on_bgr():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = 255  # blue channel
    out = Normalizer()(image)
    assert out.shape == (3, 2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], (1 - 0.485) / 0.229, rtol=1e-6)
    np.testing.assert_allclose(out[1], (0 - 0.456) / 0.224, rtol=1e-6)
    np.testing.assert_allclose(out[2], (0 - 0.406) / 0.225, rtol=1e-6)
