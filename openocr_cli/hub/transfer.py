"""Getting one file over HTTP into the cache's .part file: mirrors in order, Range resume, retries.

Every way a mirror can fail is sorted into a kind (missing, denied, server, dns, tls, ...) so the final
message can say what to do about it rather than show a traceback. Only urllib is used; it honours
HTTP(S)_PROXY / NO_PROXY and SSL_CERT_FILE like other tools. The environment variables that tune
downloads (OPENOCR_DET_OFFLINE, _RETRIES, _BACKOFF, _TIMEOUT, _NO_PROGRESS) are read here too.

Progress is shown through a small interface (DownloadProgress, made by a ProgressFactory) so this package
needs no console: by default a download shows nothing; the command line sets a rich bar at start-up
(set_default_progress), and a caller may pass its own factory to fetch/download.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional, Protocol

if TYPE_CHECKING:
    import urllib.request

from openocr_cli._version import __version__
from openocr_cli.errors import UserError, disk_full, is_no_space
from openocr_cli.hub.cache import EntryFiles, discard_partial, read_json, write_json
from openocr_cli.hub.registry import ModelEntry

MAX_UNPINNED_BYTES = 512 * 1024 ** 2  # a registry file with no published size: the released files are ~10x smaller
log = logging.getLogger(__name__)

CHUNK = 1 << 16

# ----------------------------------------------------------------------------- settings


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def is_offline() -> bool:
    """True when OPENOCR_DET_OFFLINE asks us never to touch the network."""
    return env_flag("OPENOCR_DET_OFFLINE")


def env_number(name: str, default: float, kind: type = float) -> float:
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


# ----------------------------------------------------------------------------- progress


class DownloadProgress(Protocol):
    """The progress display of one file's download, entered around the whole download (every mirror and
    retry); `update` is called when a transfer starts (a resumed one at the bytes already there) and as
    bytes arrive. `total` is None when the server does not say."""

    def __enter__(self) -> DownloadProgress: ...

    def __exit__(self, *exc_info: object) -> Optional[bool]: ...

    def update(self, completed: int, total: Optional[int]) -> None: ...


ProgressFactory = Callable[[str, Optional[int]], DownloadProgress]
"""Makes the display of one download from (description: the file name, expected size in bytes or None)."""


class NoProgress:
    """Shows nothing: the default for a Python caller."""

    def __init__(self, description: str = "", total: Optional[int] = None):
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, completed: int, total: Optional[int]) -> None:
        pass


_default_progress: ProgressFactory = NoProgress


def set_default_progress(factory: Optional[ProgressFactory]) -> ProgressFactory:
    """Use `factory` for downloads that pass none (None: show nothing); returns the previous default."""
    global _default_progress
    previous, _default_progress = _default_progress, factory or NoProgress
    return previous


def make_progress(description: str, total: Optional[int], show: bool = True,
                  factory: Optional[ProgressFactory] = None) -> DownloadProgress:
    """The display for one download: `factory`, else the default; nothing when `show` is False or
    OPENOCR_DET_NO_PROGRESS is set."""
    if not show or env_flag("OPENOCR_DET_NO_PROGRESS"):
        return NoProgress()
    return (factory or _default_progress)(description, total)


# ----------------------------------------------------------------------------- failures


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
    import http.client
    import socket
    import ssl

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


# ----------------------------------------------------------------------------- download


def _open(request: urllib.request.Request, timeout: float):
    """urlopen with the default handlers: proxies from the environment, redirects, system CA store."""
    import urllib.request

    return urllib.request.build_opener().open(request, timeout=timeout)


def _content_range(value: Optional[str]) -> tuple[Optional[int], Optional[int]]:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    return int(match.group(1)), (None if match.group(2) == "*" else int(match.group(2)))


class Download:
    """Fetch one entry into its .part file, resuming, retrying and trying mirrors in order."""

    def __init__(self, entry: ModelEntry, files: EntryFiles, bar: DownloadProgress, retries: int, backoff: float,
                 timeout: float):
        self.entry, self.files, self.bar = entry, files, bar
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.had_partial = files.part.exists()  # left by an earlier run: may be stale if verification fails

    def from_mirrors(self, mirrors: list[tuple[str, str]], custom_url: bool) -> tuple[str, str]:
        failures: list[tuple[str, str, _Failed]] = []
        for label, url in mirrors:
            log.info("downloading %s from %s: %s", self.entry.name, label, url)
            try:
                self.with_retries(url, label)
                return label, url
            except _Failed as exc:
                failures.append((label, url, exc))
                if len(mirrors) > 1:
                    log.warning("%s: %s", label, str(exc))
        discard_partial(self.files)  # a clear failure leaves nothing behind in the cache
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
                log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", label, str(exc), delay, attempt + 1,
                            attempts)
                time.sleep(delay)

    def once(self, url: str) -> None:
        import http.client  # the network modules load on a download, not with every command (about 30 ms)
        import urllib.error
        import urllib.request

        files = self.files
        have = files.part.stat().st_size if files.part.exists() else 0
        headers = {"User-Agent": f"openocr-det/{__version__}", "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            meta = read_json(files.part_meta)
            validator = meta.get("etag") or meta.get("last_modified") if meta.get("url") == url else None
            if validator:  # the server sends the whole file instead if it changed since
                headers["If-Range"] = validator
        try:
            response = _open(urllib.request.Request(url, headers=headers), self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and have:  # our partial is no prefix of what the server has
                discard_partial(files)
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
                    discard_partial(files)
                    raise _Failed("the server resumed at the wrong offset; starting over", "network", True)
                mode = "ab"
            else:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                have, mode = 0, "wb"
            if self.entry.size is not None and total is not None and total != self.entry.size:
                raise _Failed(f"the server offers {total:,} B but {self.entry.filename} is "
                              f"{self.entry.size:,} B", "http", False)
            limit = self.entry.size or MAX_UNPINNED_BYTES
            if total is not None and total > limit:
                raise _Failed(self.too_large(limit), "http", False)
            if total is not None:
                self.check_space(total - have)
            self.bar.update(have, total)
            got = have
            try:
                write_json(files.part_meta, {"url": url, "etag": response.headers.get("ETag"),
                                             "last_modified": response.headers.get("Last-Modified"),
                                             "total": total})
                with open(files.part, mode) as out:  # a failed write surfaces at write() or at close()
                    while True:
                        try:
                            chunk = response.read(CHUNK)
                        except (OSError, http.client.HTTPException) as exc:
                            raise _network_failure(exc) from None
                        if not chunk:
                            break
                        out.write(chunk)
                        got += len(chunk)
                        if got > limit:  # an endless or oversized stream: TLS alone does not vouch for it
                            break
                        self.bar.update(got, total)
            except OSError as exc:
                if is_no_space(exc):
                    discard_partial(files)
                    raise disk_full(files.part.parent, total or self.entry.size) from None
                raise UserError(f"cannot write to the model cache {files.part.parent}: "
                                f"{exc.strerror}. Free some space or set OPENOCR_DET_HOME.") from None
            if got > limit:
                discard_partial(files)
                raise _Failed(self.too_large(limit), "http", False)
        if total is not None and got < total:
            raise _Failed(f"the connection closed after {got:,} of {total:,} B", "network", True)

    def too_large(self, limit: int) -> str:
        pinned = "its registry size" if self.entry.size else "the cap for files without a published size"
        return f"the server sends more than {limit:,} B for {self.entry.filename} ({pinned}); not saved"

    def check_space(self, needed: int) -> None:
        """A download that cannot fit is refused before a byte is written (and a partial of it removed)."""
        folder = self.files.part.parent
        if shutil.disk_usage(folder).free < needed:
            discard_partial(self.files)
            raise disk_full(folder, needed)

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

