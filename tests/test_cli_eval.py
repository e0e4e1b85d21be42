import json

import pytest

from tests.conftest import label_line, write_image


def full(w, h):
    return [[0, 0], [w, 0], [w, h], [0, h]]


@pytest.fixture
def labelled(tmp_path):
    """Two images; each has one care region covering the whole image and one '###' region."""
    data = tmp_path / "data"
    write_image(data / "imgs" / "a.png", 96, 128)
    write_image(data / "imgs" / "b.png", 64, 100)
    labels = data / "test_label.txt"
    labels.write_text(
        label_line("imgs/a.png", [{"transcription": "A", "points": full(128, 96)},
                                  {"transcription": "###", "points": [[0, 0], [10, 0], [10, 10], [0, 10]]}])
        + label_line("imgs/b.png", [{"transcription": "B", "points": full(100, 64)}])
    )
    return data, labels


def test_eval_model_scores_and_writes_json(cli, tmp_path, labelled, constant_ckpt):
    data, labels = labelled
    out_json = tmp_path / "m.json"
    code, out, err = cli("eval", "-w", constant_ckpt, "--data-dir", data, "--label-file", labels,
                         "--device", "cpu", "--json", out_json)
    assert code == 0, err
    metrics = json.loads(out_json.read_text())
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0 and metrics["hmean"] == 1.0
    assert metrics["images"] == 2 and metrics["fps"] > 0
    assert "hmean" in out and "FPS" in out


def test_eval_several_label_files_and_thresholds(cli, tmp_path, labelled, constant_ckpt):
    data, labels = labelled
    extra = data / "extra.txt"
    write_image(data / "c.png", 50, 80)
    extra.write_text(label_line("c.png", [{"transcription": "x", "points": [[0, 0], [8, 0], [8, 8], [0, 8]]}]))
    out_json = tmp_path / "m.json"
    code, _, err = cli("eval", "-w", constant_ckpt, "--data-dir", data, "--label-file", labels,
                       "--label-file", extra, "--device", "cpu", "--json", out_json)
    assert code == 0, err
    m = json.loads(out_json.read_text())
    # c.png: the full-image detection does not match the small GT -> 2 of 3 matched both ways
    assert m["images"] == 3 and m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    code, _, err = cli("eval", "-w", constant_ckpt, "--data-dir", data, "--label-file", labels,
                       "--device", "cpu", "--json", out_json, "--box-thresh", "0.95")
    m = json.loads(out_json.read_text())
    assert code == 0 and m["precision"] == 0 and m["recall"] == 0 and m["hmean"] == 0


