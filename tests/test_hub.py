"""Model download and cache (openocr_cli.hub, `openocr-det download`) against a local HTTP server: no real network."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from openocr_cli import hub
from openocr_cli.cli import ui
from openocr_cli.constants import IMAGENET_MEAN, IMAGENET_STD
from openocr_cli.errors import UserError
from openocr_cli.hub import registry, transfer

PTH = "openocr_det_repvit_ch.pth"
ONNX = "openocr_det_model.onnx"
PAYLOAD = os.urandom(300_000)  # several read chunks, so a connection can drop mid-file
SHA = hashlib.sha256(PAYLOAD).hexdigest()
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class _Handler(BaseHTTPRequestHandler):
    """Serves server.files with Range support; server.mode/drop_first/gate script failures."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.requests.append((self.path, self.headers.get("Range")))
            number = len(srv.requests)
        srv.started.set()
        if srv.mode == "500":
            self.send_error(500)
            return
        data = srv.files.get(self.path)
        if srv.mode == "404" or data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and self.headers.get("If-Range", '"v1"') == '"v1"':
            start = int(match.group(1))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if srv.gate is not None:
            srv.gate.wait(30)
        if number <= srv.drop_first:  # half the body, then hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class Server:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        h = self.httpd
        h.files, h.mode, h.drop_first, h.gate = {}, "ok", 0, None
        h.requests, h.lock, h.started = [], threading.Lock(), threading.Event()
        self.base = f"http://127.0.0.1:{h.server_address[1]}"
        self.thread = threading.Thread(target=h.serve_forever, daemon=True)
        self.thread.start()

    def __getattr__(self, name):
        return getattr(self.httpd, name)

    def set(self, **values) -> None:
        for key, value in values.items():
            setattr(self.httpd, key, value)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def server(monkeypatch, tmp_path):
    """A local server holding both release files under /gh/ (the first mirror), and a clean env."""
    srv = Server()
    srv.files.update({f"/gh/{PTH}": PAYLOAD, f"/gh/{ONNX}": PAYLOAD[:1000]})
    monkeypatch.setattr(registry, "MIRRORS", [("GitHub release", srv.base + "/gh/{file}"),
                                              ("Hugging Face", srv.base + "/hf/{file}"),
                                              ("ModelScope", srv.base + "/ms/{file}")])
    yield srv
    if srv.gate is not None:
        srv.gate.set()
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture(autouse=True)
def hub_env(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENOCR_DET_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENOCR_DET_BACKOFF", "0.01")
    monkeypatch.setenv("OPENOCR_DET_RETRIES", "2")
    monkeypatch.setenv("OPENOCR_DET_TIMEOUT", "10")
    monkeypatch.delenv("OPENOCR_DET_OFFLINE", raising=False)
    monkeypatch.delenv("OPENOCR_DET_NO_PROGRESS", raising=False)
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def cli_display(monkeypatch):
    """What the command line sets up at start-up: the library's log records and the download bar on
    stderr (a Python caller that does not ask sees neither; test_library_quiet checks that)."""
    monkeypatch.setattr(transfer, "_default_progress", ui.DownloadBar)
    before, level = list(ui.library_logger.handlers), ui.library_logger.level
    ui.install_console_logging()
    yield
    ui.library_logger.handlers[:] = before
    ui.library_logger.setLevel(level)


def cache_files(cache: Path) -> dict[str, bytes]:
    """Every file in the cache except lock files (they are expected to stay)."""
    if not cache.exists():
        return {}
    return {p.name: p.read_bytes() for p in cache.iterdir() if not p.name.endswith(".lock")}


def cli_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    env.update(COLUMNS="200", OPENOCR_DET_OFFLINE="0", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_download(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "openocr_cli", "download", *args], env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    text = " ".join(proc.stderr.split())
    for needle in needles:
        assert needle in text, text


# ----------------------------------------------------------------------------- clean download


def test_clean_download_hash_progress_cache(server, hub_env, capsys):
    path = hub.download("repvit")
    assert path == hub_env / PTH and path.read_bytes() == PAYLOAD
    record = json.loads((hub_env / (PTH + ".json")).read_text())
    assert record["sha256"] == SHA and record["size"] == len(PAYLOAD)
    assert not (hub_env / (PTH + ".part")).exists()
    err = capsys.readouterr().err
    assert "GitHub release" in err and PTH in err and "300.0/300.0 kB" in err  # the progress bar
    assert hub.cache_status("repvit") == ("cached", len(PAYLOAD))

    assert hub.download("repvit") == path  # cached: no second request
    assert len(server.requests) == 1


def test_registry_has_release_files_and_mirrors_in_order():
    assert hub.MODELS["repvit"].filename == PTH and hub.MODELS["repvit"].format == "pth"
    assert hub.MODELS["repvit-onnx"].filename == ONNX and hub.MODELS["repvit-onnx"].format == "onnx"
    urls = [url for _, url in hub.MODELS["repvit"].urls()]
    assert urls == [f"https://github.com/Topdu/OpenOCR/releases/download/develop0.0.1/{PTH}",
                    f"https://huggingface.co/topdu/OpenOCR/resolve/main/{PTH}",
                    f"https://www.modelscope.cn/models/topdktu/OpenOCR/resolve/master/{PTH}"]
    # both released files expect OpenOCR's repvit_db.yml preprocessing
    expected = hub.Preprocess(IMAGENET_MEAN, IMAGENET_STD, channel_order="BGR")  # the resize is the config's
    assert all(entry.preprocess == expected for entry in hub.MODELS.values())


def test_cache_dir_defaults_to_user_cache(monkeypatch):
    monkeypatch.delenv("OPENOCR_DET_HOME")
    assert "openocr-det" in str(hub.cache_dir())


def test_first_mirror_that_answers_wins(server, capsys):
    server.files[f"/hf/{PTH}"] = server.files.pop(f"/gh/{PTH}")
    result = hub.fetch("repvit", show_progress=False)
    assert result.source == "Hugging Face" and result.path.read_bytes() == PAYLOAD
    assert "404" in capsys.readouterr().err
    assert [p for p, _ in server.requests] == [f"/gh/{PTH}", f"/hf/{PTH}"]


def test_cli_download_and_list(server, hub_env):
    proc = run_download("repvit", "--url", server.url(f"/gh/{PTH}"))
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert f"downloaded repvit from 127.0.0.1:{server.server_address[1]}" in out
    assert str(hub_env / PTH) in out
    assert "kB" in proc.stderr  # progress bar
    assert (hub_env / PTH).read_bytes() == PAYLOAD

    listing = run_download("--list")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[1]: line for line in listing.stdout.splitlines() if line.startswith("│")}
    assert "yes" in rows["repvit"] and "300.0 kB" in rows["repvit"]
    assert " no " in rows["repvit-onnx"]
    assert str(hub_env) in listing.stdout

    again = run_download("repvit", "--url", server.url(f"/gh/{PTH}"))
    assert again.returncode == 0 and "already cached" in again.stdout
    assert len(server.requests) == 1


def test_output_copy_and_force(server, tmp_path):
    out_dir = tmp_path / "models"
    out_dir.mkdir()
    assert hub.download("repvit-onnx", output=out_dir, show_progress=False) == out_dir / ONNX
    assert (out_dir / ONNX).read_bytes() == PAYLOAD[:1000]
    hub.download("repvit-onnx", force=True, show_progress=False)
    assert len(server.requests) == 2


def test_output_copy_that_fails_leaves_the_old_file(server, tmp_path, monkeypatch):
    out_dir = tmp_path / "models"
    out_dir.mkdir()
    (out_dir / ONNX).write_bytes(b"old")

    def broken_copy(source, target):
        Path(target).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hub.api.shutil, "copyfile", broken_copy)
    with pytest.raises(UserError, match="cannot write .*No space left on device"):
        hub.download("repvit-onnx", output=out_dir, show_progress=False)
    assert [p.name for p in out_dir.iterdir()] == [ONNX] and (out_dir / ONNX).read_bytes() == b"old"
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- resume and retries


