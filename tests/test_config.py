import pytest

from openocr_cli import config as cfgmod
from openocr_cli.errors import UserError


def test_packaged_config_has_openocr_values():
    cfg = cfgmod.load_config()
    assert cfg["Architecture"]["Backbone"]["name"] == "RepSVTR_det"
    assert cfg["Architecture"]["Neck"] == {"name": "RSEFPN", "out_channels": 96, "shortcut": True}
    assert cfgmod.postprocess_params(cfg) == {"thresh": 0.3, "box_thresh": 0.6, "max_candidates": 1000,
                                              "unclip_ratio": 1.5, "score_mode": "slow", "box_type": "quad"}
    assert cfgmod.resize_params(cfg) == {"limit_side_len": 960, "limit_type": "max"}
    assert cfgmod.normalize_params(cfg)["mean"] == [0.485, 0.456, 0.406]
    assert cfg["filename"] == "repvit_db"


def test_overrides_parse_yaml_values_and_merge():
    cfg = cfgmod.apply_overrides(cfgmod.load_config(), [
        "Global.epoch_num=10", "PostProcess.box_thresh=0.5", "Global.eval_batch_step=[1, 2]",
        "Eval.dataset.label_file_list.0=x.txt", "Architecture.Head={k: 30}", "Global.checkpoints=",
    ])
    assert cfg["Global"]["epoch_num"] == 10
    assert cfg["PostProcess"]["box_thresh"] == 0.5
    assert cfg["Global"]["eval_batch_step"] == [1, 2]
    assert cfg["Eval"]["dataset"]["label_file_list"] == ["x.txt"]
    assert cfg["Architecture"]["Head"] == {"name": "DBHead", "k": 30}
    assert cfg["Global"]["checkpoints"] is None


def test_overrides_do_not_mutate_input():
    base = cfgmod.load_config()
    cfgmod.apply_overrides(base, ["Global.epoch_num=3"])
    assert base["Global"]["epoch_num"] == 500


@pytest.mark.parametrize("bad", ["Global.epoch_num", "=3", "Global..x=1", "Eval.dataset.label_file_list.5=a"])
def test_bad_overrides_are_usage_errors(bad):
    with pytest.raises(UserError) as info:
        cfgmod.apply_overrides(cfgmod.load_config(), [bad])
    assert info.value.exit_code == 2


def test_yaml_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("Global:\n  a: 1\n b: [\n")
    with pytest.raises(UserError, match=r"bad\.yml:\d+"):
        cfgmod.load_config(bad)
    with pytest.raises(UserError, match="does not exist"):
        cfgmod.load_config(tmp_path / "missing.yml")
    scalar = tmp_path / "scalar.yml"
    scalar.write_text("42\n")
    with pytest.raises(UserError, match="mapping"):
        cfgmod.load_config(scalar)
