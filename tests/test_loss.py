"""DBLoss against hand-written formulas on tiny maps (openocr-compat: balance-loss, loss-scalar)."""

from __future__ import annotations

import pytest
import torch

from openocr_cli.training.loss import DBLoss

KEYS = ["loss", "loss_shrink_maps", "loss_threshold_maps", "loss_binary_maps"]


def tiny_batch(seed: int = 0, positives: bool = True):
    """1x4x4 maps: a 2x2 text square (unless `positives` is False), one masked-out pixel."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(1, 3, 4, 4, generator=g, dtype=torch.float64).float()
    shrink = torch.zeros(1, 4, 4)
    if positives:
        shrink[0, 1:3, 1:3] = 1
    shrink_mask = torch.ones(1, 4, 4)
    shrink_mask[0, 0, 0] = 0
    thresh = torch.rand(1, 4, 4, generator=g, dtype=torch.float64).float() * 0.4 + 0.3
    thresh_mask = torch.zeros(1, 4, 4)
    thresh_mask[0, :, :2] = 1
    return pred, [thresh, thresh_mask, shrink, shrink_mask]


def by_hand(pred, labels):
    """Reference values written out pixel by pixel in float64."""
    t_gt, t_mask, g, m = (x[0].double().flatten().tolist() for x in labels)
    p, t, b = (pred[0, c].double().flatten().tolist() for c in range(3))

    def dice(x):
        inter = sum(xi * gi * mi for xi, gi, mi in zip(x, g, m))
        union = sum(xi * mi for xi, mi in zip(x, m)) + sum(gi * mi for gi, mi in zip(g, m)) + 1e-6
        return 1 - 2 * inter / union

    n_pos = int(sum(gi * mi for gi, mi in zip(g, m)))
    n_neg = int(min(sum((1 - gi) * mi for gi, mi in zip(g, m)), 3 * n_pos))
    shrink = dice(p) * (n_pos + n_neg) / (n_pos + n_neg + 1e-6)
    l1 = sum(abs(ti - gi) * mi for ti, gi, mi in zip(t, t_gt, t_mask)) / (sum(t_mask) + 1e-6)
    return {"loss_shrink_maps": 5 * shrink, "loss_threshold_maps": 10 * l1, "loss_binary_maps": dice(b),
            "plain_dice": dice(p)}


def test_terms_match_hand_formula():
    pred, labels = tiny_batch()
    out = DBLoss()(pred, labels)
    ref = by_hand(pred, labels)
    for key in ("loss_shrink_maps", "loss_threshold_maps", "loss_binary_maps"):
        assert out[key].item() == pytest.approx(ref[key], rel=1e-5), key
    total = ref["loss_shrink_maps"] + ref["loss_threshold_maps"] + ref["loss_binary_maps"]
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)


def test_negatives_capped_at_three_times_positives():
    # One positive, 14 negatives in the mask -> n_neg capped at 3 (the factor stays ~1).
    pred, labels = tiny_batch(seed=3)
    labels[2] = torch.zeros(1, 4, 4)
    labels[2][0, 2, 2] = 1
    out = DBLoss()(pred, labels)
    assert out["loss_shrink_maps"].item() == pytest.approx(by_hand(pred, labels)["loss_shrink_maps"], rel=1e-5)


def test_no_positive_pixel_gives_exact_zero_shrink_term():
    pred, labels = tiny_batch(positives=False)
    pred.requires_grad_(True)
    out = DBLoss()(pred, labels)
    assert by_hand(pred.detach(), labels)["plain_dice"] == pytest.approx(1.0)
    assert out["loss_shrink_maps"].item() == 0.0
    out["loss"].backward()
    assert torch.all(pred.grad[:, 0] == 0)


def test_key_order_and_scalar_loss():
    pred, labels = tiny_batch()
    out = DBLoss()(pred, labels)
    assert list(out) == KEYS
    for key in KEYS:
        assert out[key].shape == torch.Size([]), key
        assert out[key].dtype == torch.float32


def test_half_inputs_give_float32():
    pred, labels = tiny_batch()
    out = DBLoss()(pred.bfloat16(), [x.bfloat16() for x in labels])
    assert all(v.dtype == torch.float32 for v in out.values())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = DBLoss()(pred.bfloat16(), labels)
    assert out["loss"].dtype == torch.float32


def test_gradients_reach_all_three_channels():
    pred, labels = tiny_batch()
    pred.requires_grad_(True)
    DBLoss()(pred, labels)["loss"].backward()
    for c in range(3):
        assert pred.grad[:, c].abs().sum() > 0, c


def test_perfect_prediction_is_near_zero():
    _, labels = tiny_batch()
    thresh, _, shrink, _ = labels
    pred = torch.stack([shrink, thresh, shrink], dim=1)
    out = DBLoss()(pred, labels)
    assert out["loss_shrink_maps"].item() == pytest.approx(0, abs=1e-5)
    assert out["loss_binary_maps"].item() == pytest.approx(0, abs=1e-6)
    assert out["loss_threshold_maps"].item() == pytest.approx(0, abs=1e-6)


def test_whole_batch_sums():
    """Two images: the loss is one batch-wide Dice, not a mean of per-image Dice."""
    a, la = tiny_batch(seed=1)
    b, lb = tiny_batch(seed=2, positives=False)
    pred = torch.cat([a, b])
    labels = [torch.cat([x, y]) for x, y in zip(la, lb)]
    out = DBLoss()(pred, labels)
    flat_pred = torch.cat([a, b], dim=3)  # same pixels side by side as one image
    flat_labels = [torch.cat([x, y], dim=2) for x, y in zip(la, lb)]
    ref = by_hand(flat_pred, flat_labels)
    assert out["loss_shrink_maps"].item() == pytest.approx(ref["loss_shrink_maps"], rel=1e-5)
    assert out["loss_binary_maps"].item() == pytest.approx(ref["loss_binary_maps"], rel=1e-5)


def test_nan_prediction_gives_a_nan_loss_for_the_guard():
    pred, labels = tiny_batch()
    pred[0, 0, 1, 1] = float("nan")
    assert torch.isnan(DBLoss()(pred, labels)["loss"])


def test_unsupported_main_loss_type():
    with pytest.raises(ValueError, match="BCELoss"):
        DBLoss(main_loss_type="BCELoss")


def test_unknown_loss_parameter_is_refused():
    with pytest.raises(TypeError):
        DBLoss(alpha=5, gama=3)
