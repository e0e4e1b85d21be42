"""One option table: the flags of predict / eval / benchmark / serve / train / resume, `Detector(**options)` and
`openocr_cli.train(**options)` are the fields of InferenceOptions and TrainOptions, declared once."""

import dataclasses
import inspect
from typing import Optional

import pytest
import typer
import typer.main
from typer.testing import CliRunner

import openocr_cli
from openocr_cli import Detector, UserError
from openocr_cli.cli import options as opt
from openocr_cli.cli.app import app, register
from openocr_cli.inference.options import InferenceOptions
from openocr_cli.option_table import OptionError, flags_of, option
from openocr_cli.training.options import TrainOptions
from openocr_cli.training.settings import RESUME_FLAGS, TRAIN_FLAGS

INFERENCE_COMMANDS = ("predict", "eval", "benchmark", "serve")


@pytest.fixture(scope="module")
def commands():
    register()
    return typer.main.get_command(app).commands


def params(command) -> dict:
    return {p.name: p for p in command.params}


def cli_default(value):
    return None if value == () else value


def test_every_inference_flag_is_a_detector_keyword_with_the_same_default(commands):
    keywords = inspect.signature(Detector).parameters
    shared = set.intersection(*(set(params(commands[name])) for name in INFERENCE_COMMANDS))
    assert {"box_thresh", "thresh", "unclip_ratio", "device", "tile", "overrides", "postprocess"} <= shared
    for name in INFERENCE_COMMANDS:
        for pname, param in params(commands[name]).items():
            if pname not in flags_of(InferenceOptions):
                continue
            assert pname in keywords
            if (name, pname) not in (("eval", "fuse"), ("serve", "workers"), ("benchmark", "weights")):
                assert param.default == cli_default(keywords[pname].default), (name, pname)
            if pname != "overrides":  # -o / --override, as OpenOCR spells it
                assert "--" + pname.replace("_", "-") in param.opts + param.secondary_opts, (name, pname)
    for pname in shared:
        assert pname in keywords, pname


def test_every_training_flag_is_a_train_keyword_with_the_same_default(commands):
    train_keywords = inspect.signature(openocr_cli.train).parameters
    resume_keywords = inspect.signature(openocr_cli.resume).parameters
    table = flags_of(TrainOptions)
    assert set(TRAIN_FLAGS) <= set(table)
    for command, keywords, names in (("train", train_keywords, table), ("resume", resume_keywords, RESUME_FLAGS)):
        given = params(commands[command])
        for name in names:
            assert name in keywords and given[name].default == cli_default(keywords[name].default), (command, name)


def test_unknown_keywords_raise_type_error_with_a_suggestion(tmp_path):
    with pytest.raises(TypeError, match="box_tresh.*did you mean `box_thresh`"):
        Detector(tmp_path / "none.pth", box_tresh=0.5)
    with pytest.raises(TypeError, match="override.*did you mean `overrides`"):
        Detector(tmp_path / "none.pth", override=["PostProcess.thresh=0.2"])
    with pytest.raises(TypeError, match="epoch'.*did you mean `epochs`"):
        openocr_cli.train(tmp_path, epoch=3)
    with pytest.raises(TypeError, match="'lr'"):
        openocr_cli.resume(tmp_path, lr=0.1)  # resume changes nothing that would make it another run


def test_a_value_out_of_its_range_fails_before_the_model_loads(tmp_path, cli):
    with pytest.raises(ValueError, match=r"thresh=1.5 is out of range: it must be between 0 and 1") as info:
        Detector(tmp_path / "none.pth", thresh=1.5)  # the file does not exist: the range is checked first
    assert isinstance(info.value, UserError) and info.value.exit_code == 2
    with pytest.raises(OptionError, match="limit_side_len=16 is out of range: it must be at least 32"):
        InferenceOptions(limit_side_len=16, origin="argument")
    with pytest.raises(OptionError, match="score_mode='medium' is not one of slow, fast"):
        Detector(tmp_path / "none.pth", score_mode="medium")
    with pytest.raises(OptionError, match="epochs=0 is out of range"):
        openocr_cli.train(tmp_path, epochs=0)
    code, _, err = cli("predict", tmp_path, "--thresh", "1.5")
    assert code == 2 and "--thresh" in err


def test_the_model_can_be_named_as_the_command_line_names_it(tmp_path):
    with pytest.raises(TypeError, match="the model twice"):
        Detector(tmp_path / "a.onnx", onnx_model=str(tmp_path / "a.onnx"))


def test_one_field_makes_a_keyword_and_a_flag():
    """What adding an option takes: a field. The command gets its flag, help, default and range."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Options:
        max_pixels: Optional[int] = option(None, "Largest image, in pixels.", low=1)
        mode: Optional[str] = option(None, "fast or exact.", choices=("fast", "exact"))
        origin: str = "flag"

    seen = []
    demo = typer.Typer()

    @demo.command()
    @opt.options_command(Options, ["max_pixels", "mode"])
    def run(options: Options, name: str = "x") -> None:
        seen.append((options, name))

    runner = CliRunner()
    assert runner.invoke(demo, ["--max-pixels", "5", "--mode", "FAST"]).exit_code == 0
    assert seen == [(Options(max_pixels=5, mode="fast"), "x")]
    bad = runner.invoke(demo, ["--max-pixels", "0"])
    assert bad.exit_code == 2 and "--max-pixels" in bad.output
    help_text = runner.invoke(demo, ["--help"], env={"COLUMNS": "200"}).output
    assert "Largest image, in pixels." in help_text and "fast|exact" in help_text
