"""The library prints nothing itself: its notes and warnings go through the "openocr_cli" logger, and the
command line shows them on stderr (ui.ConsoleLogHandler) exactly as the commands print."""

from __future__ import annotations

import io
import logging
import socket
import subprocess
import sys

import pytest
from rich.console import Console

from openocr_cli import hub
from openocr_cli.cli import ui
from openocr_cli.errors import UserError
from openocr_cli.hub import transfer
from openocr_cli.log import logger
from tests.conftest import run_cli


@pytest.fixture
def console_logging():
    """The CLI's handler on the library logger, removed afterwards unless it was there before."""
    before, level = list(logger.handlers), logger.level
    handler = ui.install_console_logging()
    yield handler
    logger.handlers[:] = before
    logger.setLevel(level)


def test_handler_is_installed_once_and_sets_info(console_logging):
    assert ui.install_console_logging() is console_logging
    assert [h for h in logger.handlers if isinstance(h, ui.ConsoleLogHandler)] == [console_logging]
    assert logger.level == logging.INFO


def test_records_look_like_the_commands_output(console_logging, capsys):
    child = logging.getLogger("openocr_cli.some.module")
    child.warning("the cached %s is corrupt ([u'c'] [bold]x[/bold]); downloading it again.", "/tmp/[a]/f.pth")
    child.info("downloading repvit from [mirror]: http://x/[y]")
    child.debug("not shown")
    out, err = capsys.readouterr()
    assert out == ""
    assert " ".join(err.split()) == (
        "warning: the cached /tmp/[a]/f.pth is corrupt ([u'c'] [bold]x[/bold]); downloading it again. "
        "downloading repvit from [mirror]: http://x/[y]")
    assert err.startswith("warning: the cached")


def test_warning_has_the_yellow_prefix_of_warn(console_logging, monkeypatch):
    monkeypatch.setattr(ui, "err_console", Console(force_terminal=True, color_system="standard", width=200))
    with ui.err_console.capture() as logged:
        logging.getLogger("openocr_cli.x").warning("careful: a.pth")
    with ui.err_console.capture() as printed:
        ui.warn("careful: a.pth")
    assert logged.get() == printed.get() and "\x1b[33mwarning:" in printed.get()


