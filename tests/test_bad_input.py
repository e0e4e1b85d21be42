"""Bad input found by a hostile-user sweep: each gets a clear error naming its flag, file or line, before any long
work, and nothing is overwritten silently. Typos of several orders of magnitude (1e20) included."""

from __future__ import annotations

import os

import pytest

from openocr_cli import config as cfgmod
from openocr_cli.data.labels import read_label_files
from openocr_cli.data.synth import generate
from openocr_cli.errors import UserError
from openocr_cli.training.settings import TrainSettings
from tests.test_train import train_args


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synth"), num_train=4, num_test=2, seed=5, size=(64, 96))


def flat(text: str) -> str:
    return " ".join(text.split())


def test_training_counts_a_typo_could_blow_up_are_refused_by_flag_and_config_key(cli, synth, tmp_path):
    out = tmp_path / "run"
    for flag, value in (("--seed", "99999999999999999999"), ("--batch-size", "99999999999999999999"),
                        ("--workers", "100000"), ("--epochs", "99999999999")):
        code, _, err = cli(*train_args(synth, out, flag, value))
        assert code == 2 and flag in flat(err) and "Traceback" not in err, (flag, err)
    for override, message in (("Global.seed=1e20", r"Global.seed is 1e\+20; it must be a whole number from 0 to "
                                                    "4,294,967,295"),
                              ("Train.loader.batch_size_per_card=.inf", "Train.loader.batch_size_per_card is inf")):
        with pytest.raises(UserError, match=message):
            TrainSettings.from_config(cfgmod.apply_overrides(cfgmod.load_config(), [override]))
    assert not out.exists()


def test_more_processes_than_cpus_are_refused_before_any_is_started(cli, synth, tmp_path):
    many = (os.cpu_count() or 1) + 1
    code, _, err = cli(*train_args(synth, tmp_path / "run", "--nproc-per-node", str(many)))
    assert code == 2 and f"--nproc-per-node {many} is more processes than this machine has CPUs" in flat(err)


