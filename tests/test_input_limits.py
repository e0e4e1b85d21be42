"""Inputs that used to abort a run or forge output (issue 35): a huge file among many, names with TAB or
line breaks, rrc zips with huge members. Each fails alone, by name; the rest of the run is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_image
from tests.test_onnx_backend import tiny_model

# VmHWM is this process's own peak (ru_maxrss would carry the forking parent's over exec)
PEAK_REPORT = ("import atexit, re, sys; atexit.register(lambda: print('PEAK_KB', re.search(r'VmHWM:\\s+(\\d+)', "
               "open('/proc/self/status').read()).group(1), file=sys.stderr)); "
               "from openocr_cli.cli.app import main; sys.argv = ['openocr-det'] + sys.argv[1:]; main()")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("limits-model") / "bright.onnx")


def run_measured(*args: str) -> tuple[int, str, str, float]:
    """The CLI in a fresh process: (exit code, stdout, stderr, peak RSS in MB)."""
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", COLUMNS="200")
    proc = subprocess.run([sys.executable, "-c", PEAK_REPORT, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_KB")]
    return proc.returncode, proc.stdout, proc.stderr, int(peak[-1].split()[1]) / 1024 if peak else float("nan")


@pytest.fixture
def folder_with_a_2gib_file(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    for i in range(4):
        write_image(folder / f"p{i}.png", 96, 128, i)
    with open(folder / "huge.png", "wb") as f:  # sparse: 2 GiB to read, no disk used
        f.truncate(2 * 1024 ** 3)
    return folder


def test_D4_a_2gib_file_fails_alone_by_name_without_being_read(model, tmp_path, folder_with_a_2gib_file):
    out = tmp_path / "out"
    code, stdout, err, peak_mb = run_measured("predict", str(folder_with_a_2gib_file), "--onnx-model", str(model),
                                              "--output", str(out), "--no-vis")
    assert code == 1, err
    assert "huge.png" in err and "--max-image-mb" in err and "Traceback" not in err
    lines = (out / "det_results.txt").read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in lines) == [f"p{i}.png" for i in range(4)]
    assert peak_mb < 1024, peak_mb


def test_D4_detector_predict_raises_the_documented_error_type(model, folder_with_a_2gib_file):
    from openocr_cli import Detector
    from openocr_cli.errors import ImageReadError

    detector = Detector(str(model))
    with pytest.raises(ImageReadError, match="huge.png"):
        detector.predict([str(folder_with_a_2gib_file / "huge.png")])
    results = detector.predict(sorted(map(str, folder_with_a_2gib_file.iterdir())), on_error="skip")
    assert [r.error is None for r in results] == [False, True, True, True, True]


def test_D4_an_image_opencv_refuses_is_an_image_read_error_not_cv2_error():
    import numpy as np

    from openocr_cli.data.images import decode_image_bytes
    from openocr_cli.errors import ImageReadError

    header = np.frombuffer(b"P5\n100000 100000\n255\n", np.uint8)  # a PGM larger than OpenCV will allocate
    with pytest.raises(ImageReadError, match="big.pgm"):
        decode_image_bytes(np.concatenate([header, np.zeros(64, np.uint8)]), "big.pgm")


# -- D8: a name with a TAB or a line break cannot forge a record --------------------------------------------------
def test_D8_a_tab_or_newline_in_a_file_name_is_refused_not_written(cli, model, tmp_path):
    folder = tmp_path / "imgs"
    write_image(folder / "ok.png")
    forged = 'fake.png\t[{"points": [[0, 0], [9, 0], [9, 9]], "score": 1.0}]\nz.png'
    write_image(folder / forged)
    out = tmp_path / "out"
    code, _, err = cli("predict", folder, "--onnx-model", model, "--output", out, "--no-vis")
    assert code == 1 and "TAB or line break" in err, err
    lines = (out / "det_results.txt").read_text().splitlines()
    assert [Path(line.split("\t")[0]).name for line in lines] == ["ok.png"]
    code, _, err = cli("predict", folder, "--onnx-model", model, "--output", tmp_path / "j", "--no-vis",
                       "--format", "jsonl")
    assert code == 0, err  # JSON escapes the name: the record is safe
    names = [json.loads(line)["image"] for line in (tmp_path / "j" / "det_results.jsonl").read_text().splitlines()]
    assert str(folder / forged) in names


def test_D8_convert_from_ppocr_refuses_a_line_a_tab_in_a_name_would_forge(cli, tmp_path):
    source = tmp_path / "det_results.txt"
    source.write_text('a.png\t[{"points": [[0, 0], [9, 0], [9, 9], [0, 9]]}]\t[]\n'
                      'b\rc.png\t[]\nok.png\t[]\n', encoding="utf-8")
    code, _, err = cli("convert", source, "--from", "ppocr", "--to", "coco", "--output", tmp_path / "coco")
    assert code != 0 and f"{source}:1" in err and f"{source}:2" in err, err
    assert "more than one TAB" in err


# -- D10: an rrc zip's members are size-capped -------------------------------------------------------------------
def test_D10_an_rrc_zip_bomb_member_is_refused_without_being_read_whole(tmp_path):
    import zipfile

    bomb = tmp_path / "submit.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("res_a.txt", "w") as member:  # 200 MB of one digit: about 200 KB compressed
            for _ in range(200):
                member.write(b"0" * 1024 ** 2)
        archive.writestr("res_b.txt", "1,1,9,1,9,9,1,9\n")
    assert bomb.stat().st_size < 1024 ** 2
    code, _, err, peak_mb = run_measured("convert", str(bomb), "--from", "rrc", "--to", "ppocr", "--output",
                                         str(tmp_path / "labels.txt"))
    assert "res_a.txt" in err and "over the 16 MB" in err and "Traceback" not in err, err
    assert peak_mb < 300, peak_mb


# -- D6: numeric ranges checked in one place --------------------------------------------------------------------
@pytest.mark.parametrize("flag, value, words", [("--unclip-ratio", "1e9", "--unclip-ratio"),
                                                ("--limit-side-len", "100000", "1 to 8192 pixels")])
def test_D6_a_setting_out_of_range_is_exit_2_in_the_cli(cli, model, tmp_path, flag, value, words):
    write_image(tmp_path / "a.png")
    code, _, err = cli("predict", tmp_path / "a.png", "--onnx-model", model, "--output", tmp_path / "o", flag, value)
    assert code == 2 and words in " ".join(err.split()) and "Traceback" not in err, err


def test_D6_a_setting_out_of_range_is_a_value_error_in_the_api(model):
    from openocr_cli import Detector

    with pytest.raises(ValueError, match="unclip_ratio"):
        Detector(str(model), unclip_ratio=1e9)
    with pytest.raises(ValueError, match="8192"):
        Detector(str(model), limit_side_len=10 ** 6)


# -- D15: the CLI's file-size and pixel limits, checked before reading --------------------------------------------
def test_D15_images_over_the_pixel_or_file_size_limit_are_skipped_by_name_before_reading(model, tmp_path):
    from tests.test_serve import png_header_only

    folder = tmp_path / "imgs"
    write_image(folder / "ok.png", 96, 128)
    (folder / "huge.png").write_bytes(png_header_only(20000, 20000))  # 400 M pixels declared in a few KB
    out = tmp_path / "out"
    code, _, err, peak_mb = run_measured("predict", str(folder), "--onnx-model", str(model), "--output", str(out),
                                         "--no-vis")
    flat = " ".join(err.split())
    assert code == 1 and "huge.png is 400,000,000 pixels" in flat and "--max-pixels" in flat, err
    assert peak_mb < 500, peak_mb
    assert [Path(line.split("\t")[0]).name for line in (out / "det_results.txt").read_text().splitlines()] == \
        ["ok.png"]
    code, _, err, _ = run_measured("predict", str(folder / "ok.png"), "--onnx-model", str(model), "--output",
                                   str(tmp_path / "o2"), "--max-pixels", "1000")
    assert code == 1 and "128x96 = 12,288 pixels, over the limit of 1,000 (--max-pixels)" in " ".join(err.split())
    code, _, err, _ = run_measured("predict", str(folder / "ok.png"), "--onnx-model", str(model), "--output",
                                   str(tmp_path / "o3"), "--max-image-mb", "0.001")
    assert code == 1 and "(--max-image-mb); it was not read" in " ".join(err.split()), err