def test_resumes_partial_download(server, hub_env):
    hub_env.mkdir(parents=True)
    (hub_env / (PTH + ".part")).write_bytes(PAYLOAD[:100_000])
    path = hub.download("repvit", show_progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [(f"/gh/{PTH}", "bytes=100000-")]


def test_dropped_connection_is_retried_and_resumed(server):
    server.set(drop_first=2)
    path = hub.download("repvit", show_progress=False)
    assert path.read_bytes() == PAYLOAD
    ranges = [r for _, r in server.requests]
    assert len(ranges) == 3 and ranges[0] is None and all(r and r.startswith("bytes=") for r in ranges[1:])


def test_dropped_connection_gives_up_cleanly_leaving_no_file(server, hub_env):
    server.set(drop_first=1000)
    with pytest.raises(UserError) as info:
        hub.download("repvit", url=server.url(f"/gh/{PTH}"), show_progress=False)
    message = str(info.value)
    assert "could not download repvit" in message and "gave up after 3 attempts" in message
    assert "No file was saved in the cache" in message
    assert len(server.requests) == 3  # bounded
    assert hub.cache_status("repvit") == ("missing", None)
    assert not [p for p in hub_env.iterdir() if not p.name.endswith(".lock")]

    server.set(drop_first=0)
    assert hub.download("repvit", show_progress=False).read_bytes() == PAYLOAD


def test_dropped_connection_cli_failure(server, hub_env):
    server.set(drop_first=1000)
    proc = run_download("repvit", "--url", server.url(f"/gh/{PTH}"))
    assert_clean_failure(proc, "could not download repvit", "gave up after")
    assert not (hub_env / PTH).exists()


def test_stale_partial_that_fails_verification_is_redownloaded(server, hub_env):
    hub_env.mkdir(parents=True)
    (hub_env / (PTH + ".part")).write_bytes(b"x" * 1000)  # not a prefix of the real file
    path = hub.download("repvit", sha256=SHA, show_progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == ["bytes=1000-", None]


# ----------------------------------------------------------------------------- verification


def test_wrong_sha256_is_rejected_and_cache_unchanged(server, hub_env):
    with pytest.raises(UserError, match="rejected: its sha256 is"):
        hub.download("repvit", sha256="0" * 64, show_progress=False)
    assert cache_files(hub_env) == {}

    hub.download("repvit", sha256=SHA, show_progress=False)  # the right one is accepted
    before = cache_files(hub_env)
    proc = run_download("repvit", "--url", server.url(f"/gh/{PTH}"), "--sha256", "f" * 64)
    assert_clean_failure(proc, "rejected", "the cache is unchanged")
    assert cache_files(hub_env) == before


def test_invalid_sha256_and_url_are_user_errors(server):
    with pytest.raises(UserError, match="64 hexadecimal"):
        hub.download("repvit", sha256="abc")
    with pytest.raises(UserError, match="http:// or https://"):
        hub.download("repvit", url="ftp://example.invalid/x.pth")
    with pytest.raises(UserError, match="unknown model name"):
        hub.download("nope")
    assert server.requests == []


def test_changed_cached_file_is_detected_and_downloaded_again(server, hub_env, capsys):
    path = hub.download("repvit", show_progress=False)
    path.write_bytes(PAYLOAD[:-10])  # truncated: size differs from the record
    assert hub.cache_status("repvit")[0] == "corrupt"
    assert hub.download("repvit", show_progress=False).read_bytes() == PAYLOAD
    assert "corrupt" in capsys.readouterr().err

    flipped = bytearray(PAYLOAD)
    flipped[5] ^= 0xFF
    path.write_bytes(bytes(flipped))  # same size, different content
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    assert hub.cache_status("repvit")[0] == "corrupt"
    assert hub.download("repvit", show_progress=False).read_bytes() == PAYLOAD
    assert len(server.requests) == 3


def test_file_put_in_cache_by_hand_is_trusted_on_first_use(server, hub_env):
    hub_env.mkdir(parents=True)
    (hub_env / PTH).write_bytes(b"hand-made")
    assert hub.cache_status("repvit") == ("cached", len(b"hand-made"))
    assert json.loads((hub_env / (PTH + ".json")).read_text())["sha256"] == hashlib.sha256(b"hand-made").hexdigest()
    assert server.requests == []


# ----------------------------------------------------------------------------- HTTP and network errors


@pytest.mark.parametrize("mode, needles, attempts", [
    ("404", ["HTTP 404", "not at this address", "Check the --url address", "No file was saved"], 1),
    ("500", ["HTTP 500", "server error", "gave up after 3 attempts", "try again later"], 3),
])
def test_http_errors_cli(server, hub_env, mode, needles, attempts):
    server.set(mode=mode)
    proc = run_download("repvit", "--url", server.url(f"/gh/{PTH}"))
    assert_clean_failure(proc, "could not download repvit", *needles)
    assert len(server.requests) == attempts
    assert cache_files(hub_env) == {}


def test_http_404_on_every_mirror_api(server, hub_env):
    server.set(mode="404")
    with pytest.raises(UserError) as info:
        hub.download("repvit", show_progress=False)
    message = str(info.value)
    assert all(label in message for label in ("GitHub release", "Hugging Face", "ModelScope"))
    assert "not published where expected" in message
    assert cache_files(hub_env) == {}


def test_connection_refused(hub_env):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    with pytest.raises(UserError, match="connection refused"):
        hub.download("repvit", url=f"http://127.0.0.1:{port}/{PTH}", show_progress=False, retries=1)
    assert cache_files(hub_env) == {}


@pytest.mark.parametrize("reason, needles", [
    (socket.gaierror(-2, "Name or service not known"), ["cannot resolve the host name", "no network connection"]),
    (OSError(101, "Network is unreachable"), ["no route to the server", "no network connection"]),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), ["TLS", "SSL_CERT_FILE"]),
])
def test_network_failures_are_explained(monkeypatch, hub_env, reason, needles):
    calls = []

    def fail(request, timeout):
        calls.append(request.full_url)
        raise urllib.error.URLError(reason)

    monkeypatch.setattr(transfer, "_open", fail)
    with pytest.raises(UserError) as info:
        hub.download("repvit", show_progress=False)
    message = " ".join(str(info.value).split())
    for needle in needles:
        assert needle in message, message
    assert 3 <= len(calls) <= 9  # every mirror tried, retries bounded
    assert cache_files(hub_env) == {}