def test_a_record_with_a_table_is_shown_as_that_table(console_logging, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    logging.getLogger("openocr_cli.checkpoint").warning(
        "w.pth: keys that do not match: missing from file bn.bias",
        extra={"table": ("w[x].pth: keys that do not match", ["problem", "key", "shapes"],
                         [("missing from file", "bn.bias", ""),
                          ("wrong shape", "conv[u'c']", "model [8] / file [4]")])})
    err = capsys.readouterr().err
    assert "w[x].pth: keys that do not match" in err and "missing from file bn.bias" not in err
    assert "conv[u'c']" in err and "model [8] / file [4]" in err and "┃ problem" in err


def test_quiet_console_shows_no_record(console_logging, capsys):
    try:
        ui.quiet_unless_main(False)
        logging.getLogger("openocr_cli.x").warning("from rank 1")
    finally:
        ui.quiet_unless_main(True)
    assert capsys.readouterr().err == ""


def test_train_log_is_a_child_of_the_library_logger_left_to_the_display(console_logging, capsys):
    """A caller's handler on "openocr_cli" gets train.log's lines too; the command's console does not repeat
    them (the training display shows the run)."""
    from openocr_cli.log import run_logger

    assert run_logger.parent is logger
    seen: list[str] = []
    keep = logging.Handler()
    keep.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(keep)
    run_logger.warning("step 3 skipped")
    logging.getLogger("openocr_cli.training.tracking").warning("mlflow logging failed")
    assert seen == ["step 3 skipped", "mlflow logging failed"]
    assert " ".join(capsys.readouterr().err.split()) == "warning: mlflow logging failed"


def test_every_library_logger_is_openocr_cli_or_a_child():
    """One logger name: a module logs through `__name__` or a name under "openocr_cli"; other names are only
    third-party loggers the package quietens."""
    import ast
    from pathlib import Path

    import openocr_cli
    from openocr_cli import log

    foreign = {"uvicorn.access", "nncf", "torch.utils.cpp_extension", "ray.data", None}  # None: the root logger
    names = set()
    for path in Path(openocr_cli.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger":
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Name) and arg.id == "RUN_LOGGER":
                    names.add(log.RUN_LOGGER)
                elif not (isinstance(arg, ast.Name) and arg.id == "__name__"):
                    names.add(arg.value if isinstance(arg, ast.Constant) else None)
    assert {n for n in names if n not in foreign} == {"openocr_cli", "openocr_cli.train_log"}


def test_main_installs_the_handler_once(cli):
    for _ in range(3):
        assert cli("--version")[0] == 0
    assert len([h for h in logger.handlers if isinstance(h, ui.ConsoleLogHandler)]) == 1


def test_error_messages_are_plain_text(cli, tmp_path):
    code, _, err = cli("predict", str(tmp_path / "[u'c']" / "missing"), "-w", str(tmp_path / "[bold]w.pth"))
    assert code == 1 and f"pattern {tmp_path}/[u'c']/missing matches no image files" in err


# ----------------------------------------------------------------------------- hub


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once closed


@pytest.fixture
def hub_home(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENOCR_DET_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENOCR_DET_BACKOFF", "0")
    monkeypatch.delenv("OPENOCR_DET_OFFLINE", raising=False)
    monkeypatch.delenv("OPENOCR_DET_NO_PROGRESS", raising=False)
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    return tmp_path / "cache"


@pytest.fixture
def python_caller(monkeypatch):
    """A process that never ran the CLI's main() (in-process CLI tests leave its handler and bar set)."""
    before, level = list(logger.handlers), logger.level
    logger.handlers[:] = [h for h in before if not isinstance(h, ui.ConsoleLogHandler)]
    logger.setLevel(logging.NOTSET)
    monkeypatch.setattr(transfer, "_default_progress", transfer.NoProgress)
    yield
    logger.handlers[:] = before
    logger.setLevel(level)


def test_a_python_caller_sees_no_download_output(hub_home, python_caller, capsys):
    """No handler, no progress factory: the library writes nothing, whatever it warns about."""
    url = f"http://127.0.0.1:{_closed_port()}/w.pth"
    with pytest.raises(UserError, match="connection refused"):
        hub.download("repvit", url=url, retries=1)
    assert capsys.readouterr() == ("", "")


def test_a_progress_factory_gets_the_download(hub_home, python_caller, monkeypatch):
    payload = b"w" * 200_000
    shown = []

    class Recorder:
        def __init__(self, description, total):
            shown.append(("start", description, total))

        def __enter__(self):
            shown.append("enter")
            return self

        def __exit__(self, *exc_info):
            shown.append("exit")

        def update(self, completed, total):
            shown.append((completed, total))

    class Response(io.BytesIO):
        status = 200
        headers = {"Content-Length": str(len(payload))}

    monkeypatch.setattr(transfer, "_open", lambda request, timeout: Response(payload))
    path = hub.download("repvit", url="http://mirror.invalid/w.pth", progress=Recorder)
    assert path.read_bytes() == payload
    assert shown[:3] == [("start", hub.MODELS["repvit"].filename, hub.MODELS["repvit"].size), "enter",
                         (0, len(payload))]
    assert shown[-2:] == [(len(payload), len(payload)), "exit"]

    shown.clear()
    monkeypatch.setenv("OPENOCR_DET_NO_PROGRESS", "1")
    hub.download("repvit", url="http://mirror.invalid/w.pth", force=True, progress=Recorder)
    assert shown == []
    monkeypatch.delenv("OPENOCR_DET_NO_PROGRESS")
    hub.download("repvit", url="http://mirror.invalid/w.pth", force=True, progress=Recorder, show_progress=False)
    assert shown == []


def test_download_warnings_reach_stderr_through_the_cli(hub_home):
    port = _closed_port()
    proc = run_cli("download", "repvit", "--url", f"http://127.0.0.1:{port}/w.pth",
                   env={"OPENOCR_DET_OFFLINE": "0", "OPENOCR_DET_RETRIES": "1", "OPENOCR_DET_BACKOFF": "0"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    text = " ".join(proc.stderr.split())
    assert f"downloading repvit from 127.0.0.1:{port}: http://127.0.0.1:{port}/w.pth" in text
    assert f"warning: 127.0.0.1:{port}: connection refused; retrying in 0.0 s (attempt 2 of 2)" in text
    assert "error: could not download repvit" in text and proc.stdout == ""


# ----------------------------------------------------------------------------- checkpoint


def test_checkpoint_mismatch_table_reaches_stderr_through_the_cli(cli, tmp_path, image_dir, random_ckpt):
    import torch

    weights = torch.load(random_ckpt, weights_only=True)
    weights.pop("head.thresh.conv3.bias")
    weights["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "partial.pth"
    torch.save(weights, bad)
    code, out, err = cli("predict", image_dir, "-w", bad, "--device", "cpu", "--output", tmp_path / "o")
    assert code == 1 and "Traceback" not in err
    lines = err.splitlines()
    title = "".join(lines[:lines.index(next(line for line in lines if line.startswith("┏")))])
    assert title.replace(" ", "") == f"{bad}:keysthatdonotmatchthemodel"  # the table's title (wrapped)
    assert any(line.startswith("┃ problem") and " key ┃" in line and " shapes ┃" in line for line in lines)
    assert any("missing from file" in line and "head.thresh.conv3.bias" in line for line in lines)
    assert any("unexpected in file" in line and "extra.weight" in line for line in lines)
    assert "1 missing, 1 unexpected and 0 wrong-shape keys" in " ".join(err.split())


# ----------------------------------------------------------------------------- imports


def test_library_modules_import_neither_rich_nor_typer():
    code = ("import sys\n"
            "import openocr_cli.hub, openocr_cli.checkpoint, openocr_cli.formats.convert\n"
            "import openocr_cli.inference.backends.onnx_backend\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'typer', 'click'}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- onnx backend


def test_cuda_fallback_is_a_logged_warning(tmp_path, monkeypatch, caplog, python_caller, capsys):
    import onnx
    from onnx import TensorProto, helper

    from openocr_cli.inference.backends import onnx_backend

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0),
             helper.make_node("Sigmoid", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "H", "W"])])
    model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model_proto.ir_version = 8
    model = tmp_path / "tiny.onnx"
    onnx.save(model_proto, str(model))
    cpu_session = onnx_backend._session

    monkeypatch.setattr(onnx_backend, "onnx_providers", lambda device: [("CUDAExecutionProvider", {"device_id": 0}),
                                                                       "CPUExecutionProvider"])
    monkeypatch.setattr(onnx_backend, "_session", lambda path, providers, threads: cpu_session(
        path, ["CPUExecutionProvider"], threads))
    backend = onnx_backend.OnnxBackend.load(model, "cuda")
    assert backend.providers == ["CPUExecutionProvider"]
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("openocr_cli.inference.backends.onnx_backend", "WARNING",
         "onnxruntime could not start CUDAExecutionProvider (missing CUDA/cuDNN libraries?); running on the CPU.")]
    assert capsys.readouterr().err == ""  # a Python caller: no handler, nothing printed

    ui.install_console_logging()  # the CLI's handler (python_caller removes it again)
    onnx_backend.OnnxBackend.load(model, "cuda")
    assert " ".join(capsys.readouterr().err.split()) == (
        "warning: onnxruntime could not start CUDAExecutionProvider (missing CUDA/cuDNN libraries?); "
        "running on the CPU.")


# ----------------------------------------------------------------------------- the CLI's own help

COMMANDS = ["download", "train", "resume", "eval", "predict", "export", "check-data", "convert", "benchmark"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_no_type_beside_flags(cli, command):
    """Flags take no value, so --help shows none beside them (Typer's rich help printed `--version <bool>`)."""
    code, out, err = cli(*([command] if command else []), "--help")
    assert code == 0 and "--help" in out and "Show this message and exit." in out, err
    assert "<bool>" not in out
    flag = {None: "--version", "predict": "--no-vis", "download": "--list"}.get(command, "--help")
    line = next(line for line in out.splitlines() if f" {flag} " in line)
    assert "<" not in line, line
