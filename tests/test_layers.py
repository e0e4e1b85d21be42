"""The package's layers (pyproject.toml [tool.importlinter]) follow its folders: imports point down, siblings of a
layer stay independent, no cycles, inference imports neither training nor export, only cli/ imports rich or typer,
and nothing inside the package imports the package face. `make lint` runs lint-imports; these run the same
contracts, and plant a violation of each to see it caught."""

from __future__ import annotations

import ast
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import openocr_cli

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own TOML reader
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
COMMAND_LAYER = {"cli"}


def lint_imports(cwd: Path, package_parent: Path | None = None) -> subprocess.CompletedProcess:
    """lint-imports with pyproject.toml in `cwd`, on the openocr_cli found first on sys.path (`package_parent`)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(package_parent)} if package_parent else None
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--no-logo", "pyproject.toml"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def contracts() -> dict[str, dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def test_the_import_contracts_are_kept():
    res = lint_imports(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_every_module_outside_the_command_layer_must_keep_off_the_console():
    """The no-console contract lists its modules one by one: a new top-level module has to be added there."""
    top = {m.name for m in pkgutil.iter_modules(openocr_cli.__path__)} - {"__main__"}
    listed = {name.removeprefix("openocr_cli.") for name in contracts()["no-console"]["source_modules"]}
    assert listed == top - COMMAND_LAYER


def test_no_module_inside_the_package_imports_the_package_face():
    """`openocr_cli/__init__.py` is the public face; inside, names come from where they live (_version.py too)."""
    offenders = []
    for path in (REPO / "openocr_cli").rglob("*.py"):
        if path.name == "__init__.py" and path.parent.name == "openocr_cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "openocr_cli":
                offenders += [f"{path.relative_to(REPO)}: from openocr_cli import {a.name}" for a in node.names
                              if not _is_submodule(a.name)]
            elif isinstance(node, ast.Import):
                offenders += [f"{path.relative_to(REPO)}: import openocr_cli" for a in node.names
                              if a.name == "openocr_cli"]
    assert offenders == []


def _is_submodule(name: str) -> bool:
    return (REPO / "openocr_cli" / name).is_dir() or (REPO / "openocr_cli" / f"{name}.py").is_file()


def test_every_package_says_its_job():
    missing = [str(init.relative_to(REPO)) for init in (REPO / "openocr_cli").rglob("__init__.py")
               if not (ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or "").strip()
               or len(ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))) < 40]
    assert missing == []


PLANTS = {
    # an upward import: data is far below cli
    "data/doctor.py": "from openocr_cli.cli.ui import warn",
    # a sibling import inside a layer declared independent (export | training)
    "training/state.py": "from openocr_cli.export import run",
    # a cycle inside one package
    "training/plots.py": "from openocr_cli.training import trainer",
    # rich outside cli/
    "formats/ppocr.py": "import rich",
    # inference reaching up into training
    "inference/tiling.py": "from openocr_cli.training import loss",
}


def test_the_contracts_catch_each_planted_violation(tmp_path):
    """Planted inside functions of a copy of the package, one of each kind the contracts forbid."""
    shutil.copytree(REPO / "openocr_cli", tmp_path / "openocr_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    for path, line in PLANTS.items():
        with open(tmp_path / "openocr_cli" / path, "a", encoding="utf-8") as f:
            f.write(f"\n\ndef _planted():\n    {line}\n")
    res = lint_imports(tmp_path, package_parent=tmp_path)
    out = " ".join(res.stdout.split())
    assert res.returncode == 1, res.stdout + res.stderr
    assert "openocr_cli.data is not allowed to import openocr_cli.cli" in out
    assert "openocr_cli.training is not allowed to import openocr_cli.export" in out
    assert "No cycles are allowed in openocr_cli.training" in out and ".plots -> .trainer" in out
    assert "openocr_cli.formats is not allowed to import rich" in out
    assert "openocr_cli.inference is not allowed to import openocr_cli.training" in out
    assert "0 kept, 4 broken" in out  # every contract


def test_each_plant_alone_breaks_the_contracts(tmp_path):
    """The planted lines above are each caught on their own, not only as a group."""
    shutil.copytree(REPO / "openocr_cli", tmp_path / "openocr_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    for path, line in PLANTS.items():
        target = tmp_path / "openocr_cli" / path
        original = target.read_text(encoding="utf-8")
        target.write_text(original + f"\n\ndef _planted():\n    {line}\n", encoding="utf-8")
        res = lint_imports(tmp_path, package_parent=tmp_path)
        target.write_text(original, encoding="utf-8")
        assert res.returncode == 1, f"{path}: {line} was not caught\n{res.stdout}"
