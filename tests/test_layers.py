"""The package's layers (pyproject.toml [tool.importlinter]): imports point down, never in a cycle, and only the
command layer imports rich or typer. `make lint` runs lint-imports; this runs the same contracts in the tests."""

from __future__ import annotations

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
COMMAND_LAYER = {"cli", "commands", "ui", "training_ui"}


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


def test_the_contracts_catch_an_upward_import_a_cycle_and_rich(tmp_path):
    """Planted in a copy of the package: data importing ui (inside a function), and plots <-> trainer."""
    shutil.copytree(REPO / "openocr_cli", tmp_path / "openocr_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    plant = {"data/doctor.py": "from openocr_cli.ui import warn",
             "engine/plots.py": "from openocr_cli.engine import trainer"}
    for path, line in plant.items():
        with open(tmp_path / "openocr_cli" / path, "a", encoding="utf-8") as f:
            f.write(f"\n\ndef _planted():\n    {line}\n")
    res = lint_imports(tmp_path, package_parent=tmp_path)
    out = " ".join(res.stdout.split())
    assert res.returncode == 1, res.stdout + res.stderr
    assert "openocr_cli.data is not allowed to import openocr_cli.ui" in out
    assert "No cycles are allowed in openocr_cli.engine" in out and ".plots -> .trainer" in out
    assert "openocr_cli.data is not allowed to import rich" in out
    assert "3 broken" in out