# ----------------------------------------------------------------------------- offline


def test_offline_never_touches_the_network(server, hub_env, monkeypatch):
    with pytest.raises(UserError, match="not in the cache and offline mode is on"):
        hub.download("repvit", offline=True)
    monkeypatch.setenv("OPENOCR_DET_OFFLINE", "1")
    assert hub.is_offline()
    with pytest.raises(UserError, match=re.escape(str(hub_env / PTH))):
        hub.resolve_weights("repvit")
    assert server.requests == []

    proc = run_download("repvit", "--offline", "--url", server.url(f"/gh/{PTH}"))
    assert_clean_failure(proc, "offline mode is on", "openocr-det download repvit")
    proc = subprocess.run([sys.executable, "-m", "openocr_cli", "download", "repvit"],
                          env=cli_env(OPENOCR_DET_OFFLINE="1"), capture_output=True, text=True, timeout=120)
    assert_clean_failure(proc, "offline mode is on")
    assert server.requests == []

    monkeypatch.delenv("OPENOCR_DET_OFFLINE")
    path = hub.download("repvit", show_progress=False)
    monkeypatch.setenv("OPENOCR_DET_OFFLINE", "1")
    assert hub.resolve_weights("repvit") == path  # cached files work offline
    assert len(server.requests) == 1


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_downloads_threads(server):
    server.set(gate=threading.Event())
    results, errors = {}, []

    def worker(key):
        try:
            results[key] = hub.download("repvit", show_progress=False)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    first = threading.Thread(target=worker, args=("a",))
    first.start()
    assert server.started.wait(10)
    second = threading.Thread(target=worker, args=("b",))
    second.start()
    time.sleep(0.5)  # the second is now waiting on the lock
    server.gate.set()
    first.join(30)
    second.join(30)
    assert not errors
    assert results["a"] == results["b"] and results["a"].read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_concurrent_downloads_processes(server, hub_env):
    server.set(gate=threading.Event())
    cmd = [sys.executable, "-m", "openocr_cli", "download", "repvit", "--url", server.url(f"/gh/{PTH}")]
    first = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        assert server.started.wait(60)
        second = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = []
        for line in second.stderr:  # block until the second reports it waits for the first
            seen.append(line)
            if "waiting for another download" in line:
                break
        assert any("waiting for another download" in line for line in seen), seen
        server.gate.set()
        out1, err1 = first.communicate(timeout=60)
        out2, err2 = second.communicate(timeout=60)
    finally:
        server.gate.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "downloaded repvit" in out1 and "already cached" in out2
    assert "downloaded by the other run" in err2
    assert len(server.requests) == 1
    assert (hub_env / PTH).read_bytes() == PAYLOAD


