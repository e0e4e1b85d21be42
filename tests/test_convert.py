"""`openocr-det convert`: every reader and writer on small hand-written fixtures, round trips, errors, split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from shapely.geometry import Polygon

from tests.conftest import label_line, write_image

QUAD = [[10, 20], [60, 20], [60, 40], [10, 40]]
FLOAT_QUAD = [[1.5, 2.25], [30.5, 2.0], [30.0, 12.75], [1.0, 12.5]]
CURVE = [[5, 50], [20, 45], [40, 44], [60, 46], [60, 60], [40, 58], [20, 59], [5, 64]]


def regions_of(label_file: Path) -> dict[str, list[str]]:
    """image -> its regions as canonical JSON strings, sorted (order within an image may differ)."""
    out = {}
    for line in label_file.read_text(encoding="utf-8").splitlines():
        image, annotation = line.split("\t")
        out[image] = sorted(json.dumps(r, sort_keys=True) for r in json.loads(annotation))
    return out


def convert(cli, *args):
    code, out, err = cli("convert", *map(str, args))
    return code, out, err


@pytest.fixture
def quads_ppocr(tmp_path) -> Path:
    """Quads only (icdar2015 can hold them): ints, floats, a comma transcription, '###', '*', a background image."""
    file = tmp_path / "src" / "label.txt"
    file.parent.mkdir()
    file.write_text(
        label_line("a.jpg", [{"transcription": "Hello, world", "points": QUAD},
                             {"transcription": "###", "points": [[0, 0], [5, 0], [5, 5], [0, 5]]},
                             {"transcription": "ünï", "points": FLOAT_QUAD}])
        + label_line("b.jpg", [])
        + label_line("c.jpg", [{"transcription": "*", "points": QUAD}]), encoding="utf-8")
    return file


@pytest.fixture
def poly_ppocr(tmp_path) -> Path:
    file = tmp_path / "src" / "poly.txt"
    file.parent.mkdir(exist_ok=True)
    file.write_text(label_line("imgs/p.jpg", [{"transcription": "curved", "points": CURVE},
                                              {"transcription": "###", "points": QUAD}])
                    + label_line("imgs/q.jpg", [{"transcription": "tri", "points": [[0, 0], [9, 0], [4.5, 7]]}]),
                    encoding="utf-8")
    return file


@pytest.mark.parametrize("fmt", ["icdar2015", "labelme", "coco"])
def test_round_trip_through_every_writable_format(cli, tmp_path, quads_ppocr, fmt):
    mid, back = tmp_path / f"mid_{fmt}", tmp_path / "back.txt"
    assert convert(cli, quads_ppocr, "--from", "ppocr", "--to", fmt, "--output", mid)[0] == 0
    code, out, err = convert(cli, mid, "--from", fmt, "--to", "ppocr", "--output", back)
    assert code == 0, err
    assert regions_of(back) == regions_of(quads_ppocr)
    assert "1.5" in back.read_text() and "[10, 20]" in back.read_text()  # floats stay floats, ints stay ints
    assert "images" in out and "ignored regions" in out


@pytest.mark.parametrize("fmt", ["labelme", "coco"])
def test_polygons_round_trip_with_their_point_count_and_order(cli, tmp_path, poly_ppocr, fmt):
    mid, back = tmp_path / "mid", tmp_path / "back.txt"
    assert convert(cli, poly_ppocr, "--from", "ppocr", "--to", fmt, "--output", mid)[0] == 0
    assert convert(cli, mid, "--from", fmt, "--to", "ppocr", "--output", back)[0] == 0
    assert regions_of(back) == regions_of(poly_ppocr)


def test_icdar2015_reader_bom_crlf_commas_and_extensions(cli, tmp_path):
    gt, images = tmp_path / "gt", tmp_path / "images"
    gt.mkdir()
    write_image(images / "img_1.png")
    (gt / "gt_img_1.txt").write_bytes(
        "\ufeff377,117,463,117,465,130,378,130,Genaxis Theatre\r\n"
        "493,115,519,115,519,131,493,131,1,000,000\r\n"
        "374,155,409,155,409,170,374,170,###\r\n\r\n".encode("utf-8"))
    (gt / "gt_img_2.txt").write_bytes(b"")
    out = tmp_path / "train_label.txt"
    code, stdout, err = convert(cli, gt, "--from", "icdar2015", "--to", "ppocr", "--images-dir", images,
                                "--image-prefix", "train_images/", "--output", out)
    assert code == 0, err
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[1] == "train_images/img_2.jpg\t[]"  # no image in --images-dir: .jpg
    image, annotation = lines[0].split("\t")
    assert image == "train_images/img_1.png"
    assert json.loads(annotation) == [
        {"transcription": "Genaxis Theatre", "points": [[377, 117], [463, 117], [465, 130], [378, 130]]},
        {"transcription": "1,000,000", "points": [[493, 115], [519, 115], [519, 131], [493, 131]]},
        {"transcription": "###", "points": [[374, 155], [409, 155], [409, 170], [374, 170]]}]
    assert "img_2.jpg" in err  # named as not found in --images-dir


def test_icdar2015_writer_refuses_polygons_unless_min_rect(cli, tmp_path, poly_ppocr):
    out = tmp_path / "gt"
    code, _, err = convert(cli, poly_ppocr, "--from", "ppocr", "--to", "icdar2015", "--output", out)
    assert code == 1 and not out.exists()
    assert f"{poly_ppocr}:1: imgs/p.jpg: region 1 has 8 points" in " ".join(err.split())
    assert "--min-rect" in err
    code, _, err = convert(cli, poly_ppocr, "--from", "ppocr", "--to", "icdar2015", "--output", out, "--min-rect")
    assert code == 0, err
    p_lines = (out / "gt_p.txt").read_text(encoding="utf-8").splitlines()
    assert p_lines[1] == "10,20,60,20,60,40,10,40,###"
    rect = [int(v) for v in p_lines[0].split(",")[:8]]  # ints in, ints out
    quad = Polygon(list(zip(rect[0::2], rect[1::2])))
    assert quad.buffer(1).contains(Polygon(CURVE)) and quad.area < 55 * 20  # tighter than the axis-aligned box
    assert p_lines[0].endswith(",curved")
    assert len((out / "gt_q.txt").read_text().split(",")) == 9  # triangle -> 4 points, float coordinates


def test_labelme_reader_rectangles_ignore_and_relative_image_path(cli, tmp_path):
    folder = tmp_path / "lm"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.json").write_text(json.dumps({
        "version": "5.4.1", "imagePath": "..\\images\\x.jpg", "imageData": None, "imageHeight": 60, "imageWidth": 80,
        "shapes": [{"label": "OPEN", "points": [[50, 30], [10, 5]], "shape_type": "rectangle"},
                   {"label": "###", "points": [[1, 1], [9, 1], [9, 9]], "shape_type": "polygon"},
                   {"label": "curve", "points": CURVE}]}))
    (folder / "y.json").write_text(json.dumps({"imagePath": "y.png", "shapes": []}))
    out = tmp_path / "out.txt"
    assert convert(cli, folder, "--from", "labelme", "--to", "ppocr", "--output", out)[0] == 0
    assert regions_of(out) == {
        "images/x.jpg": sorted(json.dumps(r, sort_keys=True) for r in [
            {"transcription": "OPEN", "points": [[10, 5], [50, 5], [50, 30], [10, 30]]},
            {"transcription": "###", "points": [[1, 1], [9, 1], [9, 9]]},
            {"transcription": "curve", "points": CURVE}]),
        "y.png": []}


def test_labelme_writer_fields_and_sizes_from_images_dir(cli, tmp_path, poly_ppocr):
    images = tmp_path / "data"
    write_image(images / "imgs" / "p.jpg", h=70, w=90)
    out = tmp_path / "lm"
    code, _, err = convert(cli, poly_ppocr, "--from", "ppocr", "--to", "labelme", "--images-dir", images,
                           "--output", out)
    assert code == 0, err
    data = json.loads((out / "imgs" / "p.json").read_text(encoding="utf-8"))
    assert data["imagePath"] == "p.jpg" and data["imageData"] is None
    assert (data["imageWidth"], data["imageHeight"]) == (90, 70)
    assert [(s["label"], s["shape_type"], s["points"]) for s in data["shapes"]] == [
        ("curved", "polygon", CURVE), ("###", "polygon", QUAD)]
    missing = json.loads((out / "imgs" / "q.json").read_text())
    assert missing["imageWidth"] is None and "q.jpg" in err


def test_coco_reader_crowd_illegible_text_bbox_and_background(cli, tmp_path):
    source = tmp_path / "instances.json"
    source.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 50},
                   {"id": 8, "file_name": "empty.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 7, "segmentation": [[1, 2, 30, 2, 30, 12, 1, 12]], "iscrowd": 0,
             "attributes": {"transcription": "hi, there", "legible": True}},
            {"id": 2, "image_id": 7, "segmentation": [[5, 5, 9, 5, 9, 9, 5, 9]], "iscrowd": 1},
            {"id": 3, "image_id": 7, "segmentation": [[0, 0, 4, 0, 4, 4]], "iscrowd": 0,
             "attributes": {"transcription": "blur", "legible": False}},
            {"id": 4, "image_id": 7, "bbox": [10.5, 20, 5, 4], "text": "boxed"}],
        "categories": [{"id": 1, "name": "text"}]}))
    out = tmp_path / "out.txt"
    code, stdout, err = convert(cli, source, "--from", "coco", "--to", "ppocr", "--output", out)
    assert code == 0, err
    assert regions_of(out) == {
        "a.jpg": sorted(json.dumps(r, sort_keys=True) for r in [
            {"transcription": "hi, there", "points": [[1, 2], [30, 2], [30, 12], [1, 12]]},
            {"transcription": "###", "points": [[5, 5], [9, 5], [9, 9], [5, 9]]},
            {"transcription": "###", "points": [[0, 0], [4, 0], [4, 4]]},
            {"transcription": "boxed", "points": [[10.5, 20], [15.5, 20], [15.5, 24], [10.5, 24]]}]),
        "empty.jpg": []}


def test_coco_writer_fields(cli, tmp_path, quads_ppocr):
    out = tmp_path / "coco.json"
    assert convert(cli, quads_ppocr, "--from", "ppocr", "--to", "coco", "--output", out)[0] == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [im["file_name"] for im in data["images"]] == ["a.jpg", "b.jpg", "c.jpg"]
    assert data["categories"] == [{"id": 1, "name": "text"}]
    first, crowd = data["annotations"][:2]
    assert first == {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[10, 20, 60, 20, 60, 40, 10, 40]],
                     "bbox": [10, 20, 50, 20], "area": 1000.0, "iscrowd": 0,
                     "attributes": {"transcription": "Hello, world", "legible": True}}
    assert crowd["iscrowd"] == 1 and crowd["attributes"]["legible"] is False
    assert [a["image_id"] for a in data["annotations"]] == [1, 1, 1, 3]


def test_totaltext_curved_wrapped_and_do_not_care(cli, tmp_path):
    gt, images = tmp_path / "Train", tmp_path / "Images"
    gt.mkdir()
    write_image(images / "img11.JPG")
    (gt / "poly_gt_img11.txt").write_text(
        "x: [[115 503 494 115]], y: [[322 346 426 404]], ornt: [u'h'], transcriptions: [u'nauGHTY']\n"
        "x: [[ 5 20 40 60 60 40\n  20  5]], y: [[50 45 44 46 60 58\n  59 64]], ornt: [u'c'], "
        "transcriptions: [u\"it's\"]\n"
        "x: [[1 9 9 1]], y: [[1 1 9 9]], ornt: [u'#'], transcriptions: [u'#']\n")
    out = tmp_path / "tt.txt"
    code, _, err = convert(cli, gt, "--from", "totaltext", "--to", "ppocr", "--images-dir", images, "--output", out)
    assert code == 0, err
    assert regions_of(out) == {"img11.JPG": sorted(json.dumps(r, sort_keys=True) for r in [
        {"transcription": "nauGHTY", "points": [[115, 322], [503, 346], [494, 426], [115, 404]]},
        {"transcription": "it's", "points": CURVE},
        {"transcription": "###", "points": [[1, 1], [9, 1], [9, 9], [1, 9]]}])}


def test_malformed_inputs_name_every_entry_and_write_nothing(cli, tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "gt_a.txt").write_text("1,2,3,4,5,6,7,8,ok\n1,2,x,4,5,6,7,8,bad\n1,2,3\n")
    (gt / "gt_b.txt").write_text("1,1,5,1,5,5,1,5,fine\n")
    out = tmp_path / "out.txt"
    code, _, err = convert(cli, gt, "--from", "icdar2015", "--to", "ppocr", "--output", out)
    assert code == 1 and not out.exists()
    assert f"{gt / 'gt_a.txt'}:2: coordinate 'x' is not a number" in err
    assert f"{gt / 'gt_a.txt'}:3: expected x1,y1" in err and "Traceback" not in err
    assert not list(tmp_path.glob(".out.txt*"))  # no temporary left behind

    code, stdout, err = convert(cli, gt, "--from", "icdar2015", "--to", "ppocr", "--output", out, "--skip-bad")
    assert code == 0, err
    assert regions_of(out) == {"a.jpg": [json.dumps({"points": [[1, 2], [3, 4], [5, 6], [7, 8]],
                                                     "transcription": "ok"}, sort_keys=True)],
                               "b.jpg": [json.dumps({"points": [[1, 1], [5, 1], [5, 5], [1, 5]],
                                                     "transcription": "fine"}, sort_keys=True)]}
    assert "skipped 2 bad entries" in err
    assert any(row.split()[:3] == ["│", "skipped", "entries"] and row.split()[-2] == "2" for row in stdout.splitlines())


def test_malformed_ppocr_labelme_and_coco_entries(cli, tmp_path):
    ppocr = tmp_path / "bad.txt"
    ppocr.write_text(label_line("a.jpg", []) + "b.jpg\t[{\"points\": [[1, 2]]}]\n" + "no tab here\n")
    code, _, err = convert(cli, ppocr, "--from", "ppocr", "--to", "coco", "--output", tmp_path / "c.json")
    assert code == 1 and f"{ppocr}:2:" in err and f"{ppocr}:3: no TAB" in err
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "a.json").write_text(json.dumps({"imagePath": "a.jpg", "shapes": [
        {"label": "x", "points": [[1, 1], [2, 2]], "shape_type": "line"}]}))
    (lm / "b.json").write_text("{\n  \"shapes\": [,]\n}")
    code, _, err = convert(cli, lm, "--from", "labelme", "--to", "ppocr", "--output", tmp_path / "l.txt")
    assert code == 1 and f"{lm / 'a.json'}: shapes[0]: shape_type 'line'" in err and f"{lm / 'b.json'}:2:" in err
    coco = tmp_path / "i.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [
        {"image_id": 2, "segmentation": [[0, 0, 1, 0, 1, 1]]},
        {"image_id": 1, "segmentation": {"counts": "abc", "size": [4, 4]}}]}))
    code, _, err = convert(cli, coco, "--from", "coco", "--to", "ppocr", "--output", tmp_path / "k.txt")
    assert code == 1 and f"{coco}: annotations[0]" in err and f"{coco}: annotations[1]: RLE" in " ".join(err.split())
    assert not any((tmp_path / n).exists() for n in ("c.json", "l.txt", "k.txt"))


def test_repeated_images_are_merged_and_stem_clashes_refused(cli, tmp_path):
    source = tmp_path / "dup.txt"
    source.write_text(label_line("a.jpg", [{"transcription": "1", "points": QUAD}]) + label_line("b.jpg", [])
                      + label_line("a.jpg", [{"transcription": "2", "points": FLOAT_QUAD}])
                      + label_line("x/b.png", []))
    out = tmp_path / "coco.json"
    code, _, err = convert(cli, source, "--from", "ppocr", "--to", "coco", "--output", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert [im["file_name"] for im in data["images"]] == ["a.jpg", "b.jpg", "x/b.png"]
    assert [a["attributes"]["transcription"] for a in data["annotations"]] == ["1", "2"]
    assert "1 repeated image entry was merged" in " ".join(err.split())
    code, _, err = convert(cli, source, "--from", "ppocr", "--to", "icdar2015", "--output", tmp_path / "gt")
    assert code == 1 and f"{source}:4: x/b.png: it would be written to gt_b.txt like b.jpg" in " ".join(err.split())


def test_split_is_seeded_and_reproducible(cli, tmp_path):
    source = tmp_path / "all.txt"
    source.write_text("".join(label_line(f"img_{i}.jpg", [{"transcription": str(i), "points": QUAD}])
                              for i in range(10)))
    outs = []
    for name, seed in (("s1", 0), ("s2", 0), ("s3", 5)):
        code, _, err = convert(cli, source, "--from", "ppocr", "--to", "ppocr", "--split", 0.7, "--seed", seed,
                               "--output", tmp_path / name)
        assert code == 0, err
        outs.append(tuple((tmp_path / name / part).read_text() for part in ("train_label.txt", "test_label.txt")))
    assert outs[0] == outs[1] and outs[0] != outs[2]
    train, test = outs[0]
    assert len(train.splitlines()) == 7 and len(test.splitlines()) == 3
    assert sorted(train.splitlines() + test.splitlines()) == sorted(source.read_text().splitlines())
    code, _, err = convert(cli, source, "--from", "ppocr", "--to", "coco", "--split", 0.7, "--output", tmp_path / "x")
    assert code == 2 and "--to ppocr" in err


def test_usage_errors_and_overwrite(cli, tmp_path, quads_ppocr):
    out = tmp_path / "out.json"
    code, _, err = convert(cli, quads_ppocr, "--from", "ppocr", "--to", "icdar", "--output", out)
    assert code == 2 and "icdar2015" in err
    code, _, err = convert(cli, quads_ppocr, "--from", "ppocr", "--to", "totaltext", "--output", out)
    assert code == 2 and "read" in err
    out.write_text("keep me")
    code, _, err = convert(cli, quads_ppocr, "--from", "ppocr", "--to", "coco", "--output", out)
    assert code == 1 and "--overwrite" in err and out.read_text() == "keep me"
    code, _, err = convert(cli, quads_ppocr, "--from", "ppocr", "--to", "coco", "--output", out, "--overwrite")
    assert code == 0 and json.loads(out.read_text())["images"]
    code, _, err = convert(cli, quads_ppocr, "--from", "ppocr", "--to", "labelme", "--output", quads_ppocr.parent,
                           "--overwrite")
    assert code == 2 and quads_ppocr.is_file()


def test_converted_icdar_folder_scores_like_a_hand_made_label_file(cli, tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "gt_img_1.txt").write_bytes("\ufeff0,0,40,0,40,20,0,20,A,B\r\n50,50,90,50,90,70,50,70,###\r\n"
                                      "0,30,30,30,30,45,0,45,C\r\n".encode())
    (gt / "gt_img_2.txt").write_bytes(b"10,10,60,10,60,30,10,30,D\r\n")
    hand = tmp_path / "hand.txt"
    hand.write_text(
        label_line("ch4/img_1.jpg", [{"transcription": "A,B", "points": [[0, 0], [40, 0], [40, 20], [0, 20]]},
                                     {"transcription": "###", "points": [[50, 50], [90, 50], [90, 70], [50, 70]]},
                                     {"transcription": "C", "points": [[0, 30], [30, 30], [30, 45], [0, 45]]}])
        + label_line("ch4/img_2.jpg", [{"transcription": "D", "points": [[10, 10], [60, 10], [60, 30], [10, 30]]}]))
    preds = tmp_path / "det_results.txt"
    preds.write_text(
        "ch4/img_1.jpg\t" + json.dumps([{"points": [[1, 0], [40, 1], [40, 20], [0, 19]], "score": 0.9},
                                        {"points": [[52, 50], [90, 52], [88, 70], [50, 69]], "score": 0.8},
                                        {"points": [[100, 100], [120, 100], [120, 110], [100, 110]], "score": 0.7}])
        + "\nch4/img_2.jpg\t" + json.dumps([{"points": [[12, 10], [60, 12], [60, 30], [10, 28]], "score": 0.9}]) + "\n")
    converted = tmp_path / "converted.txt"
    assert convert(cli, gt, "--from", "icdar2015", "--to", "ppocr", "--image-prefix", "ch4",
                   "--output", converted)[0] == 0
    scores = []
    for labels in (hand, converted):
        metrics = tmp_path / f"{labels.stem}.json"
        code, _, err = cli("eval", "--predictions", preds, "--label-file", labels, "--json", metrics)
        assert code == 0, err
        scores.append(json.loads(metrics.read_text()))
    assert scores[0] == scores[1]
    assert scores[0]["precision"] == pytest.approx(2 / 3) and scores[0]["recall"] == pytest.approx(2 / 3)


def test_check_runs_check_data_on_the_result(cli, tmp_path, quads_ppocr):
    out = tmp_path / "gt"
    code, stdout, err = convert(cli, quads_ppocr, "--from", "ppocr", "--to", "icdar2015", "--output", out, "--check")
    assert out.is_dir()  # the conversion is written whatever check-data finds
    assert code == 1 and "does not exist" in " ".join((stdout + err).split())  # the images are not there


def test_bad_entries_are_reported_as_written(cli, tmp_path):
    """The problem report is plain text: a path like `gt[u'c']` is not taken for console markup."""
    gt = tmp_path / "gt[u'c'][bold]"
    gt.mkdir()
    (gt / "gt_a.txt").write_text("1,2,x,4,5,6,7,8,bad\n")
    code, _, err = convert(cli, gt, "--from", "icdar2015", "--to", "ppocr", "--output", tmp_path / "out.txt")
    assert code == 1 and "Traceback" not in err
    assert f"{gt / 'gt_a.txt'}:1: coordinate 'x' is not a number" in " ".join(err.split())


MMOCR = {
    "metainfo": {"dataset_type": "TextDetDataset", "task_name": "textdet", "category": [{"id": 0, "name": "text"}]},
    "data_list": [
        {"img_path": "imgs/img_1.jpg", "height": 720, "width": 1280, "instances": [
            {"polygon": [377, 117, 463, 117, 465, 130, 378, 130], "bbox": [377, 117, 465, 130], "bbox_label": 0,
             "ignore": False},
            {"polygon": [493.5, 115.25, 519, 115, 519, 131, 493, 131.75], "bbox": [493, 115, 519, 131.75],
             "bbox_label": 0, "ignore": True},
            {"polygon": [5, 50, 20, 45, 40, 44, 60, 46, 60, 60], "bbox_label": 0, "ignore": False}]},
        {"img_path": "imgs/img_2.jpg", "height": 720, "width": 1280, "instances": []},
    ]}


def test_mmocr_to_ppocr_keeps_polygons_and_ignore_flags_exactly_and_round_trips(cli, tmp_path):
    source = tmp_path / "textdet_test.json"
    source.write_text(json.dumps(MMOCR))
    ppocr_file, back = tmp_path / "label.txt", tmp_path / "back.json"
    code, _, err = convert(cli, source, "--from", "mmocr", "--to", "ppocr", "--output", ppocr_file)
    assert code == 0, err
    lines = dict(line.split("\t") for line in ppocr_file.read_text().splitlines())
    assert set(lines) == {"imgs/img_1.jpg", "imgs/img_2.jpg"} and json.loads(lines["imgs/img_2.jpg"]) == []
    regions = json.loads(lines["imgs/img_1.jpg"])
    for region, instance in zip(regions, MMOCR["data_list"][0]["instances"]):
        flat = instance["polygon"]
        assert region["points"] == [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)]
        assert (region["transcription"] == "###") == instance["ignore"]
    code, _, err = convert(cli, ppocr_file, "--from", "ppocr", "--to", "mmocr", "--output", back)
    assert code == 0, err
    written = json.loads(back.read_text())
    assert written["metainfo"] == MMOCR["metainfo"]
    for got, want in zip(written["data_list"], MMOCR["data_list"]):
        assert got["img_path"] == want["img_path"]
        assert [(i["polygon"], i["ignore"]) for i in got["instances"]] == [
            (i["polygon"], i["ignore"]) for i in want["instances"]]
        assert all(i["bbox_label"] == 0 for i in got["instances"])
    assert written["data_list"][0]["instances"][0]["bbox"] == [377, 117, 465, 130]


def test_ppocr_round_trips_through_mmocr_with_transcriptions(cli, tmp_path, quads_ppocr, poly_ppocr):
    for source in (quads_ppocr, poly_ppocr):
        mid, back = tmp_path / f"mid_{source.stem}.json", tmp_path / f"back_{source.stem}.txt"
        assert convert(cli, source, "--from", "ppocr", "--to", "mmocr", "--output", mid)[0] == 0
        assert convert(cli, mid, "--from", "mmocr", "--to", "ppocr", "--output", back)[0] == 0
        assert regions_of(back) == regions_of(source)


def test_coco_reader_on_an_mmocr_file_names_mmocr_not_skip_bad(cli, tmp_path):
    source = tmp_path / "textdet_test.json"
    source.write_text(json.dumps(MMOCR))
    code, _, err = convert(cli, source, "--from", "coco", "--to", "ppocr", "--output", tmp_path / "x.txt")
    flat = " ".join(err.split())
    assert code == 1 and "looks like mmocr's format: convert it with --from mmocr" in flat
    assert "--skip-bad" not in flat and not (tmp_path / "x.txt").exists()
    doctr_file = tmp_path / "labels.json"
    doctr_file.write_text(json.dumps({"a.png": {"img_dimensions": [10, 20], "img_hash": "x", "polygons": []}}))
    code, _, err = convert(cli, doctr_file, "--from", "mmocr", "--to", "ppocr", "--output", tmp_path / "y.txt")
    assert code == 1 and "--from doctr" in " ".join(err.split())


DOCTR = {
    "sample_img_01.png": {"img_dimensions": [96, 128], "img_hash": "h1",
                          "polygons": [[[10, 20], [60, 20], [60, 40], [10, 40]],
                                       [[1.5, 2.25], [30.5, 2.0], [30.0, 12.75], [1.0, 12.5]]]},
    "sample_img_02.png": {"img_dimensions": [96, 128], "img_hash": "h2",
                          "polygons": {"words": [[[5, 50], [20, 45], [40, 44], [60, 60]]], "stamps": [[0, 0, 9, 7]]}},
}


def test_doctr_to_ppocr_and_back(cli, tmp_path):
    folder = tmp_path / "train"
    write_image(folder / "images" / "sample_img_01.png", 96, 128, 0)
    write_image(folder / "images" / "sample_img_02.png", 96, 128, 1)
    source = folder / "labels.json"
    source.write_text(json.dumps(DOCTR))
    ppocr_file, back = tmp_path / "label.txt", tmp_path / "back.json"
    code, _, err = convert(cli, source, "--from", "doctr", "--to", "ppocr", "--output", ppocr_file)
    assert code == 0, err
    lines = {k: json.loads(v) for k, v in (line.split("\t") for line in ppocr_file.read_text().splitlines())}
    assert [r["points"] for r in lines["sample_img_01.png"]] == DOCTR["sample_img_01.png"]["polygons"]
    assert [r["points"] for r in lines["sample_img_02.png"]] == [[[5, 50], [20, 45], [40, 44], [60, 60]],
                                                                [[0, 0], [9, 0], [9, 7], [0, 7]]]
    assert all(r["transcription"] == "" for regions in lines.values() for r in regions)
    code, _, err = convert(cli, ppocr_file, "--from", "ppocr", "--to", "doctr", "--images-dir", folder / "images",
                           "--output", back)
    assert code == 0, err
    written = json.loads(back.read_text())
    assert written["sample_img_01.png"]["polygons"] == DOCTR["sample_img_01.png"]["polygons"]
    assert written["sample_img_01.png"]["img_dimensions"] == [96, 128]
    digest = hashlib.sha256((folder / "images" / "sample_img_01.png").read_bytes()).hexdigest()
    assert written["sample_img_01.png"]["img_hash"] == digest


def test_doctr_writer_refuses_do_not_care_regions(cli, tmp_path, quads_ppocr):
    code, _, err = convert(cli, quads_ppocr, "--from", "ppocr", "--to", "doctr", "--output", tmp_path / "l.json")
    flat = " ".join(err.split())
    assert code == 1 and "no do-not-care flag" in flat and "a.jpg" in flat and "c.jpg" in flat
