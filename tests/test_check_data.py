"""check-data: exact counts, text heights after the eval resize, empty crops, warnings, problems, exit codes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from openocr_cli import config as cfgmod
from openocr_cli.data.dataset import TrainDataset, validate_training_labels
from openocr_cli.data.doctor import check_data
from openocr_cli.data.synth import generate
from tests.conftest import label_line, write_image

SMALL_CROP = ["-o", "Train.dataset.transforms.4.EastRandomCropData.size=[64, 64]"]
RESIZE = "Eval.dataset.transforms.2.DetResizeForTest"


def box(x0: float, y0: float, x1: float, y1: float, text: str = "word") -> dict:
    return {"transcription": text, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Images 64x96 from generate plus one 20x30 image, labelled by hand.

    main.txt: 1 text A (h 36) + tiny text B (h 4) + '###' C; 2 background; 3 the image of line 1
    again with D (h 10) reaching outside (x up to 110 > 96); 4 the 20x30 image with E (h 6);
    5 bad JSON; 6 a missing image. ignored.txt: 1 an image whose two regions are both ignored.
    """
    paths = generate(tmp_path_factory.mktemp("mixed"), num_train=3, num_test=0, seed=5, size=(64, 96))
    root = paths.data_dir
    write_image(root / "tiny.png", 20, 30)
    main = root / "main.txt"
    main.write_text(
        label_line("train/0000.png", [box(10, 2, 50, 38), box(60, 40, 80, 44), box(5, 45, 30, 60, "###")])
        + label_line("train/0001.png", [])
        + label_line("train/0000.png", [box(80, 50, 110, 60)])
        + label_line("tiny.png", [box(2, 2, 20, 8)])
        + "train/0001.png\tnot json\n"
        + label_line("missing.png", []), encoding="utf-8")
    ignored = root / "ignored.txt"
    ignored.write_text(label_line("train/0002.png", [box(5, 5, 40, 20, "###"), box(50, 5, 90, 20, "*")]),
                       encoding="utf-8")
    return root, main, ignored


def run_json(cli, tmp_path, root: Path, *labels: Path, extra: tuple = ()) -> tuple[int, dict, str]:
    out = tmp_path / "report.json"
    args = ["check-data", "--data-dir", root, *[a for f in labels for a in ("--label-file", f)], "--json", out,
            "--crops", "4", *SMALL_CROP, *extra]
    code, stdout, err = cli(*args)
    return code, json.loads(out.read_text()), stdout + err


def test_counts_problems_warnings_and_exit_1(cli, tmp_path, mixed):
    root, main, ignored = mixed
    code, report, output = run_json(cli, tmp_path, root, main, ignored)
    assert code == 1
    assert set(report) == {"images", "background_images", "regions", "ignored_regions", "problems",
                           "height_buckets", "empty_crop_fraction", "warnings"}
    assert report["images"] == 5 and report["background_images"] == 1
    assert report["regions"] == 7 and report["ignored_regions"] == 3
    # default resize (max 960): no scaling; A 36, B 4, D 10, E 6 (20x30 padded to 32x32, still scale 1)
    assert report["height_buckets"] == {"0-8": 2, "8-16": 1, "16-32": 0, "32+": 1}
    assert sum(report["height_buckets"].values()) == report["regions"] - report["ignored_regions"]
    assert [(p["file"], p["line"]) for p in report["problems"]] == [(str(main), 5), (str(main), 6)]
    assert "not valid JSON" in report["problems"][0]["reason"]
    assert "does not exist" in report["problems"][1]["reason"]
    assert 0.0 <= report["empty_crop_fraction"] <= 1.0
    warnings = "\n".join(report["warnings"])
    assert "3 of 7 regions (43%) are do-not-care" in warnings
    assert "2 of 4 text regions (50%) are under 8 px" in warnings
    assert "1 image(s) are listed more than once" in warnings and f"{main}:1, {main}:3" in warnings
    assert f"1 region(s) reach outside their image: {main}:3 region 1" in warnings
    assert f"every region in {ignored} is do-not-care" in warnings
    flat = " ".join(output.split())
    assert f"{main}:5: annotation is not valid JSON" in flat and "2 label line(s) train refuses" in flat
    assert "usable images" in flat and "do-not-care regions" in flat


