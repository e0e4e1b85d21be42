"""A real `openocr-det serve` process for the tests: 127.0.0.1, a port the OS picks, bounded waits only."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Optional

START_TIMEOUT_S = 120


class Server:
    def __init__(self, *args: str, env: Optional[dict] = None, launcher: tuple[str, ...] = ("-m", "openocr_cli")):
        full_env = dict(os.environ, OPENOCR_DET_OFFLINE="1", COLUMNS="200")
        full_env.pop("OPENOCR_DET_API_KEY", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, *launcher, "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env)
        self.lines: list[str] = []
        self.url: Optional[str] = None
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._reader.start()
        if not ready.wait(START_TIMEOUT_S) or self.url is None:
            self.proc.kill()
            raise AssertionError("serve did not start:\n" + self.output())

    def _read(self, ready: threading.Event) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            found = re.search(r"serving on (http://\S+) ", line)
            if found:
                self.url = found.group(1)
            if line.startswith("ready") or (self.url and "--workers" in " ".join(self.proc.args)):
                ready.set()
        ready.set()  # the process ended

    def output(self) -> str:
        return "".join(self.lines)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("serve never became healthy:\n" + self.output())

    # -- requests --------------------------------------------------------------------------------
    def request(self, path: str, data: Optional[bytes] = None, headers: Optional[dict] = None,
                method: Optional[str] = None, timeout: float = 60):
        """(status, headers (case-insensitive), parsed JSON or raw bytes)."""
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.headers, _body(response.read(), response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, _body(exc.read(), exc.headers)

    def get(self, path: str, **kw):
        return self.request(path, **kw)

    def detect(self, image: bytes, query: str = "", fields: Optional[dict] = None, headers: Optional[dict] = None,
               filename: str = "image.png", field: str = "image", timeout: float = 60):
        body, kind = multipart({field: (filename, image), **(fields or {})})
        return self.request("/v1/detect" + (f"?{query}" if query else ""), body,
                            {"Content-Type": kind, **(headers or {})}, timeout=timeout)

    def detect_json(self, document: dict, headers: Optional[dict] = None):
        return self.request("/v1/detect", json.dumps(document).encode(),
                            {"Content-Type": "application/json", **(headers or {})})

    # -- stopping --------------------------------------------------------------------------------
    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("serve did not stop:\n" + self.output()) from None
        self._reader.join(5)
        return code

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def multipart(fields: dict) -> tuple[bytes, str]:
    """A multipart/form-data body: values are str (a text field) or (filename, bytes) (a file)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data = value
            head = (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n")
        else:
            head, data = f'Content-Disposition: form-data; name="{name}"\r\n\r\n', str(value).encode()
        parts.append(f"--{boundary}\r\n".encode() + head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _body(raw: bytes, headers):
    if headers.get("Content-Type", "").startswith("application/json"):
        return json.loads(raw)
    return raw


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")
