import json

import numpy as np
import pytest

from openocr_cli.data.labels import load_labels, read_label_files
from openocr_cli.errors import UserError
from tests.conftest import label_line, write_image

QUAD = [[10, 10], [50, 10], [50, 30], [10, 30]]


def test_parses_regions_ignore_flags_and_relative_paths(tmp_path):
    write_image(tmp_path / "imgs" / "a.png")
    labels = tmp_path / "labels.txt"
    labels.write_text(label_line("imgs/a.png", [
        {"transcription": "HELLO", "points": QUAD},
        {"transcription": "###", "points": QUAD},
        {"transcription": "*", "points": [[0, 0], [5, 0], [5, 5], [2, 7], [0, 5]]},
    ]) + "\n")
    samples = load_labels([labels], tmp_path)
    assert len(samples) == 1
    s = samples[0]
    assert s.key == "imgs/a.png" and s.image == tmp_path / "imgs" / "a.png"
    assert s.ignore == [False, True, True]
    assert s.texts[0] == "HELLO"
    assert s.polys[2].shape == (5, 2) and s.polys[0].dtype == np.float32
    assert (s.source, s.line) == (str(labels), 1)


def test_empty_region_list_is_a_valid_sample(tmp_path):
    write_image(tmp_path / "a.png")
    labels = tmp_path / "l.txt"
    labels.write_text("a.png\t[]\n")
    assert load_labels([labels], tmp_path)[0].polys == []


def test_json_list_image_field_uses_first_path(tmp_path):
    write_image(tmp_path / "a.png")
    labels = tmp_path / "l.txt"
    labels.write_text(f'{json.dumps(["a.png", "b.png"])}\t[]\n')
    assert load_labels([labels], tmp_path)[0].image == tmp_path / "a.png"


@pytest.mark.parametrize("line, reason", [
    ("a.png [] ", "no TAB"),
    ("a.png\t[{\"points\": [[1, 2]", "not valid JSON"),
    ("a.png\t{\"points\": []}", "JSON list"),
    ("a.png\t[{\"transcription\": \"x\"}]", "no \"points\""),
    ("a.png\t[{\"points\": [[0, 0], [1, 1]]}]", "at least 3 points"),
    ("a.png\t[{\"points\": [[0, 0], [1, \"a\"], [2, 2]]}]", "numbers"),
    ("a.png\t[{\"points\": [[0, 0], [1], [2, 2]]}]", "[x, y] pairs"),
    ("missing.png\t[]", "does not exist"),
])
def test_malformed_lines_are_reported_with_file_and_line(tmp_path, line, reason):
    write_image(tmp_path / "a.png")
    labels = tmp_path / "l.txt"
    labels.write_text("a.png\t[]\n" + line + "\n")
    result = read_label_files([labels], tmp_path)
    assert len(result.samples) == 1
    assert len(result.problems) == 1
    assert str(result.problems[0]).startswith(f"{labels}:2: ")
    assert reason in result.problems[0].reason
    with pytest.raises(UserError, match=f"{labels}:2"):
        load_labels([labels], tmp_path)


def test_missing_label_file_and_empty_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_labels([tmp_path / "nope.txt"], tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(UserError, match="empty"):
        load_labels([empty], tmp_path)


def test_images_need_not_exist_when_not_checked(tmp_path):
    labels = tmp_path / "l.txt"
    labels.write_text(label_line("x/y.jpg", [{"transcription": "a", "points": QUAD}]))
    assert load_labels([labels], tmp_path, check_images=False)[0].key == "x/y.jpg"
