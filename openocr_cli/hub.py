"""Named pretrained models: where they are published, how they are fetched, where they are cached.

A download streams into `<file>.part` in the cache folder (so an interrupted one resumes with an
HTTP Range request), is checked against the known size and sha256, then renamed into place while a
per-file lock is held, so concurrent runs (several processes, torchrun ranks) download it once.
The size and sha256 seen on the first download are kept in `<file>.json` beside it (trust on first
use: the release does not publish hashes), so a file that changes later is noticed and fetched again.
Only urllib is used; it honours HTTP(S)_PROXY / NO_PROXY and SSL_CERT_FILE like other tools.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import platformdirs
from filelock import FileLock, Timeout
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from openocr_cli import __version__
from openocr_cli.errors import UserError
from openocr_cli.ui import err_console, warn

APP_NAME = "openocr-det"
RELEASE = "develop0.0.1"
CHUNK = 1 << 16

# Tried in this order; the first that answers wins. `{file}` is the entry's file name.
MIRRORS: list[tuple[str, str]] = [
    ("GitHub release", f"https://github.com/Topdu/OpenOCR/releases/download/{RELEASE}/{{file}}"),
    ("Hugging Face", "https://huggingface.co/topdu/OpenOCR/resolve/main/{file}"),
    ("ModelScope", "https://www.modelscope.cn/models/topdktu/OpenOCR/resolve/master/{file}"),
]


@dataclass(frozen=True)
class ModelEntry:
    """One downloadable file. size/sha256 are None when not published (checked on first use instead)."""

    name: str
    filename: str
    format: str  # "pth" or "onnx"
    description: str
    size: Optional[int] = None
    sha256: Optional[str] = None

    def urls(self) -> list[tuple[str, str]]:
        """(mirror label, URL) pairs in the order they are tried."""
        return [(label, template.format(file=self.filename)) for label, template in MIRRORS]


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry("repvit", "openocr_det_repvit_ch.pth", "pth",
                   f"OpenOCR RepViT-DB detector weights, Chinese/English (release {RELEASE})"),
        ModelEntry("repvit-onnx", "openocr_det_model.onnx", "onnx",
                   f"The same detector exported to ONNX by OpenOCR (release {RELEASE})"),
    )
}


@dataclass
class Fetched:
    """What `fetch` did: the file, and which mirror answered (None when it was already cached)."""

    path: Path
    cache_path: Path
    source: Optional[str] = None
    url: Optional[str] = None

    @property
    def was_cached(self) -> bool:
        return self.source is None


# ----------------------------------------------------------------------------- settings


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def is_offline() -> bool:
    """True when OPENOCR_DET_OFFLINE asks us never to touch the network."""
    return _env_flag("OPENOCR_DET_OFFLINE")


def _env_number(name: str, default: float, kind: type = float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} is not a valid number.") from None
    if value < 0:
        raise UserError(f"{name} must not be negative (got {raw}).")
    return value


def cache_dir() -> Path:
    """Where models are kept: $OPENOCR_DET_HOME, else the per-user cache folder of the app."""
    home = os.environ.get("OPENOCR_DET_HOME", "").strip()
    if home:
        return Path(home).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def model_names() -> str:
    return ", ".join(MODELS)


def get_entry(name: str) -> Optional[ModelEntry]:
    """The registry entry for a name (case-insensitive) or a released file name, or None.

    OpenOCR's configs name the weights by file (`openocr_det_repvit_ch.pth`); when no such local
    file exists, that name resolves to the cached release file, as OpenOCR's own tools do.
    """
    key = name.strip().lower()
    if key in MODELS:
        return MODELS[key]
    bare = key.removeprefix("./")
    return next((e for e in MODELS.values() if e.filename.lower() == bare), None)


def _entry(name: str) -> ModelEntry:
    entry = get_entry(name)
    if entry is None:
        raise UserError(f"unknown model name {name!r}. Known names: {model_names()} "
                        "(see `openocr-det download --list`).")
    return entry


@dataclass(frozen=True)
class _Files:
    final: Path
    part: Path
    part_meta: Path
    record: Path
    lock: Path


def _files(entry: ModelEntry, folder: Optional[Path] = None) -> _Files:
    folder = folder or cache_dir()
    final = folder / entry.filename
    return _Files(final, final.with_name(final.name + ".part"), final.with_name(final.name + ".part.json"),
                  final.with_name(final.name + ".json"), final.with_name(final.name + ".lock"))


# ----------------------------------------------------------------------------- cache records


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalize_sha(value: Optional[str]) -> Optional[str]:
    if value is None or not value.strip():
        return None
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise UserError(f"--sha256 {value!r} is not a SHA-256 digest (64 hexadecimal characters).")
    return value


def _record(entry: ModelEntry, files: _Files, sha: str, url: Optional[str]) -> None:
    st = files.final.stat()
    _write_json(files.record, {
        "name": entry.name, "file": entry.filename, "size": st.st_size, "sha256": sha,
        "mtime_ns": st.st_mtime_ns, "url": url,
        "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def _check_cache(entry: ModelEntry, files: _Files, expected_sha: Optional[str] = None
                 ) -> tuple[Optional[Path], Optional[str]]:
    """(path, None) if the cached file is good, (None, why) if present but bad, (None, None) if absent."""
    try:
        st = files.final.stat()
    except OSError:
        return None, None
    record = _read_json(files.record)
    if entry.size is not None and st.st_size != entry.size:
        return None, f"its size {st.st_size:,} B is not the published {entry.size:,} B"
    if isinstance(record.get("size"), int) and st.st_size != record["size"]:
        return None, f"its size {st.st_size:,} B differs from the {record['size']:,} B recorded when it was downloaded"
    sha = record.get("sha256")
    if not sha or record.get("mtime_ns") != st.st_mtime_ns:
        # Modified since recorded (or never recorded): hash it, it is cheap next to loading a model.
        actual = sha256_file(files.final)
        if sha and actual != sha:
            return None, "its sha256 differs from the one recorded when it was downloaded"
        try:  # first sight of a file put there by hand (trust on first use), or only touched
            _record(entry, files, actual, record.get("url"))
        except OSError:
            pass
        sha = actual
    if entry.sha256 and sha != entry.sha256:
        return None, f"its sha256 {sha} is not the published {entry.sha256}"
    if expected_sha and sha != expected_sha:
        return None, f"its sha256 {sha} is not the expected {expected_sha}"
    return files.final, None


def cached_path(name: str) -> Optional[Path]:
    """The cached file for a registry name if present and intact, else None (never downloads)."""
    entry = _entry(name)
    return _check_cache(entry, _files(entry))[0]


def cache_status(name: str) -> tuple[str, Optional[int]]:
    """("cached" | "corrupt" | "partial" | "missing", size in bytes if known) for `download --list`."""
    entry = _entry(name)
    files = _files(entry)
    path, problem = _check_cache(entry, files)
    if path is not None:
        return "cached", path.stat().st_size
    if problem is not None:
        return "corrupt", entry.size
    if files.part.exists():
        return "partial", files.part.stat().st_size
    return "missing", entry.size


# ----------------------------------------------------------------------------- network


class _Failed(Exception):
    """One mirror did not deliver. kind: missing, denied, server, http, dns, tls, network, offline."""

    def __init__(self, message: str, kind: str, retry: bool):
        super().__init__(message)
        self.kind = kind
        self.retry = retry


def _http_failure(code: int, reason: str) -> _Failed:
    status = f"HTTP {code} {reason}".strip()
    if code in (404, 410):
        return _Failed(f"{status}: the file is not at this address", "missing", False)
    if code == 407:
        return _Failed(f"{status}: the proxy wants credentials (put them in HTTPS_PROXY)", "denied", False)
    if code in (401, 403):
        return _Failed(f"{status}: access refused", "denied", False)
    if code == 429 or code >= 500:
        return _Failed(f"{status}: server error", "server", True)
    return _Failed(f"{status}", "http", False)


def _network_failure(reason: object) -> _Failed:
    if isinstance(reason, socket.gaierror):
        return _Failed(f"cannot resolve the host name ({reason.strerror or reason})", "dns", False)
    if isinstance(reason, ssl.SSLCertVerificationError):
        detail = getattr(reason, "verify_message", None) or reason
        return _Failed(f"TLS certificate verification failed ({detail})", "tls", False)
    if isinstance(reason, ssl.SSLError):
        return _Failed(f"TLS error ({getattr(reason, 'reason', None) or reason})", "tls", False)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return _Failed("the connection timed out", "network", True)
    if isinstance(reason, ConnectionRefusedError):
        return _Failed("connection refused", "network", True)
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN):
        return _Failed(f"no route to the server ({reason.strerror})", "offline", True)
    if isinstance(reason, (ConnectionError, http.client.HTTPException)):
        return _Failed(f"the connection broke ({type(reason).__name__})", "network", True)
    return _Failed(f"network error ({reason})", "network", True)


def _open(request: urllib.request.Request, timeout: float):
    """urlopen with the default handlers: proxies from the environment, redirects, system CA store."""
    return urllib.request.build_opener().open(request, timeout=timeout)


def _content_range(value: Optional[str]) -> tuple[Optional[int], Optional[int]]:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    return int(match.group(1)), (None if match.group(2) == "*" else int(match.group(2)))


def _discard_partial(files: _Files) -> None:
    for path in (files.part, files.part_meta):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


class _Download:
    """Fetch one entry into its .part file, resuming, retrying and trying mirrors in order."""

    def __init__(self, entry: ModelEntry, files: _Files, bar: Progress, retries: int, backoff: float,
                 timeout: float):
        self.entry, self.files, self.bar = entry, files, bar
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.task = bar.add_task(entry.filename, total=entry.size, visible=False)
        self.had_partial = files.part.exists()  # left by an earlier run: may be stale if verification fails

    def from_mirrors(self, mirrors: list[tuple[str, str]], custom_url: bool) -> tuple[str, str]:
        failures: list[tuple[str, str, _Failed]] = []
        for label, url in mirrors:
            err_console.print(f"downloading {self.entry.name} from {escape(label)}: {escape(url)}")
            try:
                self.with_retries(url, label)
                return label, url
            except _Failed as exc:
                failures.append((label, url, exc))
                if len(mirrors) > 1:
                    warn(f"{escape(label)}: {escape(str(exc))}")
        _discard_partial(self.files)  # a clear failure leaves nothing behind in the cache
        raise UserError(self.explain(failures, custom_url))

    def with_retries(self, url: str, label: str) -> None:
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                self.once(url)
                return
            except _Failed as exc:
                if not exc.retry or attempt == attempts:
                    if exc.retry and attempts > 1:
                        exc.args = (f"{exc} (gave up after {attempts} attempts)",)
                    raise
                delay = min(self.backoff * 2 ** (attempt - 1), 60.0)
                warn(f"{escape(label)}: {escape(str(exc))}; retrying in {delay:.1f} s "
                     f"(attempt {attempt + 1} of {attempts})")
                time.sleep(delay)

    def once(self, url: str) -> None:
        files = self.files
        have = files.part.stat().st_size if files.part.exists() else 0
        headers = {"User-Agent": f"openocr-det/{__version__}", "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            meta = _read_json(files.part_meta)
            validator = meta.get("etag") or meta.get("last_modified") if meta.get("url") == url else None
            if validator:  # the server sends the whole file instead if it changed since
                headers["If-Range"] = validator
        try:
            response = _open(urllib.request.Request(url, headers=headers), self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and have:  # our partial is no prefix of what the server has
                _discard_partial(files)
                raise _Failed("the partial download does not match the server's file; starting over",
                              "network", True) from None
            raise _http_failure(exc.code, str(exc.reason or "")) from None
        except urllib.error.URLError as exc:
            raise _network_failure(exc.reason) from None
        except (http.client.HTTPException, OSError) as exc:
            raise _network_failure(exc) from None

        with response:
            total: Optional[int]
            if response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != have:
                    _discard_partial(files)
                    raise _Failed("the server resumed at the wrong offset; starting over", "network", True)
                mode = "ab"
            else:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                have, mode = 0, "wb"
            if self.entry.size is not None and total is not None and total != self.entry.size:
                raise _Failed(f"the server offers {total:,} B but {self.entry.filename} is "
                              f"{self.entry.size:,} B", "http", False)
            _write_json(files.part_meta, {"url": url, "etag": response.headers.get("ETag"),
                                          "last_modified": response.headers.get("Last-Modified"),
                                          "total": total})
            self.bar.update(self.task, total=total, completed=have, visible=True)
            got = have
            with open(files.part, mode) as out:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _network_failure(exc) from None
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise UserError(f"cannot write to the model cache {files.part.parent}: "
                                        f"{exc.strerror}. Free some space or set OPENOCR_DET_HOME.") from None
                    got += len(chunk)
                    self.bar.update(self.task, completed=got)
        if total is not None and got < total:
            raise _Failed(f"the connection closed after {got:,} of {total:,} B", "network", True)

    def explain(self, failures: list[tuple[str, str, _Failed]], custom_url: bool) -> str:
        lines = [f"could not download {self.entry.name} ({self.entry.filename}):"]
        lines += [f"  - {label} ({url}): {exc}" for label, url, exc in failures]
        kinds = {exc.kind for _, _, exc in failures}
        if kinds <= {"dns", "offline", "network"} and kinds & {"dns", "offline"}:
            lines.append("It looks like there is no network connection. Check it (behind a proxy, set "
                         "HTTPS_PROXY), or download the file on another machine and pass its path instead "
                         f"of the name, or put it in {self.files.final.parent}.")
        elif "tls" in kinds:
            lines.append("The secure connection failed. Behind a proxy that inspects TLS, point "
                         "SSL_CERT_FILE at its CA bundle.")
        elif kinds == {"missing"}:
            lines.append("Check the --url address." if custom_url else
                         "The file is not published where expected; use --url with another address.")
        elif "server" in kinds:
            lines.append("The server is having problems: try again later, or use --url with a mirror.")
        else:
            lines.append("Try again, or use --url with another address.")
        lines.append("No file was saved in the cache.")
        return "\n".join(lines)


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TextColumn("eta"), TimeRemainingColumn(),
        console=err_console, disable=not show or _env_flag("OPENOCR_DET_NO_PROGRESS"),
    )


# ----------------------------------------------------------------------------- public API


def _copy_to(source: Path, output: Path) -> Path:
    output = output.expanduser()
    if output.is_dir():
        output = output / source.name
    try:
        if output.exists() and output.resolve() == source.resolve():
            return output
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, output)
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror}. Choose another --output.") from None
    return output


def _check_url(url: str) -> str:
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https") or not urllib.parse.urlsplit(url).netloc:
        raise UserError(f"--url {url!r} is not an http:// or https:// address.")
    return url


def fetch(name: str, url: Optional[str] = None, sha256: Optional[str] = None, force: bool = False,
          output: Optional[Path] = None, offline: Optional[bool] = None, show_progress: bool = True, *,
          retries: Optional[int] = None, backoff: Optional[float] = None) -> Fetched:
    """`download`, also saying which mirror answered (None when the cache already had the file).

    retries/backoff default to OPENOCR_DET_RETRIES (3 extra attempts per mirror) and
    OPENOCR_DET_BACKOFF (1 s, doubling); OPENOCR_DET_TIMEOUT (30 s) bounds each socket wait.
    """
    entry = _entry(name)
    expected = _normalize_sha(sha256)
    if url is not None:
        url = _check_url(url)
    offline = is_offline() if offline is None else offline
    retries = int(_env_number("OPENOCR_DET_RETRIES", 3, int)) if retries is None else max(0, retries)
    backoff = _env_number("OPENOCR_DET_BACKOFF", 1.0) if backoff is None else max(0.0, backoff)
    timeout = _env_number("OPENOCR_DET_TIMEOUT", 30.0) or None
    files = _files(entry)

    def done(path: Path, source: Optional[str] = None, src_url: Optional[str] = None) -> Fetched:
        return Fetched(_copy_to(path, Path(output)) if output is not None else path, path, source, src_url)

    problem = None
    if not force:
        path, problem = _check_cache(entry, files, expected)
        if path is not None:
            return done(path)
    if offline:
        state = f"is corrupt ({problem})" if problem else "is not in the cache"
        if force and not problem:
            state = "cannot be downloaded again (--force)"
        raise UserError(f"{entry.name} ({entry.filename}) {state} and offline mode is on "
                        f"(--offline or OPENOCR_DET_OFFLINE=1), so it was not downloaded. Run "
                        f"`openocr-det download {entry.name}` with network access, or copy the file to "
                        f"{files.final}, or pass a file path instead of the name.")
    try:
        files.final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the model cache {files.final.parent}: {exc.strerror}. "
                        "Set OPENOCR_DET_HOME to a writable folder.") from None

    lock = FileLock(str(files.lock))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        err_console.print(f"waiting for another download of {entry.name} to finish ...")
        lock.acquire()
        if not force:  # the other run has probably just fetched it
            path, problem = _check_cache(entry, files, expected)
            if path is not None:
                err_console.print(f"{entry.name} was downloaded by the other run; using it.")
                return _release_then(lock, lambda: done(path))
    try:
        if problem:
            warn(f"the cached {escape(str(files.final))} is corrupt ({escape(problem)}); downloading it again.")
        if force:
            _discard_partial(files)
        mirrors = [(urllib.parse.urlsplit(url).netloc, url)] if url else entry.urls()
        with _progress(show_progress) as bar:
            job = _Download(entry, files, bar, retries, backoff, timeout)
            label, src = job.from_mirrors(mirrors, custom_url=url is not None)
            sha = _verify(entry, files, expected, label, may_retry=job.had_partial)
            if sha is None:  # an old partial may have been stale: start over once
                warn("the resumed download failed verification; downloading it again from the start.")
                label, src = job.from_mirrors(mirrors, custom_url=url is not None)
                sha = _verify(entry, files, expected, label, may_retry=False)
        os.replace(files.part, files.final)
        _record(entry, files, sha, src)
        files.part_meta.unlink(missing_ok=True)
    finally:
        lock.release()
    return done(files.final, label, src)


def _release_then(lock: FileLock, action):
    try:
        return action()
    finally:
        lock.release()


def _verify(entry: ModelEntry, files: _Files, expected: Optional[str], label: str,
            may_retry: bool) -> Optional[str]:
    """The sha256 of the finished .part; if wrong it is deleted, then None if may_retry else UserError."""
    size = files.part.stat().st_size
    sha = sha256_file(files.part)
    want = expected or entry.sha256
    problem = None
    if entry.size is not None and size != entry.size:
        problem = f"its size is {size:,} B, expected {entry.size:,} B"
    elif want and sha != want:
        problem = f"its sha256 is {sha}, expected {want}"
    if problem is None:
        return sha
    _discard_partial(files)
    if may_retry:
        return None
    raise UserError(f"the {entry.name} file downloaded from {label} was rejected: {problem}. It was "
                    "deleted and the cache is unchanged. Check --sha256, or use --url with another mirror.")


def download(name: str, url: Optional[str] = None, sha256: Optional[str] = None, force: bool = False,
             output: Optional[Path] = None, offline: Optional[bool] = None, show_progress: bool = True, *,
             retries: Optional[int] = None, backoff: Optional[float] = None) -> Path:
    """Return the local file for a registry name, downloading it into the cache if needed.

    `url` replaces the built-in mirrors (the file is still cached under `name`); `sha256` is checked
    on top of the registry's; `force` downloads again; `output` also copies it there and returns that
    path; `offline` (default: OPENOCR_DET_OFFLINE) never touches the network.
    """
    return fetch(name, url, sha256, force, output, offline, show_progress, retries=retries,
                 backoff=backoff).path


def resolve_weights(spec: str, offline: Optional[bool] = None) -> Path:
    """A --weights value -> a local file: an existing path as is, a registry name via the cache."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise UserError(f"{spec} is a folder; give a weights file (.pth or .onnx) or a model name: "
                        f"{model_names()}.")
    entry = get_entry(spec)
    if entry is not None:
        return download(entry.name, offline=offline)
    raise UserError(f"weights file {spec} does not exist. Give the path of a .pth/.onnx file or a model "
                    f"name: {model_names()} (see `openocr-det download --list`).")
