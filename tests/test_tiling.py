"""Tiled inference (inference/tiling.py): seams that lose nothing, `auto` leaves small images alone, bounded memory."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from openocr_cli import Detector, UserError
from openocr_cli.inference.tiling import grid, parse_tile
from tests.test_onnx_backend import random_onnx, tiny_model  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def bright(tmp_path_factory):
    """A pointwise 'detector' (sigmoid of the channel mean): its map of a tile is exactly that part of the
    whole image's map, so tiled and untiled boxes must be identical."""
    return tiny_model(tmp_path_factory.mktemp("model") / "bright.onnx")


@pytest.mark.parametrize("h, w, side, overlap", [(512, 704, 256, 64), (100, 3000, 512, 128), (960, 960, 960, 128),
                                                 (1000, 1001, 320, 96)])
def test_tiles_cover_the_image_once_and_share_one_size(h, w, side, overlap):
    owner = np.zeros((h, w), np.int32)
    (th, tw), tiles = grid(h, w, side, overlap)
    assert th <= max(side, -(-h // 32) * 32) and tw <= max(side, -(-w // 32) * 32) and th % 32 == tw % 32 == 0
    for tile in tiles:
        (y0, y1), (x0, x1) = tile.own_y, tile.own_x
        assert tile.y <= y0 < y1 <= tile.y + th and tile.x <= x0 < x1 <= tile.x + tw  # owns only what it saw
        owner[y0:y1, x0:x1] += 1
        assert (tile.y + th <= h or h <= th) and (tile.x + tw <= w or w <= tw)  # never past the edge
    assert (owner == 1).all()
    ys, xs = sorted({t.y for t in tiles}), sorted({t.x for t in tiles})
    for starts, size in ((ys, th), (xs, tw)):  # neighbours share at least `overlap` pixels
        assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))


def bars_image(h, w, bars):
    image = np.zeros((h, w, 3), np.uint8)
    for x0, y0, x1, y1 in bars:
        image[y0:y1, x0:x1] = 255
    return image


def boxes(results):
    return [sorted(tuple(map(tuple, d.points.tolist())) for d in r.detections) for r in results]


def test_a_word_across_one_seam_or_four_tiles_is_one_box_equal_to_the_full_resolution_box(bright):
    # at most 256 px, overlap >= 64: 4 columns of 224 px at x = 0, 160, 320, 480 and 3 rows of 224 at
    # y = 0, 144, 288; cuts between them at x = 192, 352, 512 and y = 184, 328
    bars = [(150, 40, 300, 70),     # crosses the x = 224 seam
            (170, 160, 230, 210),   # crosses the corner where four tiles meet
            (500, 400, 650, 430)]   # inside one tile
    image = bars_image(512, 704, bars)  # multiples of 32 below 960: the normal pass is full resolution
    full = Detector(bright, device="cpu").predict(image)
    tiled = Detector(bright, device="cpu", tile=256, tile_overlap=64).predict(image)
    assert len(full[0].detections) == 3 and boxes(tiled) == boxes(full)
    assert tiled[0].tiling.startswith("12 tiles of 224x224 px") and full[0].tiling is None


def overlapping_pairs(dets, share=0.3):
    """Pairs of boxes overlapping by more than `share` of the smaller one: a box found twice at a seam."""
    import shapely

    polys = [shapely.Polygon(d.points) for d in dets]
    return sum(a.intersection(b).area > share * min(a.area, b.area)
               for i, a in enumerate(polys) for b in polys[i + 1:])


def test_a_page_of_words_in_small_tiles_has_no_box_twice_at_a_seam(bright):
    # 896 x 928 (no resize): tiles of 256 px put about a third of the words across a seam or a corner
    image = bars_image(896, 928, bar_rows(10, 10, 918, 886, (8, 12, 20), 14, length=120, seed=9))
    full = Detector(bright, device="cpu").predict(image)[0]
    tiled = Detector(bright, device="cpu", tile=256, tile_overlap=64).predict(image)[0]
    assert len(full.detections) > 100 and overlapping_pairs(full.detections) == 0
    assert boxes([tiled]) == boxes([full]) and overlapping_pairs(tiled.detections) == 0


def test_auto_leaves_images_the_resize_does_not_shrink_untouched(bright):
    image = bars_image(300, 500, [(20, 20, 200, 60), (250, 100, 480, 140)])
    off = Detector(bright, device="cpu").predict(image)
    auto = Detector(bright, device="cpu", tile="auto").predict(image)
    assert auto[0].tiling is None and [d.points.tolist() for d in auto[0].detections] == \
        [d.points.tolist() for d in off[0].detections] and auto[0].scores == off[0].scores


