"""The documentation site cannot rot: it builds with --strict, its CLI reference is `--help`, every
`openocr-det COMMAND --flag` written in README.md or docs/ exists, the API reference covers the public names,
the built pages load nothing from another host, and the README stays a short map whose links resolve.
"""

from __future__ import annotations

import html
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from openocr_cli.cli.help_reference import PROG, clean, help_env
from tests.conftest import REPO

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """`mkdocs build --strict` (what `make docs` runs) into a temporary folder: a warning fails the build."""
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def cli_app():
    """The click group behind `openocr-det`, with every subcommand registered."""
    import typer

    from openocr_cli.cli.app import app, register

    register()
    return typer.main.get_command(app)


def options_by_command() -> dict[str, set[str]]:
    """Each command's option spellings ("" = the root command's), as its --help lists them."""
    group = cli_app()
    out = {"": {opt for p in group.params for opt in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}}
    for name in group.list_commands(None):
        command = group.get_command(None, name)
        out[name] = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
    return out


def code_text(path: Path) -> list[tuple[int, str, bool]]:
    """(line number, text, inline?) of every fenced code line and every inline code span of a Markdown file; a
    backslash-continued shell line is joined with the lines it continues on."""
    out: list[tuple[int, str, bool]] = []
    fenced = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if pending is not None:
                pending = (pending[0], pending[1] + " " + line.strip())
            else:
                pending = (number, line)
            if not pending[1].rstrip().endswith("\\"):
                out.append((*pending, False))
                pending = None
            else:
                pending = (pending[0], pending[1].rstrip()[:-1])
            continue
        out += [(number, span, True) for span in re.findall(r"`([^`\n]+)`", line)]
    return out


INVOCATION = re.compile(r"(?:openocr-det|-m openocr_cli)\b(?![-./\w\[])(.*)")
# flags of other programs that the docs name on their own: torchrun's, and the benchmark scripts'
OTHER_FLAGS = {"--log-dir", "--compare-eager", "--jpeg", "--serve-args", "--nproc_per_node", "--busy"}


def invocations(text: str) -> list[list[str]]:
    """The argument words of each `openocr-det ...` / `python -m openocr_cli ...` in one line of code, up to the
    end of that shell command (a pipe, `;`, `&&`, a redirection or a comment ends it)."""
    out = []
    for match in INVOCATION.finditer(text):
        rest = re.split(r"\s(?:\||;|&&|\|\||>|2>|<|#)\s|\s#|\)$", match.group(1) + " ", maxsplit=1)[0]
        try:
            words = shlex.split(rest)
        except ValueError:  # an unbalanced quote in prose: split on spaces
            words = rest.split()
        out.append([w.strip("[]") for w in words])
    return out


def check_invocation(words: list[str], options: dict[str, set[str]]) -> list[str]:
    """What is wrong with one invocation: an unknown command, or an option its command does not have."""
    problems, command = [], ""
    for word in words:
        if word.startswith("-") and len(word) > 1 and not re.fullmatch(r"-\d.*", word):
            flag = word.split("=", 1)[0]
            if flag not in options[command]:
                problems.append(f"{PROG} {command or ''} has no option {flag}".replace("  ", " "))
        elif command == "" and word and word[0].isalpha() and word.islower():
            if word not in options:
                problems.append(f"{PROG} has no command {word!r}")
                break
            command = word
    return problems


def test_site_builds_strict_with_every_page(site):
    for page in ("index.html", "reference/cli.html", "reference/api.html", "guides/prediction.html",
                 "openocr-compat.html", "troubleshooting.html", "search/search_index.js"):
        assert (site / page).is_file(), page


def test_every_code_fence_is_closed():
    """An unclosed fence swallows the rest of a page without a warning from mkdocs (and its examples from the
    test that runs them)."""
    for path in DOC_FILES:
        fences = [line for line in path.read_text(encoding="utf-8").splitlines() if line.lstrip().startswith("```")]
        assert len(fences) % 2 == 0, f"{path.relative_to(REPO)} has an unclosed ``` fence"


def test_every_command_and_flag_written_in_the_docs_exists():
    options = options_by_command()
    problems, seen = [], 0
    for path in DOC_FILES:
        if "reference" in path.relative_to(REPO).parts:  # generated from --help
            continue
        for number, text, inline in code_text(path):
            for words in invocations(text):
                seen += 1
                problems += [f"{path.relative_to(REPO)}:{number}: {p}" for p in check_invocation(words, options)]
            # a flag written on its own in prose (`--tile-overlap`, `--tile auto`) must be some command's
            single = re.fullmatch(r"(--[a-z][a-z0-9-]*)(?:[ =][^ ]+)?", text) if inline else None
            if single and single.group(1) not in OTHER_FLAGS:
                flag = single.group(1)
                if not any(flag in opts for opts in options.values()):
                    problems.append(f"{path.relative_to(REPO)}:{number}: no command has the option {flag}")
    assert seen > 100, f"only {seen} invocations found: the parser lost them"
    assert not problems, "\n".join(problems)


