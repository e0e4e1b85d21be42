"""Typed settings and config checks: cadences, flags, unknown/ignored/refused keys, schedules, optimizer groups."""

from __future__ import annotations

import pytest
import torch

from openocr_cli import config as cfgmod
from openocr_cli.config_schema import check_config
from openocr_cli.errors import UserError
from openocr_cli.training.builders import parameter_groups
from openocr_cli.training.schedules import SCHEDULES, build_scheduler
from openocr_cli.training.settings import Cadence, TrainSettings, apply_flags


def settings_for(*overrides: str) -> TrainSettings:
    return TrainSettings.from_config(cfgmod.apply_overrides(cfgmod.load_config(), list(overrides)))


def test_cadence_starts_after_start():
    """OpenOCR acts at s when s > start and (s - start) % every == 0."""
    evals = Cadence(4000, 2000)
    assert [s for s in range(1, 12001) if evals.due(s)] == [6000, 8000, 10000, 12000]
    assert [s for s in range(1, 9) if Cadence(0, 2).due(s)] == [2, 4, 6, 8]
    assert not any(Cadence(0, 0).due(s) for s in range(1, 100))  # every 0 = never


def test_openocr_never_cadences_stay_never():
    s = settings_for()
    assert not any(s.save_every.due(n) for n in range(1, 100_001))  # save_iter_step [1e11, 2000]: never
    assert [e for e in range(1, 501) if s.save_epochs.due(e)] == [425, 450, 475, 500]  # [400, 25]
    assert [n for n in range(1, 3001) if s.eval_every.due(n)] == [1000, 2000, 3000]  # [0, 1000]
    assert all(s.eval_epochs.due(e) for e in range(1, 5))  # default 1: after every epoch


def test_iteration_saves_count_from_zero_like_openocr():
    s = settings_for("Global.save_iter_step=[3, 2]", "Global.eval_batch_step=[3, 2]")
    assert [n for n in range(1, 10) if s.save_every.due(n)] == [4, 6, 8]
    assert [n for n in range(1, 10) if s.eval_every.due(n)] == [5, 7, 9]


def test_flags_write_config_keys_once():
    cfg = apply_flags(cfgmod.load_config(), epochs=3, lr=0.01, eval_every=7, save_every=5, weights="none",
                      train_label=["a.txt", "b.txt"], batch_size=2, sync_bn=None)
    assert cfg["Global"]["epoch_num"] == 3 and cfg["Optimizer"]["lr"] == 0.01
    assert cfg["Global"]["eval_batch_step"] == [0, 7] and cfg["Global"]["save_iter_step"] == [0, 5]
    assert cfg["Global"]["pretrained_model"] is None
    assert cfg["Train"]["dataset"]["label_file_list"] == ["a.txt", "b.txt"]
    assert cfg["Train"]["dataset"]["ratio_list"] == [1.0, 1.0]
    assert "use_sync_bn" not in cfg["Global"] or cfg["Global"]["use_sync_bn"] is False
    s = TrainSettings.from_config(cfg)
    assert (s.epochs, s.optimizer["lr"], s.batch_size, s.eval_every) == (3, 0.01, 2, Cadence(0, 7))
    assert s.pretrained_model is None


def test_unknown_yaml_key_is_an_error_with_suggestion(tmp_path):
    bad = tmp_path / "typo.yml"
    bad.write_text("Global:\n  eval_batch_stp: [0, 10]\n")
    with pytest.raises(UserError) as info:
        cfgmod.load_config(bad)
    assert info.value.exit_code == 1
    message = str(info.value)
    assert "typo.yml" in message and "`Global.eval_batch_stp`" in message
    assert "did you mean `Global.eval_batch_step`?" in message


def test_unknown_override_key_is_a_usage_error():
    with pytest.raises(UserError) as info:
        cfgmod.apply_overrides(cfgmod.load_config(), ["Optimizer.learning_rate=0.1"])
    assert info.value.exit_code == 2
    assert "-o Optimizer.learning_rate=0.1" in str(info.value) and "unknown config key" in str(info.value)
    with pytest.raises(UserError, match="did you mean `Train.dataset.transforms.4.EastRandomCropData.size`") as info:
        cfgmod.apply_overrides(cfgmod.load_config(), ["Train.dataset.transforms.4.EastRandomCropData.sizes=[9, 9]"])
    assert info.value.exit_code == 2
    with pytest.raises(UserError, match="did you mean `PostProcess.box_thresh`"):
        cfgmod.apply_overrides(cfgmod.load_config(), ["PostProcess.box_thres=0.5"])