@pytest.mark.parametrize("resize, buckets", [
    # 64x96 -> 32x64 (x * 2/3, y / 2): A 18, B 2, D 5; 20x30 -> padded 32x32 -> 32x32: E 6
    (["limit_side_len=48"], {"0-8": 3, "8-16": 0, "16-32": 1, "32+": 0}),
    # 64x96 unchanged; 20x30 -> padded 32x32 -> 64x64 (scale 2, not 64/20): E 12
    (["limit_side_len=64", "limit_type=min"], {"0-8": 1, "8-16": 2, "16-32": 0, "32+": 1}),
])
def test_height_buckets_follow_the_eval_resize(cli, tmp_path, mixed, resize, buckets):
    root, main, ignored = mixed
    extra = tuple(a for r in resize for a in ("-o", f"{RESIZE}.{r}"))
    code, report, _ = run_json(cli, tmp_path, root, main, ignored, extra=extra)
    assert code == 1 and report["height_buckets"] == buckets


def test_clean_set_exits_0_and_crops_are_reproducible(cli, tmp_path):
    paths = generate(tmp_path / "clean", num_train=4, num_test=0, seed=2, size=(64, 96))
    lines = paths.train_label.read_text().splitlines()
    regions = [r for line in lines for r in json.loads(line.split("\t")[1])]
    ignored = sum(r["transcription"] == "###" for r in regions)
    seeded = ("--seed", "3", "--crops", "6")
    code, first, _ = run_json(cli, tmp_path, paths.data_dir, paths.train_label, extra=seeded)
    assert code == 0 and first["problems"] == []
    assert first["images"] == 4 and first["background_images"] == 0
    assert first["regions"] == len(regions) and first["ignored_regions"] == ignored
    assert sum(first["height_buckets"].values()) == len(regions) - ignored
    code, second, _ = run_json(cli, tmp_path, paths.data_dir, paths.train_label, extra=seeded)
    assert code == 0 and second["empty_crop_fraction"] == first["empty_crop_fraction"]


def test_background_only_set_has_only_empty_crops(cli, tmp_path):
    paths = generate(tmp_path / "bg", num_train=3, num_test=0, seed=4, size=(64, 96))
    labels = tmp_path / "bg.txt"
    labels.write_text("".join(label_line(f"train/{i:04d}.png", []) for i in range(3)), encoding="utf-8")
    code, report, _ = run_json(cli, tmp_path, paths.data_dir, labels)
    assert code == 0
    assert report["images"] == report["background_images"] == 3 and report["regions"] == 0
    assert report["empty_crop_fraction"] == 1.0
    assert report["height_buckets"] == {"0-8": 0, "8-16": 0, "16-32": 0, "32+": 0}
    assert any("100% of 4 training crops contain no text" in w for w in report["warnings"])


def test_api_reuses_a_validated_label_set(mixed):
    root, main, ignored = mixed
    cfg = cfgmod.apply_overrides(cfgmod.load_config(), [SMALL_CROP[1]])
    checked = validate_training_labels([main, ignored], root)
    assert {s.key: s.size for s in checked.samples} == {"train/0000.png": (64, 96), "train/0001.png": (64, 96),
                                                          "tiny.png": (20, 30), "train/0002.png": (64, 96)}
    given = check_data([main, ignored], root, cfg, crops=3, seed=1, checked=checked)
    fresh = check_data([main, ignored], root, cfg, crops=3, seed=1)
    assert given.to_json() == fresh.to_json()
    # the contract: keys (0, position, index) with indices from random.Random(seed); shrink_map is keep_keys[3]
    dataset, rng = TrainDataset(checked.samples, cfg["Train"]["dataset"]["transforms"], 1), random.Random(1)
    empty = [not (dataset[(0, p, rng.randrange(4))][3] > 0).any() for p in range(3)]
    assert given.empty_crop_fraction == sum(empty) / 3
    assert check_data([main, ignored], root, cfg, crops=0, checked=checked).empty_crop_fraction == 0.0


def test_missing_inputs_are_named(cli, tmp_path, mixed):
    root, main, _ = mixed
    code, _, err = cli("check-data", "--data-dir", root, "--label-file", tmp_path / "nope.txt")
    assert code == 1 and "nope.txt does not exist" in " ".join(err.split())
    code, _, err = cli("check-data", "--data-dir", tmp_path / "nodir", "--label-file", main)
    assert code == 1 and "nodir (from --data-dir) does not exist" in " ".join(err.split())
    code, _, _ = cli("check-data", "--data-dir", root, "--label-file", main, "--crops", "-1")
    assert code == 2
    code, out, _ = cli("check-data", "--data-dir", root, "--label-file", main, "--crops", "0")
    assert code == 1 and "not measured (--crops 0)" in out and "0.0 %" not in out and "0.0%" not in out