# ----------------------------------------------------------------------------- --weights resolution


def test_resolve_weights(server, hub_env, tmp_path):
    local = tmp_path / "mine.pth"
    local.write_bytes(b"w")
    assert hub.resolve_weights(str(local)) == local
    assert server.requests == []

    assert hub.resolve_weights("repvit") == hub_env / PTH  # downloaded on first use
    assert hub.resolve_weights("repvit-onnx").read_bytes() == PAYLOAD[:1000]
    assert hub.resolve_weights("REPVIT") == hub_env / PTH
    assert len(server.requests) == 2

    with pytest.raises(UserError) as info:
        hub.resolve_weights(str(tmp_path / "missing.pth"))
    message = str(info.value)
    assert "does not exist" in message and "repvit, repvit-onnx" in message and "download --list" in message
    with pytest.raises(UserError, match="is a folder"):
        hub.resolve_weights(str(tmp_path))


def test_cli_in_process_list_and_errors(server, cli, hub_env):
    code, out, err = cli("download", "--list")
    assert code == 0 and "repvit-onnx" in out and "GitHub release" in out
    code, out, err = cli("download")
    assert code == 1 and "--list" in err
    code, out, err = cli("download", "bogus")
    assert code == 1 and "unknown model name" in err and "repvit" in err
