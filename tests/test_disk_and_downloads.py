"""Writes that cannot complete (issue 35): a full disk is one message naming the folder and the space needed, with
no partial file; a killed save's temporary file is removed by the next run; an unpinned download is capped.

The full disk is a real one: a 1 MB tmpfs mounted for the test (root only; skipped otherwise).
"""

from __future__ import annotations

import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from openocr_cli.hub import registry, transfer
from tests.test_train import synth, train_args  # noqa: F401  (the synthetic data set fixture)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB file system, unmounted afterwards."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


class _Files(BaseHTTPRequestHandler):
    """/sized: 3 MB with a Content-Length; /unsized: 3 MB, length unknown; /endless: bytes until the client leaves."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path.startswith("/sized"):
            self.send_header("Content-Length", str(3 * 1024 ** 2))
        self.end_headers()
        try:
            for _ in range(48 if not self.path.startswith("/endless") else 10 ** 6):
                self.wfile.write(b"\x01" * 65536)
        except OSError:
            pass


@pytest.fixture
def files_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and (".part" in p.name or p.suffix == ".tmp"))


@pytest.mark.parametrize("path", ["/sized/x.pth", "/unsized/x.pth"])
def test_D9_a_download_onto_a_full_disk_is_one_message_and_leaves_no_partial_file(cli, monkeypatch, tiny_disk,
                                                                                   files_server, path):
    monkeypatch.setenv("OPENOCR_DET_HOME", str(tiny_disk))
    monkeypatch.delenv("OPENOCR_DET_OFFLINE", raising=False)
    code, _, err = cli("download", "repvit", "--url", files_server + path)
    flat = " ".join(err.split())
    assert code == 1 and "is full" in flat and str(tiny_disk) in flat and "Traceback" not in err, err
    if path.startswith("/sized"):
        assert "3.0 MB needed" in flat
    assert leftovers(tiny_disk) == []


def test_D9_training_onto_a_full_disk_is_one_message_and_leaves_no_temporary_file(cli, tiny_disk, synth):  # noqa: F811
    code, _, err = cli(*train_args(synth, tiny_disk / "run", "--epochs", "1"))
    flat = " ".join(err.split())
    assert code == 1 and "is full" in flat and str(tiny_disk / "run") in flat and "Traceback" not in err, err
    assert "MB needed" in flat
    assert leftovers(tiny_disk) == []


def test_D12_a_killed_saves_temporary_file_is_removed_by_the_next_run(cli, tmp_path, synth):  # noqa: F811
    out = tmp_path / "run"
    out.mkdir()
    proc = subprocess.Popen(["true"])
    proc.wait()
    torn = out / f".latest.pth.{proc.pid}.tmp"  # that process is gone: its save was cut off
    torn.write_bytes(b"\x00" * 1000)
    mine = out / f".best.pth.{os.getpid()}.tmp"  # a live process's save in progress stays
    mine.write_bytes(b"\x00")
    code, _, err = cli(*train_args(synth, out, "--epochs", "1"))
    assert code == 0, err
    assert not torn.exists() and mine.exists()
    assert torch.load(out / "latest.pth", weights_only=True)["global_step"] > 0


def test_D12_a_download_without_a_pinned_size_is_capped(monkeypatch, tmp_path, files_server):
    from openocr_cli.errors import UserError
    from openocr_cli.hub.api import download

    monkeypatch.setenv("OPENOCR_DET_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(transfer, "MAX_UNPINNED_BYTES", 1024 ** 2)
    assert registry.lookup("repvit").size is None  # the release publishes no size
    with pytest.raises(UserError, match="more than 1,048,576 B"):
        download("repvit", url=files_server + "/endless/x.pth", offline=False, show_progress=False, retries=0)
    with pytest.raises(UserError, match="more than 1,048,576 B"):
        download("repvit", url=files_server + "/sized/x.pth", offline=False, show_progress=False, retries=0)
    assert leftovers(tmp_path / "cache") == [] and not list((tmp_path / "cache").rglob("*.pth"))
