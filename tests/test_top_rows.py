"""Decoding only an image's top rows: the rows asked for equal a full decode's, or the file is decoded whole."""

from __future__ import annotations

import io
import random
import threading
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from openocr_cli import config as cfgmod
from openocr_cli.data.augment import CUBIC_REACH, rectified_crop
from openocr_cli.data.dataset import TrainDataset, validate_training_labels
from openocr_cli.data.synth import generate
from openocr_cli.data.top_rows import TopRows
from openocr_cli.data.transforms import DecodeImage

SAMPLING = {"4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
            "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, "4:1:1": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411,
            "4:4:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440}


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour gradients with noise and sharp edges: every chroma row differs from its neighbours."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) % 97) * 2], -1)
    return np.clip(base + rng.integers(-40, 40, (height, width, 3)), 0, 255).astype(np.uint8)


def encode(image: np.ndarray, *params: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92, *params])
    assert ok
    return data.tobytes()


def full_decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.parametrize("sampling", sorted(SAMPLING))
@pytest.mark.parametrize("extra", [(), (cv2.IMWRITE_JPEG_RST_INTERVAL, 3), (cv2.IMWRITE_JPEG_OPTIMIZE, 1)],
                         ids=["plain", "restart-markers", "optimized-huffman"])
def test_top_rows_equal_the_full_decode(sampling, extra, capfd):
    assert threading.active_count() == 1  # the partial path runs only where no other thread could print
    data = encode(photo(203, 157, 1), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SAMPLING[sampling], *extra)
    full, lazy = full_decode(data), TopRows.parse(data)
    assert lazy is not None and lazy.shape == full.shape and lazy.dtype == full.dtype
    partial_seen = False
    for count in [1, 7, 8, 9, 15, 16, 17, 31, 33, 100, 150, 170, 186, 187, 188, 202, 203, 500]:
        rows = lazy.rows(count)
        partial_seen |= rows.shape[0] < full.shape[0]
        assert rows.shape[0] >= min(count, full.shape[0]) and rows.shape[1:] == full.shape[1:]
        np.testing.assert_array_equal(rows[:count], full[:count], err_msg=f"{sampling}, {count} rows")
    assert partial_seen
    np.testing.assert_array_equal(lazy.full(), full)
    assert capfd.readouterr().err == ""  # the decoder's "extraneous bytes" warning is not shown


def test_grey_jpeg_rows_come_out_as_bgr():
    grey = photo(120, 90, 2)[:, :, 0]
    data = encode(grey)
    lazy = TopRows.parse(data)
    assert lazy is not None and lazy.shape == (120, 90, 3)
    rows = lazy.rows(40)
    assert rows.shape[0] < 120
    np.testing.assert_array_equal(rows[:40], full_decode(data)[:40])


def exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(photo(64, 48, 3)).save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def png(image: np.ndarray, mode: str | None = None, **options) -> bytes:
    buffer = io.BytesIO()
    picture = Image.fromarray(image[:, :, ::-1] if image.ndim == 3 else image)
    (picture.quantize(32) if mode == "P" else picture.convert(mode) if mode else picture).save(buffer, "PNG", **options)
    return buffer.getvalue()


PNG_KINDS = {
    "RGB": lambda image: png(image),
    "grey": lambda image: png(image, "L"),
    "palette": lambda image: png(image, "P"),
    "RGBA": lambda image: png(image, "RGBA"),
    "grey+alpha": lambda image: png(image, "LA"),
    "RGB+tRNS": lambda image: png(image, transparency=(0, 0, 0)),
    "16-bit": lambda image: cv2.imencode(".png", image.astype(np.uint16) * 257 + 3)[1].tobytes(),
    "1-bit": lambda image: png(image, "1"),
    "OpenCV, level 9": lambda image: cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes(),
}


