"""A wrong or missing --data-dir is one message naming the folder, where it came from and --data-dir;
and the test suite reads nothing outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from openocr_cli.data.labels import check_data_dir
from openocr_cli.errors import UserError
from tests.conftest import REPO, label_line, write_image

BOX = [{"transcription": "a", "points": [[2, 2], [30, 2], [30, 12], [2, 12]]}]


@pytest.fixture
def labelled(tmp_path) -> Path:
    """tmp/data/test/{0..3}.png and tmp/data/test_label.txt listing them relative to tmp/data."""
    root = tmp_path / "data"
    lines = []
    for n in range(4):
        write_image(root / "test" / f"{n}.png", 32, 48, n)
        lines.append(label_line(f"test/{n}.png", BOX))
    (root / "test_label.txt").write_text("".join(lines))
    return root


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command", [["eval", "-w", "CKPT", "--device", "cpu"], ["check-data", "--crops", "0"]])
def test_config_default_data_dir_is_named_with_the_fix(cli, labelled, constant_ckpt, monkeypatch, command):
    monkeypatch.chdir(labelled)  # the README's pattern: labels next to the images, no --data-dir
    args = [str(constant_ckpt) if a == "CKPT" else a for a in command]
    code, _, err = cli(*args, "--label-file", "test_label.txt")
    err = one_line(err)
    section = "Eval" if command[0] == "eval" else "Train"
    assert code == 1
    assert (f"the data dir icdar2015/text_localization (the config's default, {section}.dataset.data_dir) "
            "does not exist, so no image of test_label.txt is found") in err
    assert "with --data-dir (e.g. --data-dir .)" in err
    assert "malformed" not in err and "Traceback" not in err
    assert err.count(".png") == 1  # one message naming one image, not one line per image


def test_most_images_missing_under_the_flag(cli, labelled, constant_ckpt, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_image(elsewhere / "test" / "0.png", 32, 48, 0)  # 1 of 4 is there
    code, _, err = cli("eval", "-w", constant_ckpt, "--device", "cpu", "--data-dir", elsewhere,
                       "--label-file", labelled / "test_label.txt")
    err = one_line(err)
    assert code == 1
    assert f"3 of the 4 images of test_label.txt are not under the data dir {elsewhere} (from --data-dir)" in err
    assert f"(e.g. --data-dir {labelled})" in err  # the folder that holds the label file does have them
    assert "malformed" not in err


def test_a_few_missing_images_stay_line_problems(labelled):
    (labelled / "test" / "3.png").unlink()
    check_data_dir([labelled / "test_label.txt"], labelled, "from --data-dir")  # 1 of 4: the per-line report's job


def test_missing_folder_and_no_guess(tmp_path, labelled):
    with pytest.raises(UserError) as info:
        check_data_dir([labelled / "test_label.txt"], tmp_path / "nodir", "from --data-dir")
    message = one_line(str(info.value))
    assert f"the data dir {tmp_path / 'nodir'} (from --data-dir) does not exist" in message
    (labelled / "test_label.txt").write_text(label_line("nowhere/x.png", BOX))
    with pytest.raises(UserError, match="with --data-dir DIR"):
        check_data_dir([labelled / "test_label.txt"], labelled, "from --data-dir")


def test_train_refuses_a_wrong_data_dir_before_checking_the_data(cli, labelled, tmp_path):
    code, _, err = cli("train", "--data-dir", tmp_path, "--train-label", labelled / "test_label.txt",
                       "--eval-label", labelled / "test_label.txt", "--weights", "none", "--device", "cpu",
                       "--epochs", "1", "--output", tmp_path / "run")
    err = one_line(err)
    assert code == 1 and f"no image of test_label.txt is under the data dir {tmp_path} (from --data-dir)" in err
    assert f"--data-dir {labelled}" in err and not (tmp_path / "run" / "latest.pth").exists()


def test_no_test_reads_outside_the_repository():
    """A plain clone has no sibling folders: tests use only what the repository holds."""
    outside = re.compile(r"""\.\./shared|/work/shared|REPO\.parent|parents\[[2-9]\]|parent\s*/\s*["']shared""")
    offenders = [f"{path.name}:{n}" for path in sorted((REPO / "tests").rglob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if outside.search(line) and path.name != Path(__file__).name]
    assert offenders == []
