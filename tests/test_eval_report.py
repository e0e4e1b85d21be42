"""eval --report (errors.json agrees with P/R exactly), recall by text height, --sizes, --postprocess layers."""

import json

import pytest

from openocr_cli.errors import UserError
from openocr_cli.inference import postprocess_sources as ppfile
from tests.conftest import label_line, make_constant_checkpoint, write_image


def box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


@pytest.fixture
def predicted(tmp_path):
    """Labels and a det_results.txt with matches, false positives, misses, ### and an invalid GT."""
    write_image(tmp_path / "imgs" / "a.png", 96, 128)
    labels = tmp_path / "gt.txt"
    labels.write_text(
        label_line("imgs/a.png", [{"transcription": "A", "points": box(0, 0, 40, 20)},
                                  {"transcription": "B", "points": box(50, 0, 90, 20)},
                                  {"transcription": "###", "points": box(0, 50, 60, 90)}])
        + label_line("imgs/x <&> y.png", [{"transcription": "C", "points": box(10, 10, 30, 30)},
                                          {"transcription": "D", "points": [[0, 0], [9, 9], [9, 0], [0, 9]]}])
        + label_line("imgs/empty.png", []))
    preds = tmp_path / "det_results.txt"
    preds.write_text(
        "imgs/a.png\t" + json.dumps([{"points": box(1, 0, 40, 20)}, {"points": box(100, 60, 120, 80)},
                                      {"points": box(5, 55, 50, 85)}]) + "\n"
        + "imgs/x <&> y.png\t" + json.dumps([{"points": box(10, 10, 30, 29)}, {"points": box(60, 60, 70, 70)}]) + "\n"
        + "imgs/empty.png\t" + json.dumps([{"points": box(1, 1, 20, 20)}]) + "\n")
    return labels, preds


def test_report_from_predictions_matches_the_metric(cli, tmp_path, predicted):
    labels, preds = predicted
    report, out_json = tmp_path / "rep", tmp_path / "m.json"
    code, out, err = cli("eval", "--predictions", preds, "--label-file", labels, "--data-dir", tmp_path,
                         "--report", report, "--json", out_json)
    assert code == 0, err
    m = json.loads(out_json.read_text())
    errors = json.loads((report / "errors.json").read_text())
    tp, fp, fn = (sum(e[k] for e in errors) for k in ("tp", "fp", "fn"))
    assert (tp, fp, fn) == (2, 3, 1)
    assert tp / (tp + fp) == m["precision"] and tp / (tp + fn) == m["recall"]
    # worst first; the ### region is "ignored", the detection inside it is not a false positive
    assert [e["image"] for e in errors] == ["imgs/a.png", "imgs/x <&> y.png", "imgs/empty.png"]
    a = errors[0]
    assert (a["tp"], a["fp"], a["fn"], a["ignored"], a["ignored_detections"]) == (1, 1, 1, 1, 1)
    assert a["false_positives"] == [box(100, 60, 120, 80)] and a["missed"] == [box(50, 0, 90, 20)]
    assert errors[1]["fn"] == 0 and errors[1]["tp"] == 1  # the self-intersecting GT is not counted
    page = (report / "index.html").read_text()
    assert "x &lt;&amp;&gt; y.png" in page and "<script" not in page and "http" not in page
    drawn = sorted(p.name for p in (report / "images").glob("*.jpg"))
    assert len(drawn) == 3 and len(list((report / "images" / "thumbs").glob("*.jpg"))) == 3
    assert all(f'src="images/thumbs/{name}"' in page for name in drawn)
    assert "image not found" in page  # x <&> y.png does not exist: drawn on a blank canvas
    assert "by_height" not in m  # no images, no sizes


def test_by_height_sums_to_the_true_positives_and_warns_about_tiny_text(cli, tmp_path, constant_ckpt):
    data = tmp_path / "data"
    write_image(data / "a.png", 96, 128)
    write_image(data / "b.png", 64, 100, 1)
    labels = data / "gt.txt"
    labels.write_text(
        label_line("a.png", [{"transcription": "A", "points": box(0, 0, 128, 96)},  # 96 px: matched
                             {"transcription": "###", "points": box(0, 0, 5, 5)}])
        + label_line("b.png", [{"transcription": "B", "points": box(0, 0, 100, 64)},  # 64 px: matched
                               {"transcription": "b", "points": box(10, 10, 40, 15)},  # 5 px
                               {"transcription": "c", "points": box(10, 20, 40, 32)}]))  # 12 px
    out_json = tmp_path / "m.json"
    code, out, err = cli("eval", "-w", constant_ckpt, "--data-dir", data, "--label-file", labels, "--device", "cpu",
                         "--json", out_json)
    assert code == 0, err
    m = json.loads(out_json.read_text())
    got = {k: (v["gt"], v["matched"]) for k, v in m["by_height"].items()}
    assert got == {"0-8": (1, 0), "8-16": (1, 0), "16-32": (0, 0), "32+": (2, 2)}
    assert sum(v["matched"] for v in m["by_height"].values()) == round(m["recall"] * 4) == 2
    assert m["by_height"]["32+"]["recall"] == 1.0
    assert "recall by text height" in out and "--limit-side-len" in " ".join(err.split())


