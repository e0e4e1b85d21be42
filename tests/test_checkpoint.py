import os
import pickle
import random
from collections import OrderedDict

import pytest
import torch
from torch import nn

from openocr_cli.checkpoint import extract_state_dict, load_weights, read_checkpoint, save_checkpoint
from openocr_cli.cli import ui
from openocr_cli.errors import UserError
from tests.conftest import run_cli, write_image


@pytest.fixture
def cli_display():
    """What the command line sets up at start-up: the library's log records (the mismatch tables) on stderr."""
    before, level = list(ui.library_logger.handlers), ui.library_logger.level
    ui.install_console_logging()
    yield
    ui.library_logger.handlers[:] = before
    ui.library_logger.setLevel(level)


def tiny() -> nn.Module:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), bn=nn.BatchNorm2d(4)))


def filled(model: nn.Module, value: float) -> dict:
    return {k: torch.full_like(v, value) if v.is_floating_point() else v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("layout", ["bare", "openocr", "ddp"])
def test_loads_bare_wrapped_and_ddp_checkpoints(tmp_path, layout):
    weights = filled(tiny(), 0.5)
    if layout == "openocr":
        obj = {"epoch": 3, "global_step": 9, "state_dict": weights, "optimizer": None, "scheduler": None,
               "config": {"Global": {"epoch_num": 5}}, "metrics": {"hmean": 0.5}}
    elif layout == "ddp":
        obj = {"state_dict": {f"module.{k}": v for k, v in weights.items()}}
    else:
        obj = weights
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    model = tiny()
    report = load_weights(model, path)
    assert report.ok and report.loaded == 7
    assert torch.all(model.conv.weight == 0.5)


def test_strict_mismatch_prints_table_and_raises(tmp_path, capsys, cli_display):
    weights = filled(tiny(), 1.0)
    weights["conv.weight"] = torch.zeros(8, 3, 3, 3)
    del weights["bn.bias"]
    weights["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pth"
    torch.save(weights, path)
    with pytest.raises(UserError, match="1 missing, 1 unexpected and 1 wrong-shape") as info:
        load_weights(tiny(), path)
    assert "--non-strict" in str(info.value)
    err = capsys.readouterr().err
    assert "bn.bias" in err and "extra.weight" in err and "conv.weight" in err


def test_non_strict_loads_what_matches(tmp_path):
    weights = filled(tiny(), 2.0)
    weights["conv.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "w.pth"
    torch.save(weights, path)
    model = tiny()
    before = model.conv.weight.clone()
    report = load_weights(model, path, strict=False)
    assert not report.ok and report.loaded == 6 and report.wrong_shape[0][0] == "conv.weight"
    assert torch.equal(model.conv.weight, before)
    assert torch.all(model.bn.weight == 2.0)


def test_wrong_architecture_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(UserError, match="none of its keys match"):
        load_weights(tiny(), path, strict=False)


def test_same_names_other_shapes_and_non_finite_weights_are_named(tmp_path):
    shapes = tmp_path / "wide.pth"
    torch.save({k: torch.zeros(*(d + 1 for d in v.shape)) if v.ndim else torch.zeros(1)
                for k, v in tiny().state_dict().items()}, shapes)
    with pytest.raises(UserError, match="tensors have the model's names but other shapes"):
        load_weights(tiny(), shapes, strict=False)
    state = tiny().state_dict()
    state["conv.weight"] = torch.full_like(state["conv.weight"], float("nan"))
    torch.save(state, tmp_path / "diverged.pth")
    with pytest.raises(UserError, match=r"not finite \(NaN or inf\) in 1 tensor\(s\), the first conv.weight"):
        load_weights(tiny(), tmp_path / "diverged.pth")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _Payload(marker)}, path)
    with pytest.raises(UserError, match="refused"):
        read_checkpoint(path)
    assert not marker.exists()


def test_unreadable_inputs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_checkpoint(tmp_path / "none.pth")
    with pytest.raises(UserError, match="is a folder"):
        read_checkpoint(tmp_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(junk)
    with pytest.raises(UserError, match="no model weights"):
        extract_state_dict({"epoch": 1}, "x.pth")


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "latest.pth"
    save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)

    def crash(obj, f):
        f.write(b"partial garbage")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    restored = torch.load(path, weights_only=True)
    assert restored["epoch"] == 1 and torch.equal(restored["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pth"]


def test_strict_mismatch_is_logged_with_its_table(tmp_path, caplog):
    """A Python caller gets the keys as a warning record (plain lines), the CLI its "table"."""
    weights = filled(tiny(), 1.0)
    del weights["bn.bias"]
    path = tmp_path / "w.pth"
    torch.save(weights, path)
    with pytest.raises(UserError, match="1 missing"):
        load_weights(tiny(), path)
    [record] = [r for r in caplog.records if r.name == "openocr_cli.checkpoint"]
    assert record.levelname == "WARNING" and "missing from file: bn.bias" in record.getMessage()
    title, columns, rows = record.table
    assert title == f"{path}: keys that do not match the model" and columns == ["problem", "key", "shapes"]
    assert rows == [("missing from file", "bn.bias", "")]


NOT_CHECKPOINTS = {
    "random.pth": (random.Random(0).randbytes(4096),
                   "it is neither a zip archive nor a pickle, the two forms torch.save writes"),
    "notes.txt": ("weights: see the release page\nünï\n".encode(), "it is a text file"),
    "empty.pth": (b"", "the file is empty"),
    "plain.pkl": (pickle.dumps({"w": [1.0, 2.0]}, protocol=4), "it is a Python pickle that torch.save did not write"),
}


@pytest.mark.parametrize("name", sorted(NOT_CHECKPOINTS))
def test_files_that_are_no_checkpoint_at_all_are_named_so(tmp_path, name):
    data, what = NOT_CHECKPOINTS[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        read_checkpoint(path)
    assert str(info.value) == (f"{path} is not a readable PyTorch checkpoint ({what}): pass a .pth file saved by "
                               "OpenOCR or openocr-det training.")


def test_legacy_torch_save_files_still_load(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.ones(2))


def test_cli_predict_names_a_non_checkpoint_and_refuses_arbitrary_objects(tmp_path, image_dir, cli):
    random_jpg = tmp_path / "random_bytes.jpg"
    random_jpg.write_bytes(random.Random(1).randbytes(10_000))
    proc = run_cli("predict", str(image_dir), "-w", str(random_jpg), "--device", "cpu", "--output", str(tmp_path / "o"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    text = " ".join(proc.stderr.split())
    assert (f"error: {random_jpg} is not a readable PyTorch checkpoint (it is neither a zip archive nor a pickle, "
            "the two forms torch.save writes): pass a .pth file saved by OpenOCR or openocr-det training.") in text
    assert "arbitrary Python objects" not in text

    photo = write_image(tmp_path / "photo.jpg")
    code, _, err = cli("predict", image_dir, "-w", photo, "--device", "cpu", "--output", tmp_path / "o")
    assert code == 1 and "Traceback" not in err
    assert f"{photo} is not a readable PyTorch checkpoint (it is a JPEG image)" in " ".join(err.split())

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": _Payload(marker)}, evil)
    proc = run_cli("predict", str(image_dir), "-w", str(evil), "--device", "cpu", "--output", str(tmp_path / "o"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    text = " ".join(proc.stderr.split())
    assert f"error: {evil} needs arbitrary Python objects to load, so it was refused" in text
    assert not marker.exists() and not (tmp_path / "o").exists()
