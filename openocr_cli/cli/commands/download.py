"""`openocr-det download`: fetch released weights into the local cache, or list what is available."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.filesize import decimal as human_size
from rich.markup import escape

from openocr_cli import hub
from openocr_cli.cli.ui import console, table
from openocr_cli.errors import UserError


def download(
    name: Annotated[Optional[str], typer.Argument(help="Model name, e.g. repvit (see --list).",
                                                  show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the downloadable models and which are cached.")] = False,
    url: Annotated[Optional[str], typer.Option(
        "--url", help="Download from this address instead of the built-in mirrors "
                      "(cached under the same name).")] = None,
    sha256: Annotated[Optional[str], typer.Option(
        "--sha256", help="Expected SHA-256 (hex); a file that differs is rejected.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Download again even if the file is cached.")] = False,
    output: Annotated[Optional[Path], typer.Option(
        "--output", help="Also copy the file here (a file or a folder).")] = None,
    offline: Annotated[bool, typer.Option(
        "--offline", help="Never use the network (same as OPENOCR_DET_OFFLINE=1).")] = False,
) -> None:
    """Download released OpenOCR weights into the local cache.

    Mirrors are tried in order (GitHub release, Hugging Face, ModelScope); an interrupted download resumes. \
Every --weights option also accepts these names and downloads on first use. The cache is the user cache folder, \
or OPENOCR_DET_HOME; OPENOCR_DET_OFFLINE=1 forbids network access. Proxies come from HTTPS_PROXY / HTTP_PROXY / \
NO_PROXY.

    Examples:

      openocr-det download --list

      openocr-det download repvit

      openocr-det download repvit-onnx --output models/

      openocr-det download repvit --url http://mirror.local/openocr_det_repvit_ch.pth --sha256 <hex>
    """
    if list_:
        _print_list()
        return
    if not name:
        raise UserError(f"give a model name to download ({hub.model_names()}), or --list to see them.")
    result = hub.fetch(name, url=url, sha256=sha256, force=force, output=output, offline=True if offline else None)
    entry = hub.get_entry(name)
    size = human_size(result.cache_path.stat().st_size)
    if result.was_cached:
        console.print(f"{entry.name} is already cached ({size}): {escape(str(result.cache_path))} "
                      "(--force downloads it again)")
    else:
        console.print(f"downloaded {entry.name} from {escape(result.source)} ({size}), "
                      f"saved to {escape(str(result.cache_path))}")
    if output is not None:
        console.print(f"copied to {escape(str(result.path))}")


def _print_list() -> None:
    rows = []
    for entry in hub.MODELS.values():
        state, size = hub.cache_status(entry.name)
        rows.append((entry.name, entry.format, entry.filename, human_size(size) if size else "?",
                     {"cached": "yes", "missing": "no"}.get(state, state), entry.description))
    t = table("Downloadable models", ["name", "format", "file", "size", "cached", "description"], rows)
    for column in t.columns:
        if column.header != "size":
            column.justify = "left"
    console.print(t)
    console.print(f"cache: {escape(str(hub.cache_dir()))}")
    console.print("mirrors, in order: " + ", ".join(label for label, _ in hub.MIRRORS))