# other programs' flags that the package's messages name: qpdf's, `ray start`'s, torchrun's, TensorBoard's, and
# those of `python -m openocr_cli.data.synth` (its own small argparse)
OTHER_PROGRAMS_FLAGS = {"--decrypt", "--password", "--head", "--log-dir", "--logs-specs", "--rdzv-backend",
                        "--standalone", "--logdir", "--train", "--test"}


def test_every_flag_the_package_names_in_its_messages_exists():
    """An error or help text telling the user to pass a flag that no command has is a dead end (a diverged
    run once suggested --no-amp)."""
    flags = set().union(*options_by_command().values()) | OTHER_PROGRAMS_FLAGS
    unknown = sorted({f"{path.relative_to(REPO)}: {flag}" for path in (REPO / "openocr_cli").rglob("*.py")
                      for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]+", path.read_text(encoding="utf-8"))
                      if flag not in flags})
    assert not unknown, "\n".join(unknown)


def test_the_flag_check_catches_a_wrong_flag_and_command():
    options = options_by_command()
    assert check_invocation(shlex.split("predict ./imgs --tile auto -w best.pth --no-vis"), options) == []
    assert check_invocation(shlex.split("--debug train --epochs 3"), options) == []
    assert check_invocation(shlex.split("predict ./imgs --tiles auto"), options) == [
        f"{PROG} predict has no option --tiles"]
    assert check_invocation(shlex.split("predikt ./imgs"), options) == [f"{PROG} has no command 'predikt'"]
    assert invocations("openocr-det eval -w a.pth --label-file t.txt | tee log  # --nope") == [
        ["eval", "-w", "a.pth", "--label-file", "t.txt"]]


def reference_sections(site: Path) -> dict[str, str]:
    """Command -> the help text the built CLI reference shows for it ("" is the root command)."""
    page = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    out = {}
    for anchor, block in re.findall(r'<h2 id="([^"]+)".*?<pre[^>]*>.*?<code>(.*?)</code>', page, flags=re.S):
        text = html.unescape(re.sub(r"<[^>]+>", "", block))
        out["" if anchor == PROG else anchor] = clean(text)
    return out


def test_cli_reference_is_exactly_the_help_of_every_command(site):
    sections = reference_sections(site)
    names = ["", *cli_app().list_commands(None)]
    assert sorted(sections) == sorted(names)
    script = Path(sys.executable).with_name(PROG)  # the console script, as a user runs it
    entry = [str(script)] if script.is_file() else [sys.executable, "-c",
                                                     "import sys; sys.argv[0] = 'openocr-det'; "
                                                     "from openocr_cli.cli.app import run; run()"]
    for name in names:
        proc = subprocess.run([*entry, *([name] if name else []), "--help"], env=help_env(), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert sections[name] == clean(proc.stdout), f"the CLI reference of `{PROG} {name}` differs from --help"
    assert "--tile-overlap" in sections["predict"] and "--onnx-model" in sections["eval"]


def test_api_reference_documents_the_public_names_with_signatures(site):
    import openocr_cli

    page = (site / "reference" / "api.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'id="(openocr_cli\.[\w.]+)"', page))
    for name in set(openocr_cli.__all__) - {"__version__"}:
        assert any(a.endswith("." + name) for a in anchors), f"{name} is not in the API reference"
    for member in ("Detector.predict", "Detector.stream", "Detector.evaluate", "Result.to_line", "Result.crops"):
        assert any(a.endswith(member) for a in anchors), member
    signatures = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "on_error" in signatures and "train_label" in signatures  # parameters of predict() and train()


RESOURCE = re.compile(r"<(script|link|img|iframe|source|audio|video|embed|object)\b[^>]*?\b(?:src|href|data|srcset)"
                      r"\s*=\s*[\"']([^\"']+)", re.I)


def test_built_site_loads_nothing_from_another_host(site):
    external = []
    for path in site.rglob("*"):
        if path.suffix not in (".html", ".css"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        urls = [u for _, u in RESOURCE.findall(text)] + re.findall(r"url\(\s*[\"']?([^\"')]+)", text)
        urls += re.findall(r"@import\s+[\"']([^\"']+)", text)
        external += [f"{path.relative_to(site)}: {u}" for u in urls if re.match(r"(?:https?:)?//", u.strip())]
    assert not external, "\n".join(external[:20])


def markdown_anchors(path: Path) -> set[str]:
    """The ids the site gives a page's headings (toc's slugs, and explicit { #id } attributes)."""
    from markdown.extensions.toc import slugify

    anchors = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        explicit = re.search(r"\{\s*#([\w-]+)\s*\}\s*$", line)
        title = re.sub(r"\{[^}]*\}\s*$", "", line.lstrip("#")).strip()
        anchors.add(explicit.group(1) if explicit else slugify(title.replace("`", ""), "-"))
    return anchors


def test_readme_is_a_short_map_whose_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "make demo" in text and "make test" in text
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) >= 10
    for link in links:
        if re.match(r"https?://", link):
            continue
        target, _, anchor = link.partition("#")
        path = (REPO / target) if target else REPO / "README.md"
        assert path.exists(), f"README links to {link}, which does not exist"
        if anchor:
            assert anchor in markdown_anchors(path), f"README links to {link}: no such heading"