def test_auto_tiles_a_large_image_whose_text_the_resize_erases(bright):
    # 4 px tall bars on a 2880-wide image: resized to 960 (1/3) they fade below the threshold and vanish
    bars = [(100 + 600 * i, 300 + 500 * i, 400 + 600 * i, 304 + 500 * i) for i in range(4)]
    image = bars_image(2240, 2880, bars)
    off = Detector(bright, device="cpu").predict(image)
    auto = Detector(bright, device="cpu", tile="auto", box_thresh=0.5).predict(image)
    assert len(off[0].detections) < 4
    assert auto[0].tiling is not None and "0.33x" in auto[0].tiling and len(auto[0].detections) == 4


def bar_rows(x0, y0, x1, y1, heights, gap, length=160, seed=0):
    """Rows of "words" (bright bars of the given heights, random lengths) filling a region of an image."""
    rng = np.random.default_rng(seed)
    bars, y = [], y0
    while True:
        h = int(rng.choice(heights))
        if y + h > y1:
            return bars
        x = x0 + int(rng.integers(0, 30))
        while x + length // 2 < x1:
            w = int(rng.integers(length // 2, length))
            bars.append((x, y, min(x + w, x1), y + h))
            x += w + int(rng.integers(gap, 3 * gap))
        y += h + gap + int(rng.integers(0, gap))


# The `auto` rule was designed on mosaics of small renders filling the image (bench_tiles.py); the stand-in model
# here sees bars as a DBNet sees words: a bar h px tall gives a box about 2.5 h tall, and one thinner than about
# 3 px after the resize fades below the threshold. These images differ from the mosaics in size, density, text
# size and layout (blank margins, one dense corner, mixed sizes, pages, photos-sized frames, strips).
SMALL, BIG = (4, 5, 6, 8), (24, 30, 40)
AUTO_CASES = {  # name: (h, w, bars, tiled?)
    "mosaic 2304x3072, small text everywhere": (2304, 3072, bar_rows(0, 0, 3072, 2304, SMALL, 40, seed=1), True),
    "4000x3000, small text in one corner, blank margins": (3000, 4000, bar_rows(3000, 2200, 3800, 2800, (5,), 30,
                                                                               seed=2), True),
    "6000x1500 strip, small and big text mixed": (1500, 6000, bar_rows(100, 100, 5900, 1400, (4, 30), 40, seed=3),
                                                  True),
    "A4 at 200 dpi, body text that survives": (2339, 1654, bar_rows(150, 200, 1500, 2200, BIG, 30, seed=4), False),
    "1280x720 photo-sized, big text": (720, 1280, bar_rows(50, 50, 1230, 670, (20, 30), 30, seed=5), False),
    "8000x6000 poster, sparse big text": (6000, 8000, bar_rows(500, 500, 7500, 5500, (90, 120), 400, 600, seed=6),
                                          False),
    "5000x5000 blank": (5000, 5000, [], False),
}


@pytest.mark.parametrize("name", list(AUTO_CASES))
def test_auto_tiles_exactly_the_images_whose_text_the_resize_loses(bright, name):
    h, w, bars, tiled = AUTO_CASES[name]
    image = bars_image(h, w, bars)
    off = Detector(bright, device="cpu").predict(image)[0]
    auto = Detector(bright, device="cpu", tile="auto").predict(image)[0]
    if tiled:
        assert auto.tiling is not None and "probes" in auto.tiling, auto.tiling
        fixed = Detector(bright, device="cpu", tile=960).predict(image)[0]
        assert boxes([auto]) == boxes([fixed])  # once it tiles, it is --tile 960
        assert len(auto.detections) > 1.5 * len(off.detections)  # and it finds what the resize lost
    else:
        assert auto.tiling is None
        assert boxes([auto]) == boxes([off]) and auto.scores == off.scores


@pytest.mark.parametrize("tile, overlap, words", [("huge", None, "off, auto or a tile side"),
                                                  ("100", None, "multiple of 32"),
                                                  ("256", 200, "less than half the tile side")])
def test_bad_tile_values_are_usage_errors(tile, overlap, words):
    with pytest.raises(UserError, match=words) as info:
        parse_tile(tile, overlap)
    assert info.value.exit_code == 2


def test_predict_reports_the_tiled_images(cli, tmp_path, bright):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "big.png"), bars_image(640, 1280, [(100, 100, 700, 140)]))
    code, out, err = cli("predict", folder, "--onnx-model", bright, "--tile", "512", "--output", tmp_path / "out",
                         "--device", "cpu", "--no-vis")
    assert code == 0, err
    assert "tiled " in err and "tiles of 384x512 px" in err
    record = json.loads((tmp_path / "out" / "tiled.json").read_text())
    assert list(record) == [str(folder / "big.png")] and record[str(folder / "big.png")].startswith("6 tiles")
    code, _, err = cli("predict", folder, "--onnx-model", bright, "--tile", "nope", "--output", tmp_path / "o2")
    assert code == 2 and "--tile 'nope'" in err