def test_a_training_output_that_is_a_file_is_named_before_the_data_is_read(cli, synth, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    for out in (afile, afile / "run"):
        code, stdout, err = cli(*train_args(synth, out))
        assert code == 2 and f"{afile} is a file, not a folder" in flat(err) and "Traceback" not in err
        assert "usable images" not in stdout  # refused before check-data's table
    assert afile.read_text() == "keep me"


def test_inference_sizes_threads_and_normalisation_have_bounds(cli, random_ckpt, tmp_path):
    code, _, err = cli("predict", tmp_path, "-w", random_ckpt, "--threads", "100000", "--no-vis")
    assert code == 2 and "--threads" in flat(err) and "Traceback" not in err
    code, _, err = cli("predict", tmp_path, "-w", random_ckpt, "--std", "nan,1,1")
    assert code == 2 and "finite numbers" in flat(err)
    code, _, err = cli("predict", tmp_path, "-w", random_ckpt, "--unclip-ratio", "50")
    assert code == 2 and "--unclip-ratio" in flat(err)
    code, _, err = cli("eval", "-w", random_ckpt, "--label-file", tmp_path / "x.txt", "--sizes", "640,99999999")
    assert code == 2 and "'99999999' is not a side length from 32 to 8192" in flat(err)
    code, _, err = cli("export", "-w", random_ckpt, "--static", "--size", "64000x64000")
    assert code == 2 and "from 32 to 8192" in flat(err)
    code, _, err = cli("export", "-w", random_ckpt, "--opset", "99", "--output", tmp_path / "m.onnx")
    assert code == 2 and "--opset 99: the installed onnx" in flat(err) and not (tmp_path / "m.onnx").exists()


def test_a_tune_grid_too_fine_is_refused_at_once_without_building_it(cli, random_ckpt, tmp_path):
    code, _, err = cli("eval", "-w", random_ckpt, "--label-file", tmp_path / "x.txt",
                       "--tune", "thresh=0.1:0.2:1e-12")
    assert code == 2 and "use a larger STEP (at most 200 values per setting)" in flat(err)
    code, _, err = cli("eval", "-w", random_ckpt, "--label-file", tmp_path / "x.txt", "--tune", "unclip_ratio=1:20:1")
    assert code == 2 and "above 0 and at most 10" in flat(err)


def test_export_never_replaces_a_file_silently(cli, random_ckpt, tmp_path):
    target = tmp_path / "notes.onnx"
    target.write_text("my notes")
    args = ("export", "-w", random_ckpt, "--static", "--size", "64x64", "--no-fuse", "--output", target)
    code, _, err = cli(*args)
    assert code == 2 and f"--output {target} already exists; pass --overwrite" in flat(err)
    assert target.read_text() == "my notes"
    code, _, err = cli(*args, "--overwrite")
    assert code == 0, err
    assert target.read_bytes()[:8] != b"my notes"
    xml = tmp_path / "ir.xml"
    xml.with_suffix(".bin").write_bytes(b"weights of another model")
    code, _, err = cli("export", "-w", random_ckpt, "--format", "openvino", "--output", xml)
    assert code == 2 and "ir.bin already exists" in flat(err) and not xml.exists()


def test_label_files_with_a_bom_utf16_huge_coordinates_or_a_folder(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    line = 'a.png\t[{"transcription": "x", "points": [[1, 2], [30, 2], [30, 9], [1, 9]]}]\n'
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + line.encode())
    labels = read_label_files([bom], tmp_path)
    assert not labels.problems and [s.image.name for s in labels.samples] == ["a.png"]
    utf16 = tmp_path / "utf16.txt"
    utf16.write_text(line, encoding="utf-16")
    with pytest.raises(UserError, match=r"utf16.txt is UTF-16 text .* Save it as UTF-8"):
        read_label_files([utf16], tmp_path)
    huge = tmp_path / "huge.txt"
    huge.write_text(line + line.replace("[30, 9]", "[99999999999999999999999, 9]"))
    labels = read_label_files([huge], tmp_path)
    assert len(labels.samples) == 1 and [(p.line, "beyond 1,000,000 pixels" in p.reason) for p in labels.problems] \
        == [(2, True)]
    with pytest.raises(UserError, match=f"label file {tmp_path} is a folder, not a file"):
        read_label_files([tmp_path], tmp_path)


def test_output_paths_that_cannot_be_written_are_refused_before_the_evaluation(cli, constant_ckpt, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    labels = tmp_path / "labels.txt"
    labels.write_text("")  # never read: the outputs are checked first
    for extra, message in ((["--json", afile / "m.json"], f"--json {afile / 'm.json'} cannot be created: {afile} is "
                                                          "a file, not a folder"),
                           (["--json", tmp_path], f"--json {tmp_path} is a folder"),
                           (["--report", afile], f"--report {afile} is a file, not a folder")):
        code, _, err = cli("eval", "-w", constant_ckpt, "--label-file", labels, *extra)
        assert code == 2 and message in flat(err), err
    code, _, err = cli("benchmark", "-w", constant_ckpt, "--images", tmp_path, "--json", afile / "b.json")
    assert code == 2 and "--json" in flat(err) and "is a file, not a folder" in flat(err)


def test_check_data_on_a_label_file_without_lines_exits_1_and_says_why(cli, synth, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    code, stdout, err = cli("check-data", "--data-dir", synth.data_dir, "--label-file", empty, "--crops", "0")
    assert code == 1 and "The label files list no image (empty, or blank lines only)" in flat(stdout + err)
    assert "listed below" not in flat(stdout + err)


def test_predict_does_not_replace_results_it_did_not_write(cli, constant_ckpt, tmp_path):
    from tests.conftest import write_image

    write_image(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "det_results.txt").write_text("precious results\n")
    args = ("predict", tmp_path / "in", "-w", constant_ckpt, "--no-vis", "--output", out)
    code, _, err = cli(*args)
    assert code == 2 and "was not written by a recorded run" in flat(err) and "--overwrite" in flat(err)
    assert (out / "det_results.txt").read_text() == "precious results\n"
    assert cli(*args, "--overwrite")[0] == 0 and cli(*args)[0] == 0  # then a recorded, finished run: replaced
    assert "a.png" in (out / "det_results.txt").read_text()


def test_a_refused_post_processing_value_names_where_it_came_from(cli, constant_ckpt, tmp_path):
    import yaml

    from openocr_cli import config as cfgmod
    from tests.conftest import write_image

    write_image(tmp_path / "a.png")
    cfg = cfgmod.load_config()
    cfg["PostProcess"]["thresh"] = "abc"
    config = tmp_path / "my.yml"
    config.write_text(yaml.safe_dump(cfg))
    base = ("predict", tmp_path, "-w", constant_ckpt, "--no-vis")
    code, _, err = cli(*base, "-c", config)
    assert code == 2 and f"got 'abc' (PostProcess.thresh, from the config {config})" in flat(err), err
    code, _, err = cli(*base, "-o", "PostProcess.unclip_ratio=50")
    assert code == 2 and "at most 10, got 50 (PostProcess.unclip_ratio, from -o)" in flat(err), err


def test_a_misspelt_device_in_a_config_key_is_named_before_the_data_is_read(cli, synth, tmp_path):
    args = train_args(synth, tmp_path / "run", "--epochs", "1")
    at = args.index("--device")
    args[at:at + 2] = ["-o", "Global.device=bogus"]  # the flag would win over -o
    code, stdout, err = cli(*args)
    assert code == 2 and "config key Global.device (or --device) is 'bogus'" in flat(err)
    assert "usable images" not in stdout  # refused before check-data's table
    for spelling in ("cpu", "CUDA:1", "gpu", " cuda "):
        TrainSettings.from_config(cfgmod.apply_overrides(cfgmod.load_config(), [f"Global.device={spelling}"]))


def test_a_label_file_in_another_encoding_is_named_where_it_matters(cli, synth, tmp_path):
    """GBK labels (common from Chinese tools): a path that is not UTF-8 is a line problem that says so; a
    transcription that is not, a warning (detection does not read it, convert and recognisers do)."""
    images = synth.data_dir / "train"
    first, second = sorted(images.iterdir())[:2]
    renamed = second.with_name("中文.png")
    renamed.write_bytes(second.read_bytes())
    labels = tmp_path / "gbk.txt"
    region = '[{"transcription": "%s", "points": [[1, 1], [40, 1], [40, 20], [1, 20]]}]'
    labels.write_bytes((f"train/{first.name}\t{region % '价格'}\n"
                        f"train/{renamed.name}\t{region % 'ok'}\n").encode("gbk"))
    code, stdout, err = cli("check-data", "--data-dir", synth.data_dir, "--label-file", labels, "--crops", "0")
    text = flat(stdout + err)
    assert code == 1 and f"{labels}:2: the image path 'train/" in text and "is not UTF-8 text" in text
    assert f"1 line(s) have transcriptions that are not UTF-8 text: {labels}:1." in text
    renamed.unlink()


@pytest.mark.parametrize("args", [
    ("predict", ".", "--box-thresh", "nan"), ("eval", "--thresh", "inf"), ("serve", "--timeout-s", "inf"),
    ("serve", "--max-wait-ms", "nan"), ("export", "--max-drop", "nan"), ("convert", "x.txt", "--split", "nan"),
    ("train", "--lr", "-inf"), ("benchmark", "--max-drop", "nan"),
])
def test_nan_and_inf_given_to_a_float_flag_are_called_what_they_are(cli, args):
    """Typer called NaN "less than or equal to 1", let it through where a flag has no range, and serve
    --timeout-s inf ended in an OverflowError traceback."""
    code, _, err = cli(*args)
    assert code == 2 and f"Invalid value for '{args[-2]}': {args[-1]} is not a finite number." in flat(err), err
    assert "Traceback" not in err


def test_a_float_flag_out_of_range_or_not_a_number_is_named_in_the_api_s_words(cli):
    code, _, err = cli("predict", ".", "--box-thresh", "2")
    assert code == 2 and "'--box-thresh': 2 is out of range: it must be between 0 and 1." in flat(err)
    code, _, err = cli("serve", "--timeout-s", "soon")
    assert code == 2 and "'--timeout-s': 'soon' is not a number." in flat(err)
    code, _, err = cli("serve", "--timeout-s", "0")
    assert code == 2 and "'--timeout-s': 0 is out of range: it must be at least 0.001." in flat(err)
