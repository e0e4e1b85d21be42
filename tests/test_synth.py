"""The synthetic dataset: valid labels, exact boxes, determinism, and the `python -m` entry point."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely

from openocr_cli.data.labels import load_labels
from openocr_cli.data.synth import SynthPaths, generate, main

SIZE = (256, 320)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> SynthPaths:
    return generate(tmp_path_factory.mktemp("synth"), num_train=24, num_test=8, seed=0, size=SIZE)


def read_lines(label_file: Path) -> list[tuple[str, list[dict]]]:
    out = []
    for line in label_file.read_text(encoding="utf-8").splitlines():
        path, regions = line.split("\t")
        out.append((path, json.loads(regions)))
    return out


def all_samples(paths: SynthPaths):
    for split, label_file in (("train", paths.train_label), ("test", paths.test_label)):
        for rel, regions in read_lines(label_file):
            assert rel.startswith(f"{split}/")
            image = cv2.imread(str(paths.data_dir / rel))
            assert image is not None, rel
            yield image, regions


def test_files_and_label_format(synth):
    assert synth.train_label == synth.data_dir / "train_label.txt"
    assert synth.test_label == synth.data_dir / "test_label.txt"
    assert len(read_lines(synth.train_label)) == 24
    assert len(read_lines(synth.test_label)) == 8
    h, w = SIZE
    for image, regions in all_samples(synth):
        assert image.shape == (h, w, 3)
        assert 1 <= len(regions) <= 8
        for region in regions:
            assert set(region) == {"transcription", "points"}
            pts = np.array(region["points"])
            assert pts.shape == (4, 2) and pts.dtype.kind == "i"
            assert pts[:, 0].min() >= 0 and pts[:, 0].max() <= w - 1
            assert pts[:, 1].min() >= 0 and pts[:, 1].max() <= h - 1
            # Clockwise on screen (y down) = positive shoelace sum; first edge runs left to right.
            x, y = pts[:, 0], pts[:, 1]
            assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0
            assert pts[1, 0] > pts[0, 0]


def test_project_label_loader_accepts_it(synth):
    samples = load_labels([synth.train_label], synth.data_dir)
    assert len(samples) == 24
    assert all(s.image.is_file() for s in samples)


def test_some_do_not_care_regions(synth):
    texts = [r["transcription"] for _, regions in all_samples(synth) for r in regions]
    ignored = texts.count("###")
    assert 0 < ignored < 0.3 * len(texts)
    assert all(t == "###" or (t.isalnum() and t.isascii()) for t in texts)


def test_words_do_not_overlap(synth):
    for _, regions in all_samples(synth):
        polys = [shapely.Polygon(r["points"]) for r in regions]
        assert all(p.is_valid and p.area > 0 for p in polys)
        for a, b in itertools.combinations(polys, 2):
            assert not a.intersects(b)


def test_quads_cover_ink(synth):
    """Inside a care box the mean grey level differs clearly from a ring of background around it."""
    diffs = []
    for image, regions in all_samples(synth):
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
        boxes = np.zeros(gray.shape, np.uint8)
        for r in regions:
            cv2.fillPoly(boxes, [np.array(r["points"], np.int32)], 1)
        for r in regions:
            if r["transcription"] == "###":
                continue
            inside = np.zeros(gray.shape, np.uint8)
            cv2.fillPoly(inside, [np.array(r["points"], np.int32)], 1)
            grown = shapely.Polygon(r["points"]).buffer(6, join_style="mitre")
            ring = np.zeros(gray.shape, np.uint8)
            cv2.fillPoly(ring, [np.rint(np.array(grown.exterior.coords)).astype(np.int32)], 1)
            ring[boxes > 0] = 0
            diffs.append(abs(gray[inside > 0].mean() - gray[ring > 0].mean()))
    assert min(diffs) > 5
    assert np.median(diffs) > 25


def snapshot(paths: SynthPaths):
    labels = paths.train_label.read_bytes() + paths.test_label.read_bytes()
    pixels = [cv2.imread(str(p)) for p in sorted(paths.data_dir.glob("*/*.png"))]
    return labels, pixels


def test_deterministic_per_seed(tmp_path):
    a = snapshot(generate(tmp_path / "a", num_train=4, num_test=2, seed=7, size=SIZE))
    b = snapshot(generate(tmp_path / "b", num_train=4, num_test=2, seed=7, size=SIZE))
    c = snapshot(generate(tmp_path / "c", num_train=4, num_test=2, seed=8, size=SIZE))
    assert a[0] == b[0]
    assert len(a[1]) == 6 and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))
    assert a[0] != c[0]
    assert not any(np.array_equal(x, y) for x, y in zip(a[1], c[1]))


def test_image_does_not_depend_on_set_size(tmp_path):
    small = generate(tmp_path / "small", num_train=2, num_test=1, seed=3, size=SIZE)
    large = generate(tmp_path / "large", num_train=5, num_test=3, seed=3, size=SIZE)
    assert read_lines(small.train_label) == read_lines(large.train_label)[:2]
    assert read_lines(small.test_label) == read_lines(large.test_label)[:1]


def test_main_entry_point(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main([str(out), "--train", "3", "--test", "2", "--seed", "1", "--size", "96x128"]) == 0
    assert "train_label.txt" in capsys.readouterr().out
    assert len(read_lines(out / "train_label.txt")) == 3
    assert len(read_lines(out / "test_label.txt")) == 2
    assert cv2.imread(str(out / "train" / "0000.png")).shape == (96, 128, 3)
    with pytest.raises(SystemExit):
        main([str(out), "--size", "96"])