def test_predict_without_tiles_says_when_the_resize_shrank_the_text_too_far(cli, tmp_path, bright):
    folder = tmp_path / "imgs"
    folder.mkdir()
    bars = bar_rows(300, 400, 1500, 1200, (6, 9), 30, seed=8)  # a block of lines 6-9 px tall: 2-3 px at 1/3
    cv2.imwrite(str(folder / "scan.png"), bars_image(2240, 2880, bars))
    cv2.imwrite(str(folder / "small.png"), bars_image(300, 400, [(20, 20, 300, 60)]))
    code, out, err = cli("predict", folder, "--onnx-model", bright, "--output", tmp_path / "out", "--device", "cpu",
                         "--no-vis")
    assert code == 0, err
    message = " ".join(err.split())
    assert "1 image(s) hold text the resize shrinks" in message and "scan.png" in message and "(0.33x)" in message
    assert "--tile auto" in message
    assert not (tmp_path / "out" / "tiled.json").exists()


def test_benchmark_times_tiled_inference_with_the_same_hmean(cli, tmp_path, bright):
    cv2.imwrite(str(tmp_path / "scan.png"), bars_image(512, 704, [(150, 40, 300, 70), (170, 160, 230, 210)]))
    regions = [{"transcription": "w", "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}
               for x0, y0, x1, y1 in [(150, 40, 300, 70), (170, 160, 230, 210)]]
    (tmp_path / "label.txt").write_text(f"scan.png\t{json.dumps(regions)}\n")
    hmeans = []
    for extra in ([], ["--tile", "256", "--tile-overlap", "64"]):
        out = tmp_path / f"b{len(hmeans)}.json"
        code, _, err = cli("benchmark", "--onnx-model", bright, "--data-dir", tmp_path, "--label-file",
                           tmp_path / "label.txt", "--runs", "1", "--device", "cpu", "--unclip-ratio", "0.2",
                           "--json", out, *extra)
        assert code == 0, err
        hmeans.append(json.loads(out.read_text())["rows"][0]["hmean"])
    assert hmeans[0] == hmeans[1] == 1.0


def test_eval_records_tiled_images_and_its_report_draws_the_tiles(cli, tmp_path, bright):
    cv2.imwrite(str(tmp_path / "scan.png"), bars_image(512, 704, [(150, 40, 300, 70)]))
    regions = [{"transcription": "w", "points": [[150, 40], [300, 40], [300, 70], [150, 70]]}]
    (tmp_path / "label.txt").write_text(f"scan.png\t{json.dumps(regions)}\n")
    code, _, err = cli("eval", "--onnx-model", bright, "--data-dir", tmp_path, "--label-file", tmp_path / "label.txt",
                       "--device", "cpu", "--tile", "256", "--json", tmp_path / "m.json", "--report", tmp_path / "rep")
    assert code == 0, err
    tiled = json.loads((tmp_path / "m.json").read_text())["tiled"]
    assert list(tiled) == ["scan.png"] and "tiles of 256x256 px" in tiled["scan.png"]
    drawn = cv2.imread(str(next((tmp_path / "rep").rglob("*.jpg"))))
    b, g, r = (drawn[..., i].astype(int) for i in range(3))
    assert ((b < 90) & (g > 150) & (r > 200)).sum() > 100  # dashed yellow tile borders


PEAK = """
import sys, numpy as np
from openocr_cli import Detector
image = (np.random.default_rng(0).integers(0, 255, (1536, 1536, 3))).astype(np.uint8)
tile = sys.argv[2]
det = Detector(sys.argv[1], device="cpu", limit_side_len=1536, tile=None if tile == "off" else tile, threads=1)
det.predict(image)
# VmHWM, not ru_maxrss: the latter keeps the forked test process's peak across exec
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""


@pytest.mark.slow
def test_tiles_bound_peak_memory_by_the_tile_not_the_image(random_onnx):  # noqa: F811
    def peak(tile):
        proc = subprocess.run([sys.executable, "-c", PEAK, str(random_onnx), tile], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.split()[-1])

    full, tiled = peak("off"), peak("512")
    assert tiled < 0.6 * full, (tiled, full)


def blob_map(h, w, count, seed, tall=0):
    """A probability map of `count` random rectangles (some rotated-looking L shapes) and `tall` regions
    running down most of the map, on faint noise."""
    rng = np.random.default_rng(seed)
    prob = (rng.random((h, w)) * 0.2).astype(np.float32)
    for _ in range(count):
        y, x = int(rng.integers(0, h - 30)), int(rng.integers(0, w - 90))
        rh, rw = int(rng.integers(4, 30)), int(rng.integers(6, 90))
        prob[y:y + rh, x:x + rw] = rng.uniform(0.65, 0.95)
        if rng.random() < 0.3:  # an L: a region whose contour is not its box
            prob[y:y + 30, x:x + 5] = 0.9
    for i in range(tall):
        prob[5:h - 5, 40 + 60 * i:46 + 60 * i] = 0.9
    return prob


def as_set(dets):
    return sorted((tuple(map(tuple, d.points.tolist())), round(d.score, 6)) for d in dets)


@pytest.mark.parametrize("rows, tall", [(37, 0), (100, 2), (250, 1)])
def test_stripes_give_the_boxes_of_the_whole_map_once(rows, tall):
    from openocr_cli.inference.tiling import Stripes
    from openocr_cli.postprocess import DBPostProcess

    prob = blob_map(600, 500, 120, seed=rows, tall=tall)
    post = DBPostProcess()
    whole = post(prob, 600, 500)
    stripes = Stripes(post, 600, 500, max_rows=1000)
    for y in range(0, 600, rows):
        stripes.add(prob[y:y + rows], final=y + rows >= 600)
    assert len(whole) > 30 and as_set(stripes.detections) == as_set(whole)


def test_the_candidate_cap_scales_with_the_area_so_a_huge_map_keeps_its_text():
    from openocr_cli.inference.tiling import Stripes
    from openocr_cli.postprocess import DBPostProcess

    # 3,000 separate regions on a 1536 x 2048 map: OpenOCR's one cap of 1,000 contours would see a third of them;
    # the whole map and its stripes each get 1,000 per 960 x 960 of their area
    prob = np.zeros((1536, 2048), np.float32)
    ys, xs = np.mgrid[0:1536:32, 0:2048:32]
    for y, x in zip(ys.ravel()[:3000], xs.ravel()[:3000]):
        prob[y + 8:y + 20, x + 4:x + 28] = 0.9
    post = DBPostProcess()
    assert len(post(prob, 1536, 2048)) == 3000
    assert len(DBPostProcess(max_candidates=250)(prob, 1536, 2048)) == 250 * 1536 * 2048 // (960 * 960) + 1
    stripes = Stripes(post, 1536, 2048, max_rows=4000)
    for y in range(0, 1536, 512):
        stripes.add(prob[y:y + 512], final=y + 512 >= 1536)
    assert len(stripes.detections) == 3000


def test_a_region_taller_than_the_carry_limit_is_cut_and_memory_stays_bounded():
    from openocr_cli.inference.tiling import Stripes
    from openocr_cli.postprocess import DBPostProcess

    prob = np.zeros((1000, 100), np.float32)
    prob[:, 40:50] = 0.9  # one region from top to bottom
    stripes = Stripes(DBPostProcess(), 1000, 100, max_rows=300)
    held = 0
    for y in range(0, 1000, 100):
        stripes.add(prob[y:y + 100], final=y + 100 >= 1000)
        held = max(held, len(stripes.pending))
    assert held <= 300 and 1 < len(stripes.detections) <= 5


def test_huge_files_are_refused_from_their_header_naming_the_limit_and_the_flag(tmp_path):
    from openocr_cli.data.images import ImageLimits, read_image
    from openocr_cli.errors import ImageReadError

    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), np.zeros((600, 20000), np.uint8))  # 12 MP, a few KB on disk
    with pytest.raises(ImageReadError, match=r"12,000,000 pixels, over the limit of 10,000,000 \(--max-pixels"):
        read_image(path, limits=ImageLimits(None, 10_000_000))
    assert read_image(path, limits=ImageLimits(None, 12_000_000)).shape == (600, 20000, 3)


HUGE = """
import sys, numpy as np
from openocr_cli import Detector
det = Detector(sys.argv[1], device="cpu", tile=sys.argv[3], threads=1)
result = det.predict([sys.argv[2]])[0]
print(len(result.detections), [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""


@pytest.mark.slow
def test_a_100_megapixel_scan_runs_in_tiles_with_memory_bounded_by_the_tile(tmp_path, bright):
    # 10,000 x 10,000: the image is 300 MB decoded (OpenCV's PNG decoder briefly holds twice that: about 0.66 GB
    # peak with the interpreter); a float32 map of the whole image was 400 MB more, thresholding it 300 MB more
    # (1.14 GB peak before stripes). Streamed tiles and striped post-processing add a few stripes: 0.72 GB.
    bars = [(200 + 900 * (i % 10), 150 + 950 * (i // 10), 700 + 900 * (i % 10), 180 + 950 * (i // 10))
            for i in range(100)]
    path = tmp_path / "scan.png"
    cv2.imwrite(str(path), bars_image(10_000, 10_000, bars))
    proc = subprocess.run([sys.executable, "-c", HUGE, str(bright), str(path), "960"], capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found, peak_kb = (int(v) for v in proc.stdout.split()[-2:])
    assert found == 100
    assert peak_kb < 900_000, peak_kb


def test_predict_refuses_an_image_over_max_pixels_and_names_the_flag(cli, tmp_path, bright):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "wide.png"), np.zeros((600, 2000), np.uint8))
    cv2.imwrite(str(folder / "small.png"), bars_image(300, 400, [(20, 20, 300, 60)]))
    code, _, err = cli("predict", folder, "--onnx-model", bright, "--output", tmp_path / "out", "--device", "cpu",
                       "--no-vis", "--max-pixels", "1000000")
    message = " ".join(err.split())
    assert code == 1 and "1,200,000 pixels, over the limit of 1,000,000 (--max-pixels" in message
    assert len((tmp_path / "out" / "det_results.txt").read_text().splitlines()) == 1  # the other image ran


def probe_evidence(model, image, resolved):
    """probe_reason on `image` (shrunk 4x by the resize) with the stand-in model, given the normal pass's boxes."""
    import onnxruntime as ort

    from openocr_cli.data.resize import Normalizer
    from openocr_cli.inference.tiling import probe_inputs, probe_reason
    from openocr_cli.postprocess import DBPostProcess, Detection

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    forward = lambda batch: session.run(None, {session.get_inputs()[0].name: batch})[0][:, None]  # noqa: E731
    probes = probe_inputs(image, (image.shape[0] // 4, image.shape[1] // 4),
                          Normalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    return probe_reason(probes, forward, DBPostProcess(box_thresh=0.5),
                        [Detection(np.array(p, np.int32), 0.9) for p in resolved])


def test_small_boxes_inside_a_line_the_normal_pass_resolved_are_pieces_of_big_text(bright):
    """Text far larger than the model's training text: up close a probe sees its pieces as small boxes, while the
    normal pass reads the line whole. Pieces inside a resolved line are no evidence; lines stacked inside one
    downscaled box are merged small lines and still are."""
    image = bars_image(2048, 2048, bar_rows(700, 700, 1400, 1400, (6,), 20, length=120, seed=11))
    assert probe_evidence(bright, image, []) is not None  # alone, the probes say: small text the resize loses
    line = [[650, 690], [1450, 690], [1450, 1000], [650, 1000]]  # 800 x 310 px: 77 px tall after the resize
    assert probe_evidence(bright, image, [line]) is not None  # it holds several probe lines one above the other: merged
    pieces = bars_image(2048, 2048, [(700 + 16 * i, 800, 710 + 16 * i, 810) for i in range(40)])
    assert probe_evidence(bright, pieces, []) is not None
    resolved = [[650, 700], [1450, 700], [1450, 910], [650, 910]]
    thin = [[650, 790], [1450, 790], [1450, 830], [650, 830]]
    assert probe_evidence(bright, pieces, [resolved]) is None  # one line the normal pass resolved (52 px after it)
    assert probe_evidence(bright, pieces, [thin]) is not None  # 10 px after the resize: not resolved