def test_sizes_rows_equal_separate_evals(cli, tmp_path, constant_ckpt):
    data = tmp_path / "data"
    write_image(data / "a.png", 96, 160)
    labels = data / "gt.txt"
    labels.write_text(label_line("a.png", [{"transcription": "A", "points": box(0, 0, 160, 96)},
                                           {"transcription": "B", "points": box(0, 0, 30, 10)}]))
    common = ["eval", "-w", constant_ckpt, "--data-dir", data, "--label-file", labels, "--device", "cpu"]
    swept = tmp_path / "sizes.json"
    code, out, err = cli(*common, "--sizes", "64, 128", "--json", swept)
    assert code == 0, err
    rows = json.loads(swept.read_text())["sizes"]
    assert [r["limit_side_len"] for r in rows] == [64, 128]
    for row in rows:
        single = tmp_path / f"{row['limit_side_len']}.json"
        code, _, err = cli(*common, "--limit-side-len", str(row["limit_side_len"]), "--json", single)
        assert code == 0, err
        m = json.loads(single.read_text())
        assert (row["precision"], row["recall"], row["hmean"]) == (m["precision"], m["recall"], m["hmean"])
        assert row["fps"] > 0
    assert "limit_side_len" in out and "identical rows" not in err
    code, _, err = cli(*common, "--sizes", "320,640,64")  # 96x160: neither 320 nor 640 scales it
    assert code == 0, err
    assert ("limit_side_len 320, 640 give identical rows: every image reaches the model at the same size "
            "(limit_type max only scales an image down, and no image is longer than 320 px on its longer side)"
            ) in " ".join(err.split())
    code, _, err = cli(*common, "--sizes", "64,abc")
    assert code == 2 and "abc" in err


def test_postprocess_file_forms_and_errors(tmp_path):
    tuned = tmp_path / "t.json"
    tuned.write_text(json.dumps({"precision": 0.5, "tuned": {"thresh": 0.25, "box_thresh": 0.5, "unclip_ratio": 1.8,
                                                             "hmean": 0.7}}))
    assert ppfile.read_postprocess_file(tuned) == {"thresh": 0.25, "box_thresh": 0.5, "unclip_ratio": 1.8}
    flat = tmp_path / "f.json"
    flat.write_text('{"box_thresh": 0.4}')
    assert ppfile.read_postprocess_file(flat) == {"box_thresh": 0.4}
    for content, message in (('{"thresh": 1.5}', "between 0 and 1"), ('{"unclip_ratio": 0}', "above 0"),
                             ('{"precision": 1}', "no post-processing values"), ("{oops", ":1: not valid JSON"),
                             ('{"tuned": {"thresh": true}}', "must be a number")):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(UserError) as info:
            ppfile.read_postprocess_file(bad)
        assert str(bad) in str(info.value) and message in str(info.value)
    with pytest.raises(UserError, match="does not exist"):
        ppfile.read_postprocess_file(tmp_path / "nope.json")


def test_layer_order_config_model_file_override_flag():
    cfg = {"PostProcess": {"thresh": 0.3, "box_thresh": 0.6, "unclip_ratio": 1.5, "box_type": "quad"}}
    model = ("metadata", {"thresh": 0.31, "box_thresh": 0.61, "unclip_ratio": 1.51})
    file = ("file", {"box_thresh": 0.62, "unclip_ratio": 1.52})
    cfg_o = {"PostProcess": {**cfg["PostProcess"], "unclip_ratio": 1.53}}
    params, sources = ppfile.layered_params(cfg_o, ["PostProcess.unclip_ratio=1.53"], [model, file],
                                            {"thresh": None, "box_type": "poly"})
    assert (params["thresh"], params["box_thresh"], params["unclip_ratio"]) == (0.31, 0.62, 1.53)
    # sources now cover every post-processing key (the resolver records all of them), not only the tunable three
    assert {k: sources[k] for k in ppfile.TUNABLE} == {"thresh": "metadata", "box_thresh": "file", "unclip_ratio": "-o"}
    assert params["box_type"] == "poly" and sources["box_type"] == "flag" and sources["max_candidates"] == "default"
    params, sources = ppfile.layered_params(cfg, [], [model, file], {"box_thresh": 0.7})
    assert params["box_thresh"] == 0.7 and sources["box_thresh"] == "flag"
    assert ppfile.from_metadata({"postprocess": '{"thresh": 0.2, "box_thresh": 7, "max_candidates": 9}'}) == \
        {"thresh": 0.2}
    assert ppfile.from_metadata({"postprocess": "not json"}) == {}
    assert ppfile.from_saved_config({"PostProcess": {"unclip_ratio": 2.0}}) == {"unclip_ratio": 2.0}


def test_checkpoint_and_flags_and_file_reach_predict(cli, tmp_path):
    """A checkpoint's saved PostProcess is used; --postprocess beats it; a flag beats both."""
    import torch

    ckpt = make_constant_checkpoint(tmp_path / "c.pth", prob=0.9)
    state = torch.load(ckpt, weights_only=True)
    state["config"] = {"PostProcess": {"box_thresh": 0.95}}  # above the map's 0.9: no box
    torch.save(state, ckpt)
    write_image(tmp_path / "imgs" / "a.png", 64, 64)
    out = tmp_path / "out"

    def boxes(*extra):
        code, _, err = cli("predict", tmp_path / "imgs", "-w", ckpt, "--device", "cpu", "--output", out, "--no-vis",
                           *extra)
        assert code == 0, err
        return len(json.loads((out / "det_results.txt").read_text().split("\t")[1])), err

    count, err = boxes()
    assert count == 0 and "from the checkpoint's saved config" in " ".join(err.split())
    flat = tmp_path / "pp.json"
    flat.write_text('{"box_thresh": 0.5}')
    assert boxes("--postprocess", flat)[0] == 1
    assert boxes("--postprocess", flat, "--box-thresh", "0.95")[0] == 0
    assert boxes("-o", "PostProcess.box_thresh=0.5")[0] == 1