def test_openocr_keys_without_effect_are_listed_as_ignored():
    cfg = cfgmod.apply_overrides(cfgmod.load_config(), ["Global.use_visualdl=false",
                                                         "Global.character_dict_path=x.txt",
                                                         "Global.distributed=true"])
    ignored = TrainSettings.from_config(cfg).ignored
    assert {"Global.use_visualdl", "Global.character_dict_path", "Global.distributed"} <= set(ignored)
    assert check_config(cfgmod.load_config(), "x").ignored == []  # nothing in the packaged file


@pytest.mark.parametrize("override, why", [
    ("Metric.main_indicator=precision", "hmean"),
    ("Optimizer.name=SGD", "Adam"),
    ("Loss.main_loss_type=BCELoss", "DiceLoss"),
    ("LRScheduler.name=Cosine", "CosineAnnealingLR"),
    ("LRScheduler.warmup=3", "warmup_epoch"),
])
def test_behaviour_changing_keys_are_refused_with_a_reason(override, why):
    with pytest.raises(UserError, match=why) as info:
        cfgmod.apply_overrides(cfgmod.load_config(), [override])
    assert info.value.exit_code == 2


@pytest.mark.parametrize("override, key", [
    ("Global.epoch_num=0", "Global.epoch_num"),
    ("Global.eval_batch_step=[1, 2, 3]", "Global.eval_batch_step"),
    ("Optimizer.lr=abc", "Optimizer.lr"),
    ("Train.loader.shuffle=5", "Train.loader.shuffle"),
    ("PostProcess.box_thresh=3", "box_thresh"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(UserError, match=key):
        settings_for(override)


def test_log_window_and_schedule_are_read():
    s = settings_for("Global.log_smooth_window=3", "LRScheduler.name=ConstLR")
    assert s.log_window == 3 and s.scheduler == {"name": "ConstLR", "warmup_epoch": 2}


def _lrs(name: str, params: dict, per_epoch: int = 4, epochs: int = 3, lr: float = 0.1) -> list[float]:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(opt, {"name": name, **params}, per_epoch, epochs, lr)
    out = []
    for _ in range(per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_every_openocr_schedule_builds_and_matches_its_formula():
    from openocr_cli.config_schema import SCHEDULE_PARAMS

    assert list(SCHEDULES) == list(SCHEDULE_PARAMS)  # the config check's names, each with a builder
    assert set(SCHEDULES) == {"CosineAnnealingLR", "ConstLR", "LinearLR", "StepLR", "MultiStepLR", "PolynomialLR",
                              "CdistNetLR", "OneCycleLR", "WarmupCosineLR"}
    assert _lrs("ConstLR", {"warmup_epoch": 1}) == pytest.approx([0, 0.025, 0.05, 0.075] + [0.1] * 8)
    assert _lrs("StepLR", {"step_size": 1, "gamma": 0.5}) == pytest.approx([0.1] * 4 + [0.05] * 4 + [0.025] * 4)
    assert _lrs("MultiStepLR", {"milestones": [2]}) == pytest.approx([0.1] * 8 + [0.01] * 4)
    assert _lrs("LinearLR", {})[:2] == pytest.approx([0.1, 0.1 * 11 / 12])
    assert _lrs("CosineAnnealingLR", {"warmup_epoch": 0})[0] == pytest.approx(0.1)
    for name in ("PolynomialLR", "CdistNetLR", "OneCycleLR", "WarmupCosineLR"):
        values = _lrs(name, {})
        assert len(values) == 12 and all(v >= 0 for v in values)


def test_filter_bias_and_bn_puts_1d_and_bias_params_in_an_undecayed_group():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    single = parameter_groups(model, 5e-5, filter_bias_and_bn=False)
    assert len(single) == 1 and single[0]["weight_decay"] == 5e-5 and len(single[0]["params"]) == 4
    plain, decayed = parameter_groups(model, 5e-5, filter_bias_and_bn=True)
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3  # conv bias, bn weight, bn bias
    assert decayed["weight_decay"] == 5e-5 and [p.ndim for p in decayed["params"]] == [4]
    assert len(parameter_groups(model, 0.0, filter_bias_and_bn=True)) == 1  # OpenOCR: no decay, no split


def test_scale_lr_multiplies_by_the_process_count():
    from openocr_cli.training.builders import learning_rate
    from openocr_cli.training.distributed import Role

    assert learning_rate(settings_for("Optimizer.lr=0.002"), Role(0, 0, 4)) == 0.002
    assert learning_rate(settings_for("Optimizer.lr=0.002", "Global.scale_lr=true"), Role(0, 0, 4)) == 0.008
