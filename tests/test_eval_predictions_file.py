"""eval --predictions reads both files predict writes (det_results.txt and --format jsonl) to the same numbers, and
says what in a predictions file it could not use: bad scores, non-UTF-8 paths, lines for images no label lists."""

import json

import pytest

from openocr_cli.errors import UserError
from openocr_cli.formats.det_results import read_predictions
from tests.test_eval_report import box, predicted  # noqa: F401  (fixture)


def flat(text: str) -> str:
    return " ".join(text.split())


def as_jsonl(txt_file, target):
    """The same predictions as `predict --format jsonl` writes them."""
    lines = []
    for raw in txt_file.read_text().splitlines():
        path, _, boxes = raw.partition("\t")
        lines.append(json.dumps({"image": path, "width": 128, "height": 96, "detections": json.loads(boxes)}))
    target.write_text("\n".join(lines) + "\n")
    return target


def test_jsonl_and_txt_predictions_score_the_same(cli, tmp_path, predicted):  # noqa: F811
    labels, preds = predicted
    metrics = {}
    for name, file in (("txt", preds), ("jsonl", as_jsonl(preds, tmp_path / "det_results.jsonl"))):
        out = tmp_path / f"{name}.json"
        code, _, err = cli("eval", "--predictions", file, "--label-file", labels, "--json", out)
        assert code == 0, err
        metrics[name] = json.loads(out.read_text())
    assert metrics["jsonl"] == metrics["txt"]
    assert (metrics["txt"]["precision"], metrics["txt"]["recall"]) == (pytest.approx(2 / 5), pytest.approx(2 / 3))


def test_an_image_the_run_could_not_read_is_not_scored_and_is_named(cli, tmp_path, predicted):  # noqa: F811
    labels, preds = predicted
    jsonl = as_jsonl(preds, tmp_path / "p.jsonl")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    records[2] = {"image": "imgs/empty.png", "width": None, "height": None, "detections": [],
                  "error": "imgs/empty.png: not an image"}
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, _, err = cli("eval", "--predictions", jsonl, "--label-file", labels, "--json", tmp_path / "m.json")
    assert code == 1 and "imgs/empty.png: the run that wrote the predictions could not read it" in flat(err)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["images"] == 2 and metrics["precision"] == pytest.approx(2 / 4)  # its false positive is gone


def test_lines_for_images_no_label_lists_are_warned_and_recorded(cli, tmp_path, predicted):  # noqa: F811
    labels, preds = predicted
    preds.write_text(preds.read_text() + "imgs/other.png\t[]\nelsewhere/b.png\t[]\n")
    code, _, err = cli("eval", "--predictions", preds, "--label-file", labels, "--json", tmp_path / "m.json")
    assert code == 0 and "2 line(s) of" in flat(err) and "are for images no label file lists" in flat(err)
    assert json.loads((tmp_path / "m.json").read_text())["predictions_without_label"] == ["imgs/other.png",
                                                                                         "elsewhere/b.png"]


@pytest.mark.parametrize("line, reason", [
    ('a.png\t[{"points": [[0, 0], [9, 0], [9, 9]], "score": "high"}]', "box 1: \"score\" must be a finite number, "
                                                                        "got 'high'"),
    ('a.png\t[{"points": [[0, 0], [9, 0], [9, 9]], "score": NaN}]', "box 1: \"score\" must be a finite number"),
    ('a.png\t[{"points": [[0, 0], [9, 0], [Infinity, 9]]}]', "box 1: \"points\" must be a list of at least 3"),
    ('{"image": "a.png", "detections": 5}', '"detections" must be a JSON list'),
    ('{"detections": []}', 'expected a JSON object with an "image" path'),
    ('a.png [{"points": [[0, 0], [9, 0], [9, 9]]}]', "no TAB"),
])
def test_a_malformed_prediction_line_is_named_with_its_reason(tmp_path, line, reason):
    jsonl = line.startswith("{")
    file = tmp_path / ("p.jsonl" if jsonl else "p.txt")
    file.write_text(('{"image": "b.png", "detections": []}' if jsonl else "b.png\t[]") + "\n" + line + "\n")
    with pytest.raises(UserError, match="1 malformed prediction line") as caught:
        read_predictions(file)
    assert f"{file}:2: {reason}" in str(caught.value)


