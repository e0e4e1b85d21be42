"""A Markdown extension that writes the CLI reference from `openocr-det --help`, so it cannot drift from it
(mkdocs.yml loads it; it needs the `docs` extra and nothing else imports it).

A line `<!-- openocr-det --help -->` in a page becomes one section per command: the root command, then every
subcommand in the order `openocr-det --help` lists them, each with its `--help` text as the console entry point
prints it at a fixed width. Each text comes from a fresh process of this checkout's `openocr_cli` (the same
thing a user runs), never from a copy. tests/test_docs.py compares the built page with `--help` again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from markdown import Extension
from markdown.preprocessors import Preprocessor

MARKER = "<!-- openocr-det --help -->"
ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding this openocr_cli
WIDTH = 100
PROG = "openocr-det"
# One process renders every --help through the console script's main(), with the program name it shows in
# `Usage:`; the commands in the order the root --help lists them.
_RENDER = f"""
import contextlib, io, json, sys
import typer
from openocr_cli.cli.app import app, main, register
register()
names = typer.main.get_command(app).list_commands(None)
texts = {{}}
for name in [None, *names]:
    sys.argv = [{PROG!r}, *([name] if name else []), "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main()
    texts[name or ""] = out.getvalue()
sys.stdout.write(json.dumps([[name, texts[name or ""]] for name in [None, *names]]))
"""


def help_env() -> dict[str, str]:
    """Plain text at a fixed width: no colour codes whatever the CI sets, this checkout's package first."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TERM")}
    env.update(COLUMNS=str(WIDTH), TERMINAL_WIDTH=str(WIDTH), NO_COLOR="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return env


def clean(text: str) -> str:
    """Rich pads every line to the width; the padding is not content."""
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip("\n")


def help_texts() -> list[tuple[str | None, str]]:
    """(command, its --help text) for the root command (None) and every subcommand."""
    proc = subprocess.run([sys.executable, "-c", _RENDER], env=help_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"rendering `{PROG} --help` failed ({proc.returncode}):\n{proc.stderr}")
    return [(name, clean(text)) for name, text in json.loads(proc.stdout)]


def reference() -> list[str]:
    lines: list[str] = []
    for name, text in help_texts():
        title = f"{PROG} {name}" if name else PROG
        lines += [f"## `{title}` {{ #{name or PROG} }}", "", "```text", *text.splitlines(), "```", ""]
    return lines


class _CliHelp(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        if MARKER not in (line.strip() for line in lines):
            return lines
        out: list[str] = []
        for line in lines:
            out += reference() if line.strip() == MARKER else [line]
        return out


class CliHelpExtension(Extension):
    def extendMarkdown(self, md):
        # before fenced code blocks (25) are taken out, after whitespace is normalised (30)
        md.preprocessors.register(_CliHelp(md), "openocr_cli_help", 28)


def makeExtension(**kwargs):
    return CliHelpExtension(**kwargs)
