"""The decode cache (data.decode_cache): hits, misses, invalidation, bit-identical samples, the RAM check, workers."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from openocr_cli import config as cfgmod
from openocr_cli.data.dataset import TrainDataset, validate_training_labels
from openocr_cli.data.decode_cache import DecodeCache, check_mode
from openocr_cli.data.synth import generate
from openocr_cli.errors import UserError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """12 generated training images, half of them JPEG (EXIF-free), and their validated samples."""
    root = tmp_path_factory.mktemp("synth")
    paths = generate(root, num_train=12, num_test=0, seed=3, size=(160, 224))
    lines = []
    for n, line in enumerate(paths.train_label.read_text(encoding="utf-8").splitlines()):
        rel, _, regions = line.partition("\t")
        if n % 2:
            image = cv2.imread(str(paths.data_dir / rel))
            rel = str(Path(rel).with_suffix(".jpg"))
            cv2.imwrite(str(paths.data_dir / rel), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        lines.append(f"{rel}\t{regions}")
    label = root / "mixed.txt"
    label.write_text("\n".join(lines) + "\n", encoding="utf-8")
    checked = validate_training_labels([label], paths.data_dir)
    assert not checked.problems and len(checked.samples) == 12
    return checked.samples


def transforms():
    return cfgmod.load_config()["Train"]["dataset"]["transforms"]


def plain_decode(raw: bytes):
    return cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)


def copy_image(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target


def test_check_mode_accepts_the_three_modes_and_names_the_key():
    assert [check_mode(v) for v in (None, False, "none", "RAM", " disk ")] == ["none", "none", "none", "ram", "disk"]
    with pytest.raises(UserError, match="Train.dataset.cache is 'memory'"):
        check_mode("memory")


def test_disk_hit_miss_and_a_touched_file_is_decoded_again(synth, tmp_path):
    image = copy_image(synth[0].image, tmp_path / "img" / "a.png")
    cache = DecodeCache("disk", plain_decode, folder=tmp_path / "cache")
    first = cache.image(image)
    assert (cache.hits, cache.misses) == (0, 1)
    files = list((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == 1 and not [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]
    second = cache.image(image)
    assert (cache.hits, cache.misses) == (1, 1)
    assert isinstance(second, np.memmap) or isinstance(second.base, np.memmap)
    assert not second.flags.writeable
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(second, cv2.imread(str(image)))

    # the same path with other pixels and a new mtime: a new entry, decoded from the file
    other = cv2.imread(str(synth[2].image))
    cv2.imwrite(str(image), cv2.resize(other, (first.shape[1], first.shape[0])))
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    third = cache.image(image)
    assert (cache.hits, cache.misses) == (1, 2)
    np.testing.assert_array_equal(third, cv2.imread(str(image)))
    assert not np.array_equal(third, first)
    assert [p.name for p in (tmp_path / "cache").rglob("*.npy")] != [files[0].name]  # the old version's entry
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1  # was deleted when the new one was stored

    # a new process (a fresh cache object) finds the decoded image
    again = DecodeCache("disk", plain_decode, folder=tmp_path / "cache")
    np.testing.assert_array_equal(again.image(image), third)
    assert (again.hits, again.misses) == (1, 0)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong_array"])
def test_a_damaged_cache_file_is_decoded_again_not_trusted(synth, tmp_path, damage, caplog):
    image = copy_image(synth[1].image, tmp_path / "img" / "b.jpg")
    cache = DecodeCache("disk", plain_decode, folder=tmp_path / "cache")
    expected = cache.image(image)
    entry, = (tmp_path / "cache").rglob("*.npy")
    data = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        entry.write_bytes(b"\x93NUMPY not really" + bytes(100))
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        np.save(entry, np.zeros((3, 3), np.float32))
    with caplog.at_level(logging.WARNING, logger="openocr_cli"):
        got = DecodeCache("disk", plain_decode, folder=tmp_path / "cache").image(image)
    np.testing.assert_array_equal(got, expected)
    assert "decoding" in caplog.text and "again" in caplog.text
    np.testing.assert_array_equal(np.load(entry), expected)  # rewritten whole


def _samples_of(dataset: TrainDataset, keys) -> list:
    return [dataset[key] for key in keys]


def test_samples_are_bit_identical_with_none_ram_and_disk(synth, tmp_path):
    keys = [(epoch, position, (7 * position + epoch) % len(synth)) for epoch in range(3) for position in range(20)]
    plain = _samples_of(TrainDataset(synth, transforms(), seed=5), keys)
    for mode in ("ram", "disk", "disk"):  # disk twice: filled by the first pass, read by the second
        dataset = TrainDataset(synth, transforms(), seed=5, cache=mode, cache_folder=tmp_path / "cache")
        summary = dataset.prepare_cache()
        assert summary.images == len(synth) and summary.size == sum(s.size[0] * s.size[1] * 3 for s in synth)
        cached = _samples_of(dataset, keys)
        for ours, theirs in zip(cached, plain):
            assert len(ours) == len(theirs)
            for a, b in zip(ours, theirs):
                np.testing.assert_array_equal(a, b)
        assert dataset.cache.hits > 0
    assert DecodeCache("disk", plain_decode, folder=tmp_path / "cache").prepare(
        [s.image for s in synth], [s.size for s in synth]).present == len(synth)


def test_decode_image_options_are_applied_after_the_cache(synth, tmp_path):
    chain = [{"DecodeImage": {"img_mode": "RGB", "channel_first": True}}, {"DetLabelEncode": None},
             {"KeepKeys": {"keep_keys": ["image"]}}]
    plain = TrainDataset(synth, chain, seed=0)
    cached = TrainDataset(synth, chain, seed=0, cache="disk", cache_folder=tmp_path / "cache")
    for index in range(4):
        np.testing.assert_array_equal(cached[(0, index, index)][0], plain[(0, index, index)][0])
        np.testing.assert_array_equal(cached[(0, index, index)][0], plain[(0, index, index)][0])


def test_ram_cache_refuses_with_the_numbers_when_it_does_not_fit(synth):
    dataset = TrainDataset(synth, transforms(), seed=0, cache="ram")
    dataset.cache.available = lambda: 100_000  # bytes
    need = sum(s.size[0] * s.size[1] * 3 for s in synth)
    with pytest.raises(UserError) as err:
        dataset.prepare_cache()
    text = str(err.value)
    assert f"{need / 1e6:.1f} MB for {len(synth)} decoded images" in text and "only 0.1 MB of memory" in text
    assert "--cache disk" in text
    assert not dataset.cache.ram  # nothing was decoded

    dataset.cache.available = lambda: 10 * need
    summary = dataset.prepare_cache()
    assert summary.size == need and len(dataset.cache.ram) == len(synth)
    assert all(not a.flags.writeable for a in dataset.cache.ram.values())


def test_ram_cache_counts_each_local_rank(synth, monkeypatch):
    need = sum(s.size[0] * s.size[1] * 3 for s in synth)
    dataset = TrainDataset(synth, transforms(), seed=0, cache="ram")
    dataset.cache.available = lambda: int(need * 2)  # fits once (with the margin), not four times
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(UserError, match="x 4 processes on this machine"):
        dataset.prepare_cache()


def test_ram_cache_refuses_workers_that_are_not_forked(synth, monkeypatch):
    import openocr_cli.data.decode_cache as module

    monkeypatch.setattr(module.multiprocessing, "get_start_method", lambda *a, **k: "spawn")
    dataset = TrainDataset(synth, transforms(), seed=0, cache="ram")
    with pytest.raises(UserError, match="'spawn'"):
        dataset.prepare_cache(workers=2)
    dataset.prepare_cache(workers=0)  # one process: fine


def test_disk_cache_refuses_when_the_disk_is_too_small(synth, tmp_path, monkeypatch):
    import openocr_cli.data.decode_cache as module

    monkeypatch.setattr(module.shutil, "disk_usage", lambda path: type("U", (), {"free": 10})())
    dataset = TrainDataset(synth, transforms(), seed=0, cache="disk", cache_folder=tmp_path / "cache")
    with pytest.raises(UserError, match="that disk has 0.0 MB free"):
        dataset.prepare_cache()


def test_dataloader_workers_read_the_disk_cache(synth, tmp_path):
    from torch.utils.data import DataLoader

    from openocr_cli.data.dataset import ResumableSampler

    folder = tmp_path / "cache"
    filler = TrainDataset(synth, transforms(), seed=1, cache="disk", cache_folder=folder)
    for i in range(len(synth)):
        filler.cache.image(synth[i].image)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.npy")}
    assert len(before) == len(synth)

    def batches(dataset):
        sampler = ResumableSampler(len(synth), seed=1)
        loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2)
        return [[t.clone() for t in batch] for batch in loader]

    cached = TrainDataset(synth, transforms(), seed=1, cache="disk", cache_folder=folder)
    for ours, theirs in zip(batches(cached), batches(TrainDataset(synth, transforms(), seed=1))):
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.npy")} == before  # read, never rewritten


def test_dataloader_workers_fill_the_disk_cache_together(synth, tmp_path):
    from torch.utils.data import DataLoader

    folder = tmp_path / "cache"
    dataset = TrainDataset(synth, transforms(), seed=2, cache="disk", cache_folder=folder)
    keys = [(0, i, i % len(synth)) for i in range(2 * len(synth))]
    loader = DataLoader(dataset, batch_size=None, sampler=keys, num_workers=2)
    for _ in loader:
        pass
    assert len(list(folder.rglob("*.npy"))) == len(synth)
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    for sample in synth:
        np.testing.assert_array_equal(dataset.cache.image(sample.image), cv2.imread(str(sample.image)))


def test_the_config_key_and_the_flag_reach_the_settings(tmp_path):
    from openocr_cli.training.settings import TrainSettings, apply_flags

    cfg = cfgmod.load_config()
    assert TrainSettings.from_config(cfg).cache == "none"
    assert TrainSettings.from_config(apply_flags(cfg, cache="disk")).cache == "disk"
    with pytest.raises(UserError, match="Train.dataset.cache"):
        TrainSettings.from_config(apply_flags(cfg, cache="memory"))
    bad = cfgmod.load_config()
    bad["Eval"]["dataset"]["cache"] = "disk"
    with pytest.raises(UserError, match="Eval.dataset.cache"):
        TrainSettings.from_config(bad)


def test_check_data_reads_through_the_cache(synth, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("OPENOCR_DET_HOME", str(tmp_path / "home"))
    data_dir = synth[0].image.parents[1]
    label = data_dir / "mixed.txt"
    code, out, err = cli("check-data", "--data-dir", data_dir, "--label-file", label, "--crops", "10",
                         "--cache", "disk")
    assert code == 0, out + err
    assert len(list((tmp_path / "home" / "decoded").rglob("*.npy"))) > 0
    code, out, err = cli("check-data", "--data-dir", data_dir, "--label-file", label, "--crops", "1",
                         "--cache", "memory")
    assert code == 1 and "--cache" in err and "memory" in err


def test_train_reports_the_cache_in_train_log(tmp_path, monkeypatch):
    import openocr_cli

    monkeypatch.setenv("OPENOCR_DET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENOCR_DET_OFFLINE", "1")
    paths = generate(tmp_path / "data", num_train=4, num_test=1, seed=1, size=(128, 160))
    openocr_cli.train(paths.data_dir, paths.train_label, paths.test_label, weights="none", device="cpu", epochs=1,
                      batch_size=2, workers=0, output=tmp_path / "run", cache="disk",
                      overrides=["Train.dataset.transforms.4.EastRandomCropData.size=[128,128]"])
    log_text = (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
    assert f"decode cache disk at {tmp_path / 'home' / 'decoded'}: 4 images" in log_text
    assert len(list((tmp_path / "home" / "decoded").rglob("*.npy"))) == 4