def test_a_prediction_file_in_another_encoding_is_named(tmp_path):
    gbk = tmp_path / "p.txt"
    gbk.write_bytes("中文/图.png\t[]\n".encode("gbk"))
    with pytest.raises(UserError, match=f"{gbk}:1: the image path is not UTF-8 text"):
        read_predictions(gbk)
    utf16 = tmp_path / "q.txt"
    utf16.write_text("a.png\t[]\n", encoding="utf-16")
    with pytest.raises(UserError, match="predictions file .* is UTF-16 text"):
        read_predictions(utf16)
    bom = tmp_path / "r.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + "图/一.png\t[]\n".encode())
    assert list(read_predictions(bom).boxes) == ["图/一.png"]


def test_an_empty_predictions_file_is_refused_not_scored_as_finding_nothing(tmp_path):
    for name, text in (("p.txt", ""), ("p.jsonl", "\n\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=f"predictions file {tmp_path / name} has no lines"):
            read_predictions(tmp_path / name)


def test_convert_reads_predict_s_jsonl_with_its_scores_and_the_sizes_it_records(cli, tmp_path):
    boxes = [{"points": [[1, 1], [20, 1], [20, 9], [1, 9]], "score": 0.9},
             {"points": [[2, 12], [30, 12], [30, 20], [2, 20]], "score": 0.5}]
    jsonl = tmp_path / "det_results.jsonl"
    jsonl.write_text(json.dumps({"image": "a.png", "width": 40, "height": 30, "detections": boxes}) + "\n"
                     + json.dumps({"image": "b.png", "width": 40, "height": 30, "detections": []}) + "\n")
    out = tmp_path / "tasks.json"
    code, _, err = cli("convert", jsonl, "--from", "ppocr", "--to", "labelstudio", "--output", out)
    assert code == 0, err
    tasks = json.loads(out.read_text())
    results = [r for task in tasks for p in task.get("predictions", []) for r in p["result"]]
    assert len(tasks) == 2 and [r["score"] for r in results] == [0.9, 0.5]
    assert {(r["original_width"], r["original_height"]) for r in results} == {(40, 30)}  # no image needed
    txt = tmp_path / "det_results.txt"  # the same boxes without sizes: Label Studio needs the images
    txt.write_text("a.png\t" + json.dumps(boxes) + "\nb.png\t[]\n")
    code, _, err = cli("convert", txt, "--from", "ppocr", "--to", "labelstudio", "--output", tmp_path / "t2.json")
    assert code == 1 and "its size is unknown" in flat(err)
    code, _, err = cli("convert", jsonl, "--from", "ppocr", "--to", "ppocr", "--output", tmp_path / "labels.txt")
    assert code == 0 and (tmp_path / "labels.txt").read_text().splitlines()[1] == "b.png\t[]"


def test_convert_names_an_image_predict_could_not_read_and_skips_it_on_request(cli, tmp_path):
    jsonl = tmp_path / "det_results.jsonl"
    jsonl.write_text(json.dumps({"image": "a.png", "width": 40, "height": 30, "detections": [
        {"points": [[1, 1], [20, 1], [20, 9], [1, 9]], "score": 0.9}]}) + "\n"
        + json.dumps({"image": "b.png", "width": None, "height": None, "detections": [],
                      "error": "b.png: not an image"}) + "\n")
    code, _, err = cli("convert", jsonl, "--from", "ppocr", "--to", "ppocr", "--output", tmp_path / "out.txt")
    assert code == 1 and f"{jsonl}:2: predict could not read this image (b.png: not an image)" in flat(err)
    code, _, err = cli("convert", jsonl, "--from", "ppocr", "--to", "ppocr", "--output", tmp_path / "out.txt",
                       "--skip-bad")
    assert code == 0 and (tmp_path / "out.txt").read_text().startswith("a.png\t")