@pytest.mark.parametrize("kind", sorted(PNG_KINDS))
def test_png_top_rows_equal_the_full_decode(kind):
    data = PNG_KINDS[kind](photo(150, 97, 8))
    full, lazy = full_decode(data), TopRows.parse(data)
    assert lazy is not None and lazy.shape == full.shape
    for count in [1, 2, 57, 119, 149, 150, 400]:
        rows = lazy.rows(count)
        assert rows.shape[0] == min(count, 150)  # exactly the rows asked for
        np.testing.assert_array_equal(rows, full[:count], err_msg=f"{kind}, {count} rows")
    np.testing.assert_array_equal(lazy.full(), full)


def test_rows_past_the_end_of_a_truncated_png_are_an_error_as_in_opencv():
    data = png(photo(150, 97, 8))
    cut = data[:len(data) // 2]
    assert full_decode(cut) is None
    with pytest.raises(ValueError, match="not a decodable image"):
        TopRows.parse(cut).rows(140)


def test_files_that_must_be_decoded_whole_are_recognised():
    image = photo(64, 48, 4)
    assert TopRows.parse(encode(image, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)) is None
    interlaced = bytearray(png(image))
    interlaced[28] = 1  # IHDR interlace method: Adam7 stores the rows in seven passes
    interlaced[29:33] = zlib.crc32(bytes(interlaced[12:29])).to_bytes(4, "big")
    assert TopRows.parse(bytes(interlaced)) is None
    exif = Image.Exif()
    exif[0x0112] = 6
    assert TopRows.parse(png(image, exif=exif.tobytes())) is None  # OpenCV may turn it
    assert TopRows.parse(cv2.imencode(".bmp", image)[1].tobytes()) is None
    assert TopRows.parse(b"") is None and TopRows.parse(b"\xff\xd8\xff") is None
    assert TopRows.parse(encode(image)[:40]) is None  # cut before the frame header
    assert TopRows.parse(exif_jpeg(1)) is not None  # upright: decoded as stored
    for turned in (3, 6, 8):  # OpenCV turns these while decoding, so rows are not the file's rows
        assert TopRows.parse(exif_jpeg(turned)) is None


def test_decode_image_defers_only_marked_samples():
    data = encode(photo(48, 40, 5))
    op = DecodeImage()
    assert isinstance(op({"image": data, "decode_later": True})["image"], TopRows)
    assert isinstance(op({"image": data})["image"], np.ndarray)
    progressive = encode(photo(48, 40, 5), cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert isinstance(op({"image": progressive, "decode_later": True})["image"], np.ndarray)
    for other in (DecodeImage(img_mode="RGB"), DecodeImage(channel_first=True), DecodeImage(ignore_orientation=True)):
        assert isinstance(other({"image": data, "decode_later": True})["image"], np.ndarray)


def test_word_crops_from_top_rows_equal_crops_from_the_full_image():
    data = encode(photo(240, 320, 6))
    full, lazy = full_decode(data), TopRows.parse(data)
    rng = np.random.default_rng(0)
    for _ in range(40):
        x, y = rng.uniform(-5, 300), rng.uniform(-5, 230)
        w, h, angle = rng.uniform(4, 60), rng.uniform(4, 30), rng.uniform(-0.6, 0.6)
        c, s = np.cos(angle), np.sin(angle)
        quad = np.float32([[x, y], [x + w * c, y + w * s], [x + w * c - h * s, y + w * s + h * c],
                           [x - h * s, y + h * c]])
        rows = lazy.rows(int(np.ceil(quad[:, 1].max())) + CUBIC_REACH)
        np.testing.assert_array_equal(rectified_crop(rows, quad), rectified_crop(full, quad))


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_training_samples_are_the_same_with_deferred_decoding(tmp_path, suffix, monkeypatch):
    """Training and extra images decoded only down to the rows used: every sample equal bit for bit."""
    synth = generate(tmp_path, num_train=6, num_test=0, seed=3, size=(200, 280))
    label = synth.train_label
    if suffix == ".jpg":
        lines = []
        for line in synth.train_label.read_text(encoding="utf-8").splitlines():
            rel, _, regions = line.partition("\t")
            jpg = rel.replace(".png", ".jpg")
            cv2.imwrite(str(tmp_path / jpg), cv2.imread(str(tmp_path / rel)), [cv2.IMWRITE_JPEG_QUALITY, 90])
            lines.append(f"{jpg}\t{regions}\n")
        label = tmp_path / "jpg_label.txt"
        label.write_text("".join(lines), encoding="utf-8")
    cfg = cfgmod.apply_overrides(cfgmod.load_config(), ["Train.dataset.transforms.4.EastRandomCropData.size=[96,96]"])
    samples = validate_training_labels([label], tmp_path).samples
    deferred = TrainDataset(samples, cfg["Train"]["dataset"]["transforms"], seed=5)
    eager = TrainDataset(samples, cfg["Train"]["dataset"]["transforms"], seed=5)
    for op in eager.load_ops:
        if isinstance(op, DecodeImage):
            op.can_defer = False
    decoded_rows = []
    original = TopRows.rows

    def recorded(self, count):
        rows = original(self, count)
        decoded_rows.append(rows.shape[0] / self.shape[0])
        return rows

    monkeypatch.setattr(TopRows, "rows", recorded)
    for position in range(60):
        key = (1, position, position % len(samples))
        for mine, theirs in zip(deferred[key], eager[key]):
            np.testing.assert_array_equal(mine, theirs)
    assert len(decoded_rows) > 60  # the training images were deferred too, not only the extra ones
    assert min(decoded_rows) < 1.0  # and some were read only partly


class _RowsDecoded(torch.utils.data.Dataset):
    def __init__(self, data: bytes):
        self.data = data

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> int:
        return TopRows.parse(self.data).rows(20).shape[0]


def test_loader_workers_decode_only_the_top_rows_and_other_threads_do_not():
    """A data-loader worker runs a queue feeder thread beside its main thread: partial decoding stays on."""
    data = encode(photo(160, 64, 7))
    loader = torch.utils.data.DataLoader(_RowsDecoded(data), batch_size=1, num_workers=1)
    assert [int(batch) for batch in loader] == [48] * 6  # 20 rows: two 16-row bands and one beyond, not 160
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)  # e.g. a progress display in the main process
    other.start()
    try:
        assert TopRows.parse(data).rows(20).shape[0] == 160
    finally:
        stop.set()
        other.join()


def test_copypaste_decodes_the_whole_extra_image_for_a_concave_word():
    """A concave quad's perspective warp reads rows far below it: the crop must come from the full image."""
    from openocr_cli.data.augment import CopyPaste, _convex

    concave = np.float32([[10, 10], [60, 10], [30, 16], [10, 30]])
    assert not _convex(concave) and _convex(np.float32([[10, 10], [60, 10], [60, 30], [10, 30]]))
    data = encode(photo(240, 200, 9))
    outputs = []
    for extra_image in (TopRows.parse(data), full_decode(data)):
        np.random.seed(0)
        random.seed(0)
        sample = {"image": np.zeros((120, 160, 3), np.uint8), "polys": np.zeros((0, 4, 2)), "texts": [],
                  "ignore_tags": np.zeros(0, bool),
                  "ext_data": [{"image": extra_image, "polys": concave[None], "texts": ["w"],
                                "ignore_tags": np.zeros(1, bool)}]}
        outputs.append(CopyPaste()(sample)["image"])
    assert outputs[0].any()
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_without_isal_pngs_are_decoded_whole(monkeypatch):
    from openocr_cli.data import top_rows

    data = png(photo(40, 30, 10))
    assert TopRows.parse(data) is not None
    monkeypatch.setattr(top_rows, "_isal_zlib", lambda: None)
    assert TopRows.parse(data) is None
    assert isinstance(DecodeImage()({"image": data, "decode_later": True})["image"], np.ndarray)
