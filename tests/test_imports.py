"""The CLI answers --help without PyTorch, onnxruntime or OpenVINO, and the ONNX and OpenVINO paths never import
PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import label_line, write_image

COMMANDS = ["download", "check-data", "train", "resume", "eval", "predict", "export", "convert", "benchmark", "serve"]


# A deployment machine with the lean install (docs/guides/export.md) has none of these.
TRAINING_ONLY = ("torch", "torchvision", "onnx", "albumentations", "matplotlib")
BLOCKER = ("import importlib.abc, sys\n"
           "class Blocker(importlib.abc.MetaPathFinder):\n"
           "    def find_spec(self, name, path=None, target=None):\n"
           "        if name.split('.')[0] in BLOCKED:\n"
           "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
           "sys.meta_path.insert(0, Blocker())\n")


def heavy_modules_after(*args: str, blocked: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """Run the CLI in a fresh interpreter (where the `blocked` packages cannot be imported); the exit code
    and which heavy modules it imported."""
    code = (f"BLOCKED = {blocked!r}\n{BLOCKER}import json, sys\nfrom openocr_cli.cli.app import main\n"
            f"sys.argv = ['openocr-det', *{list(args)!r}]\n"
            "try:\n    main()\n    rc = 0\nexcept SystemExit as exc:\n    rc = exc.code or 0\n"
            "print('\\nHEAVY=' + json.dumps([rc, sorted(m for m in ('torch', 'onnxruntime', 'onnx', "
            "'albumentations', 'matplotlib', 'openvino') if m in sys.modules)]))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"OPENOCR_DET_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "120"})
    line = [x for x in res.stdout.splitlines() if x.startswith("HEAVY=")]
    assert line, res.stdout[-2000:] + res.stderr[-2000:]
    rc, heavy = json.loads(line[-1][len("HEAVY="):])
    return rc, heavy


@pytest.mark.parametrize("args", [["--help"], ["--version"]] + [[c, "--help"] for c in COMMANDS])
def test_help_imports_no_runtime(args):
    assert heavy_modules_after(*args) == (0, [])


def test_onnx_predict_never_imports_torch(tmp_path):
    from tests.test_onnx_backend import tiny_model

    model = tiny_model(tmp_path / "tiny.onnx")
    write_image(tmp_path / "imgs" / "a.png", 64, 96, 0)
    rc, heavy = heavy_modules_after("predict", str(tmp_path / "imgs"), "--backend", "onnx", "--onnx-model",
                                    str(model), "--device", "cpu", "--output", str(tmp_path / "out"))
    assert rc == 0 and "torch" not in heavy and "onnxruntime" in heavy
    assert (tmp_path / "out" / "det_results.txt").read_text().startswith(str(tmp_path / "imgs" / "a.png"))
    labels = tmp_path / "labels.txt"
    labels.write_text(label_line("imgs/a.png", [{"transcription": "a", "points": [[1, 1], [20, 1], [20, 9], [1, 9]]}]))
    rc, heavy = heavy_modules_after("eval", "--backend", "onnx", "--onnx-model", str(model), "--data-dir",
                                    str(tmp_path), "--label-file", str(labels), "--device", "cpu", "--tune",
                                    "--report", str(tmp_path / "report"))
    assert rc == 0 and "torch" not in heavy and (tmp_path / "report" / "errors.json").is_file()


def test_onnx_path_runs_without_the_training_packages(tmp_path):
    """The lean install (docs/guides/export.md): predict and eval with an ONNX model need no torch, onnx, albumentations
    or matplotlib at all."""
    from tests.test_onnx_backend import tiny_model

    model = tiny_model(tmp_path / "tiny.onnx")
    write_image(tmp_path / "imgs" / "a.png", 64, 96, 0)
    rc, heavy = heavy_modules_after("predict", str(tmp_path / "imgs"), "--onnx-model", str(model), "--device", "cpu",
                                    "--output", str(tmp_path / "out"), blocked=TRAINING_ONLY)
    assert rc == 0 and heavy == ["onnxruntime"]
    assert (tmp_path / "out" / "det_results.txt").is_file()
    labels = tmp_path / "labels.txt"
    labels.write_text(label_line("imgs/a.png", [{"transcription": "a", "points": [[1, 1], [20, 1], [20, 9], [1, 9]]}]))
    rc, _ = heavy_modules_after("eval", "--onnx-model", str(model), "--data-dir", str(tmp_path), "--label-file",
                                str(labels), "--device", "cpu", blocked=TRAINING_ONLY)
    assert rc == 0
    rc, _ = heavy_modules_after("--help", blocked=TRAINING_ONLY)
    assert rc == 0


def test_openvino_predict_never_imports_torch_or_onnxruntime(tmp_path):
    """An IR runs with OpenVINO alone: the training packages and onnxruntime cannot even be imported here."""
    import openvino as ov

    from tests.test_onnx_backend import tiny_model

    model = tiny_model(tmp_path / "tiny.onnx")
    xml = tmp_path / "tiny.xml"
    ov.save_model(ov.convert_model(str(model)), str(xml), compress_to_fp16=False)
    write_image(tmp_path / "imgs" / "a.png", 64, 96, 0)
    rc, heavy = heavy_modules_after("predict", str(tmp_path / "imgs"), "--backend", "openvino", "--openvino-model",
                                    str(xml), "--device", "cpu", "--output", str(tmp_path / "out"),
                                    blocked=(*TRAINING_ONLY, "onnxruntime"))
    assert rc == 0 and heavy == ["openvino"]
    assert (tmp_path / "out" / "det_results.txt").read_text().startswith(str(tmp_path / "imgs" / "a.png"))
    rc, heavy = heavy_modules_after("predict", str(tmp_path / "imgs"), "--backend", "openvino", "--openvino-model",
                                    str(model), "--device", "cpu", "--output", str(tmp_path / "out2"))
    assert rc == 0 and "torch" not in heavy and "openvino" in heavy  # an .onnx file read by OpenVINO


def test_a_missing_openvino_is_named_not_a_traceback(tmp_path):
    from tests.test_onnx_backend import tiny_model

    model = tiny_model(tmp_path / "tiny.onnx")
    write_image(tmp_path / "imgs" / "a.png", 64, 96, 0)
    code = (f"BLOCKED = ('openvino',)\n{BLOCKER}import sys\nfrom openocr_cli.cli.app import main\n"
            f"sys.argv = ['openocr-det', 'predict', {str(tmp_path / 'imgs')!r}, '--backend', 'openvino', "
            f"'--openvino-model', {str(model)!r}]\nmain()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    message = " ".join(res.stderr.split())
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "needs the openvino package" in message and "pip install 'openocr-det[openvino]'" in message


def test_a_missing_package_is_named_not_a_traceback(tmp_path):
    write_image(tmp_path / "imgs" / "a.png", 64, 96, 0)
    code = (f"BLOCKED = ('torch',)\n{BLOCKER}import sys\nfrom openocr_cli.cli.app import main\n"
            f"sys.argv = ['openocr-det', 'predict', {str(tmp_path / 'imgs')!r}, '-w', 'x.pth', '--device', 'cpu']\n"
            "main()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    message = " ".join(res.stderr.split())
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "needs PyTorch" in message and "pip install torch" in message
