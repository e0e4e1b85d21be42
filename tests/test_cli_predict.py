import json

import pytest
import torch

from tests.conftest import run_cli, write_image


def read_results(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(p, json.loads(j)) for p, j in (line.split("\t") for line in lines)]


def test_predict_writes_results_and_vis(cli, tmp_path, image_dir, constant_ckpt):
    out = tmp_path / "out"
    code, stdout, err = cli("predict", str(image_dir), "--weights", constant_ckpt, "--output", out, "--device", "cpu")
    assert code == 0, err
    results = read_results(out / "det_results.txt")
    assert [p for p, _ in results] == [str(image_dir / n) for n in ("a.png", "b.jpg", "c.png")]
    sizes = {"a.png": (96, 128), "b.jpg": (64, 100), "c.png": (96, 128)}
    for path, boxes in results:
        h, w = sizes[path.rsplit("/", 1)[1]]
        # a constant 0.9 map is one region covering the image; unclipped and clipped to [0, size]
        assert len(boxes) == 1
        assert boxes[0]["points"] == [[0, 0], [w, 0], [w, h], [0, h]]
        assert boxes[0]["score"] == pytest.approx(0.9, abs=1e-4)
    assert sorted(p.name for p in (out / "vis").iterdir()) == ["a.png", "b.jpg", "c.png"]
    assert "Results saved to" in stdout and "boxes" in stdout and "inference ms/img" in stdout


def test_predict_batching_gives_same_results(cli, tmp_path, image_dir, random_ckpt):
    write_image(image_dir / "d.png", 300, 200, 3)
    outs = []
    for bs in (1, 3):
        out = tmp_path / f"bs{bs}"
        code, _, err = cli("predict", image_dir, "-w", random_ckpt, "--output", out, "--device", "cpu",
                           "--batch-size", bs, "--no-vis", "--box-thresh", "0", "--thresh", "0.2")
        assert code == 0, err
        assert not (out / "vis").exists()
        outs.append((out / "det_results.txt").read_text())
    assert outs[0] == outs[1]
    assert len(outs[0].splitlines()) == 4


def test_predict_poly_and_overrides(cli, tmp_path, image_dir, constant_ckpt):
    out = tmp_path / "out"
    code, _, err = cli("predict", str(image_dir / "a.png"), "-w", constant_ckpt, "--output", out,
                       "--device", "cpu", "--box-type", "poly", "--limit-side-len", "64", "--no-vis")
    assert code == 0, err
    [(path, boxes)] = read_results(out / "det_results.txt")
    assert len(boxes) == 1 and len(boxes[0]["points"]) >= 4
    code, _, _ = cli("predict", str(image_dir / "a.png"), "-w", constant_ckpt, "--output", out, "--device", "cpu",
                     "--box-thresh", "0.95", "--no-vis")
    assert code == 0 and read_results(out / "det_results.txt")[0][1] == []


def test_corrupt_image_is_skipped_listed_and_exits_1(cli, tmp_path, image_dir, constant_ckpt):
    (image_dir / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    code, _, err = cli("predict", image_dir, "-w", constant_ckpt, "--output", out, "--device", "cpu", "--no-vis")
    assert code == 1
    assert "broken.png" in err and "could not be read" in err
    assert len(read_results(out / "det_results.txt")) == 3


def test_recursive_and_glob_sources(cli, tmp_path, image_dir, constant_ckpt):
    write_image(image_dir / "sub" / "deep.png", 40, 40)
    out = tmp_path / "out"
    code, _, err = cli("predict", image_dir, "-w", constant_ckpt, "--output", out, "--device", "cpu", "--no-vis")
    assert code == 0 and len(read_results(out / "det_results.txt")) == 3
    code, _, err = cli("predict", image_dir, "-r", "-w", constant_ckpt, "--output", out, "--device", "cpu", "--no-vis")
    assert code == 0 and len(read_results(out / "det_results.txt")) == 4
    code, _, err = cli("predict", f"{image_dir}/*.png", "-w", constant_ckpt, "--output", out, "--device", "cpu",
                       "--no-vis")
    assert code == 0 and [p.rsplit("/", 1)[1] for p, _ in read_results(out / "det_results.txt")] == ["a.png", "c.png"]


@pytest.mark.parametrize("case, message", [
    ("missing_source", "does not exist"),
    ("empty_folder", "contains no images"),
    ("missing_weights", "does not exist"),
    ("junk_weights", "not a readable PyTorch checkpoint"),
    ("wrong_arch", "none of its keys match"),
    ("mismatched_weights", "does not match the RepViT-DB model"),
])
def test_bad_input_gives_clear_error(cli, tmp_path, image_dir, constant_ckpt, case, message):
    source, weights = str(image_dir), str(constant_ckpt)
    if case == "missing_source":
        source = str(tmp_path / "nope")
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        source = str(tmp_path / "empty")
    elif case == "missing_weights":
        weights = str(tmp_path / "none.pth")
    elif case == "junk_weights":
        weights = str(tmp_path / "junk.pth")
        (tmp_path / "junk.pth").write_text("hello")
    elif case == "wrong_arch":
        weights = str(tmp_path / "resnet.pth")
        torch.save({"fc.weight": torch.zeros(3, 3)}, weights)
    else:
        weights = str(tmp_path / "partial.pth")
        sd = torch.load(constant_ckpt, weights_only=True)["state_dict"]
        sd.pop("head.thresh.conv3.bias")
        torch.save(sd, weights)
    code, out, err = cli("predict", source, "-w", weights, "--output", tmp_path / "o", "--device", "cpu")
    assert code == 1
    assert message in " ".join(err.split())
    assert "Traceback" not in err + out


def test_unknown_flag_values_are_usage_errors(cli, image_dir, constant_ckpt):
    for args in (["--score-mode", "medium"], ["--box-type", "circle"], ["--limit-type", "avg"],
                 ["--batch-size", "0"], ["--thresh", "1.5"], ["--device", "tpu"]):
        code, out, err = cli("predict", image_dir, "-w", constant_ckpt, *args)
        assert code == 2, args
        assert "Traceback" not in err + out


def test_non_strict_loads_partial_weights(cli, tmp_path, image_dir, constant_ckpt):
    sd = torch.load(constant_ckpt, weights_only=True)["state_dict"]
    sd.pop("head.thresh.conv3.bias")
    partial = tmp_path / "partial.pth"
    torch.save(sd, partial)
    code, _, err = cli("predict", image_dir, "-w", partial, "--non-strict", "--output", tmp_path / "o",
                       "--device", "cpu", "--no-vis")
    assert code == 0, err
    assert "head.thresh.conv3.bias" in err


def test_module_entry_point_help_and_version(tmp_path):
    res = run_cli("predict", "--help")
    assert res.returncode == 0 and "Examples" in res.stdout and "--box-thresh" in res.stdout
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("openocr-det ")
    res = run_cli("predict", str(tmp_path / "missing.png"), "--device", "cpu")
    assert res.returncode == 1 and "does not exist" in res.stderr and "Traceback" not in res.stderr
