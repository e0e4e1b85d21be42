"""The console entry point reads an OpenVINO model's load arguments from the raw argv (cli/entry.py)."""

from __future__ import annotations

from openocr_cli.cli.entry import openvino_load_args


def test_the_load_arguments_are_read_as_the_parser_would_read_them(tmp_path):
    xml = tmp_path / "det.xml"
    xml.write_text("<net/>")
    onnx = tmp_path / "det.onnx"
    onnx.write_text("x")
    m = str(xml)
    assert openvino_load_args(["predict", "imgs", "--openvino-model", m]) == (m, None, None, "fp32")
    assert openvino_load_args(["eval", f"--openvino-model={m}", "--precision", "bf16", "--threads", "2",
                               "--device", "cpu"]) == (m, "cpu", 2, "bf16")
    assert openvino_load_args(["predict", "imgs", "-w", m, "--precision=bf16"]) == (m, None, None, "bf16")
    assert openvino_load_args(["--debug", "predict", "x", "--openvino-model", str(onnx)])[0] == str(onnx)
    # the last value wins, as in the parser
    assert openvino_load_args(["predict", "x", "--threads", "1", "--threads", "3", "--openvino-model", m])[2] == 3


def test_nothing_is_prestarted_unless_argv_clearly_names_an_openvino_file(tmp_path):
    xml = tmp_path / "det.xml"
    xml.write_text("<net/>")
    m = str(xml)
    for argv in (["export", "--openvino-model", m], ["predict", "--help", "--openvino-model", m],
                 ["predict", "x", "--openvino-model", str(tmp_path / "missing.xml")],
                 ["predict", "x", "--openvino-model", m, "--threads", "two"],
                 ["predict", "x", "--weights", "best.pth"], ["predict", "x", "-w", m, "--onnx-model", "a.onnx"],
                 ["predict", "x", "--openvino-model", m, "--onnx-model", "a.onnx"],
                 ["predict", "x", "--openvino-model", "repvit-onnx"], []):
        assert openvino_load_args(argv) is None, argv