def test_eval_predictions_file_without_images(cli, tmp_path):
    labels = tmp_path / "gt.txt"
    labels.write_text(
        label_line("ch4/img_1.jpg", [{"transcription": "A", "points": [[0, 0], [10, 0], [10, 10], [0, 10]]},
                                     {"transcription": "B", "points": [[20, 0], [30, 0], [30, 10], [20, 10]]}])
        + label_line("ch4/img_2.jpg", [{"transcription": "###", "points": [[0, 0], [50, 0], [50, 50], [0, 50]]},
                                       {"transcription": "C", "points": [[60, 60], [70, 60], [70, 70], [60, 70]]}])
    )
    preds = tmp_path / "det_results.txt"
    preds.write_text(
        "some/root/ch4/img_1.jpg\t" + json.dumps([
            {"points": [[0, 0], [10, 0], [10, 10], [0, 10]], "score": 0.9},  # match A
            {"points": [[100, 100], [110, 100], [110, 110], [100, 110]], "score": 0.8},  # false positive
        ]) + "\n"
        + "some/root/ch4/img_2.jpg\t" + json.dumps([
            {"points": [[5, 5], [20, 5], [20, 20], [5, 20]]},  # inside ### -> don't care
        ]) + "\n"
    )
    out_json = tmp_path / "m.json"
    code, out, err = cli("eval", "--predictions", preds, "--label-file", labels, "--data-dir", tmp_path / "nowhere",
                         "--json", out_json)
    assert code == 0, err
    m = json.loads(out_json.read_text())
    # matched 1; care GT = 2 + 1 = 3; care detections = 2 (the ### one is ignored)
    assert m["recall"] == pytest.approx(1 / 3) and m["precision"] == pytest.approx(1 / 2)
    assert m["hmean"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert "fps" not in m


def test_eval_predictions_missing_line_is_warned(cli, tmp_path):
    labels = tmp_path / "gt.txt"
    labels.write_text(label_line("a.jpg", [{"transcription": "A", "points": [[0, 0], [9, 0], [9, 9], [0, 9]]}]))
    preds = tmp_path / "p.txt"
    preds.write_text("b.jpg\t[]\n")
    code, out, err = cli("eval", "--predictions", preds, "--label-file", labels, "--json", tmp_path / "m.json")
    assert code == 0
    assert "no line in" in " ".join(err.split())
    assert json.loads((tmp_path / "m.json").read_text())["images_without_prediction"] == ["a.jpg"]


@pytest.mark.parametrize("content, where", [
    ("a.jpg [{\"points\": [[0,0],[1,0],[1,1]]}]\n", ":1: no TAB"),
    ("a.jpg\t[]\nb.jpg\t[{\"points\": [[0, 0], [1, 1]]}]\n", ":2: region 1: a polygon needs at least 3 points"),
    ("a.jpg\t[{oops}]\n", ":1: annotation is not valid JSON"),
])
def test_malformed_label_lines_name_file_and_line(cli, tmp_path, content, where):
    labels = tmp_path / "gt.txt"
    labels.write_text(content)
    preds = tmp_path / "p.txt"
    preds.write_text("a.jpg\t[]\n")
    code, out, err = cli("eval", "--predictions", preds, "--label-file", labels)
    assert code == 1
    assert f"{labels}{where}" in " ".join(err.split())
    assert "Traceback" not in err


def test_malformed_prediction_line(cli, tmp_path):
    labels = tmp_path / "gt.txt"
    labels.write_text("a.jpg\t[]\n")
    preds = tmp_path / "p.txt"
    preds.write_text("a.jpg\t[{\"points\": 5}]\n")
    code, _, err = cli("eval", "--predictions", preds, "--label-file", labels)
    assert code == 1 and f"{preds}:1" in " ".join(err.split())


def test_eval_missing_images_and_label_file(cli, tmp_path, constant_ckpt):
    labels = tmp_path / "gt.txt"
    labels.write_text("nope.png\t[]\n")
    code, _, err = cli("eval", "-w", constant_ckpt, "--label-file", labels, "--data-dir", tmp_path, "--device", "cpu")
    assert code == 1 and "does not exist" in err
    code, _, err = cli("eval", "-w", constant_ckpt, "--label-file", tmp_path / "missing.txt", "--device", "cpu")
    assert code == 1 and "does not exist" in err


def test_eval_corrupt_image_reported(cli, tmp_path, labelled, constant_ckpt):
    data, labels = labelled
    (data / "imgs" / "b.png").write_bytes(b"garbage")
    code, out, err = cli("eval", "-w", constant_ckpt, "--data-dir", data, "--label-file", labels, "--device", "cpu")
    assert code == 1 and "b.png" in err and "not scored" in " ".join(err.split())
    assert "hmean" in out


def test_predictions_are_bucketed_at_the_resize_that_made_them(cli, tmp_path, constant_ckpt):
    """predict --limit-side-len 64 on a 128 px wide image halves it: a 40 px line is 20 px to the model."""
    import json as _json

    from tests.conftest import write_image

    data = tmp_path / "data"
    write_image(data / "a.png", 96, 128)
    labels = tmp_path / "gt.txt"
    labels.write_text("a.png\t" + _json.dumps([{"transcription": "x", "points": [[4, 4], [120, 4], [120, 44],
                                                                                 [4, 44]]}]) + "\n")
    out = tmp_path / "pred"
    code, _, err = cli("predict", data, "-w", constant_ckpt, "--device", "cpu", "--limit-side-len", "64",
                       "--output", out, "--no-vis")
    assert code == 0, err
    metrics = tmp_path / "m.json"
    code, _, err = cli("eval", "--predictions", out / "det_results.txt", "--label-file", labels, "--data-dir", data,
                       "--json", metrics)
    assert code == 0, err
    assert "at the resize that made the predictions" in " ".join(err.split())
    buckets = _json.loads(metrics.read_text())["by_height"]
    assert buckets["16-32"]["gt"] == 1 and buckets["32+"]["gt"] == 0
    (out / "run.json").unlink()  # no record: the config's resize (960 keeps it at 40 px)
    code, _, err = cli("eval", "--predictions", out / "det_results.txt", "--label-file", labels, "--data-dir", data,
                       "--json", metrics)
    assert code == 0, err
    buckets = _json.loads(metrics.read_text())["by_height"]
    assert buckets["32+"]["gt"] == 1
