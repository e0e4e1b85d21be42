"""What the rest of the CLI calls: a model name (or a --weights value) in, a verified local file out.

A download streams into `<file>.part` in the cache folder (so an interrupted one resumes), is checked
against the known size and sha256, then renamed into place while a per-file lock is held, so
concurrent runs (several processes, torchrun ranks) download it once.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from openocr_cli.errors import MissingFileError, UserError
from openocr_cli.fileio import atomic_path
from openocr_cli.hub.cache import EntryFiles, check_cache, discard_partial, entry_files, record_download, sha256_file
from openocr_cli.hub.registry import ModelEntry, get_entry, lookup, model_names
from openocr_cli.hub.transfer import Download, ProgressFactory, env_number, is_offline, make_progress

log = logging.getLogger(__name__)


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


def _normalize_sha(value: Optional[str]) -> Optional[str]:
    if value is None or not value.strip():
        return None
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise UserError(f"--sha256 {value!r} is not a SHA-256 digest (64 hexadecimal characters).")
    return value


def _check_url(url: str) -> str:
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https") or not urllib.parse.urlsplit(url).netloc:
        raise UserError(f"--url {url!r} is not an http:// or https:// address.")
    return url


def _copy_to(source: Path, output: Path) -> Path:
    output = output.expanduser()
    if output.is_dir():
        output = output / source.name
    try:
        if output.exists() and output.resolve() == source.resolve():
            return output
        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(output) as tmp:
            shutil.copyfile(source, tmp)
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror}. Choose another --output.") from None
    return output


def fetch(name: str, url: Optional[str] = None, sha256: Optional[str] = None, force: bool = False,
          output: Optional[Path] = None, offline: Optional[bool] = None, show_progress: bool = True, *,
          retries: Optional[int] = None, backoff: Optional[float] = None,
          progress: Optional[ProgressFactory] = None) -> Fetched:
    """`download`, also saying which mirror answered (None when the cache already had the file).

    retries/backoff default to OPENOCR_DET_RETRIES (3 extra attempts per mirror) and
    OPENOCR_DET_BACKOFF (1 s, doubling); OPENOCR_DET_TIMEOUT (30 s) bounds each socket wait.
    `progress` makes the progress display (default: set_default_progress's, which shows nothing unless
    the command line set its bar); `show_progress=False` or OPENOCR_DET_NO_PROGRESS hides it. Notes and
    warnings go to the "openocr_cli" logger.
    """
    entry = lookup(name)
    expected = _normalize_sha(sha256)
    if url is not None:
        url = _check_url(url)
    offline = is_offline() if offline is None else offline
    retries = int(env_number("OPENOCR_DET_RETRIES", 3, int)) if retries is None else max(0, retries)
    backoff = env_number("OPENOCR_DET_BACKOFF", 1.0) if backoff is None else max(0.0, backoff)
    timeout = env_number("OPENOCR_DET_TIMEOUT", 30.0) or None
    files = entry_files(entry)

    def done(path: Path, source: Optional[str] = None, src_url: Optional[str] = None) -> Fetched:
        return Fetched(_copy_to(path, Path(output)) if output is not None else path, path, source, src_url)

    problem = None
    if not force:
        path, problem = check_cache(entry, files, expected)
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

    from filelock import FileLock, Timeout  # loaded on a download only

    lock = FileLock(str(files.lock))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another download of %s to finish ...", entry.name)
        lock.acquire()
        if not force:  # the other run has probably just fetched it
            path, problem = check_cache(entry, files, expected)
            if path is not None:
                log.info("%s was downloaded by the other run; using it.", entry.name)
                return _release_then(lock, lambda: done(path))
    try:
        if problem:
            log.warning("the cached %s is corrupt (%s); downloading it again.", files.final, problem)
        if force:
            discard_partial(files)
        mirrors = [(urllib.parse.urlsplit(url).netloc, url)] if url else entry.urls()
        with make_progress(entry.filename, entry.size, show_progress, progress) as bar:
            job = Download(entry, files, bar, retries, backoff, timeout)
            label, src = job.from_mirrors(mirrors, custom_url=url is not None)
            sha = _verify(entry, files, expected, label, may_retry=job.had_partial)
            if sha is None:  # an old partial may have been stale: start over once
                log.warning("the resumed download failed verification; downloading it again from the start.")
                label, src = job.from_mirrors(mirrors, custom_url=url is not None)
                sha = _verify(entry, files, expected, label, may_retry=False)
        os.replace(files.part, files.final)
        record_download(entry, files, sha, src)
        files.part_meta.unlink(missing_ok=True)
    finally:
        lock.release()
    return done(files.final, label, src)


def _release_then(lock, action):
    try:
        return action()
    finally:
        lock.release()


def _verify(entry: ModelEntry, files: EntryFiles, expected: Optional[str], label: str,
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
    discard_partial(files)
    if may_retry:
        return None
    raise UserError(f"the {entry.name} file downloaded from {label} was rejected: {problem}. It was "
                    "deleted and the cache is unchanged. Check --sha256, or use --url with another mirror.")


def download(name: str, url: Optional[str] = None, sha256: Optional[str] = None, force: bool = False,
             output: Optional[Path] = None, offline: Optional[bool] = None, show_progress: bool = True, *,
             retries: Optional[int] = None, backoff: Optional[float] = None,
             progress: Optional[ProgressFactory] = None) -> Path:
    """Return the local file for a registry name, downloading it into the cache if needed.

    `url` replaces the built-in mirrors (the file is still cached under `name`); `sha256` is checked
    on top of the registry's; `force` downloads again; `output` also copies it there and returns that
    path; `offline` (default: OPENOCR_DET_OFFLINE) never touches the network; `progress`: see fetch.
    """
    return fetch(name, url, sha256, force, output, offline, show_progress, retries=retries,
                 backoff=backoff, progress=progress).path


def resolve_weights(spec: str, offline: Optional[bool] = None, kind: str = "weights file",
                    files: str = ".pth/.onnx") -> Path:
    """A --weights value -> a local file: an existing path as is, a registry name via the cache. `kind` and
    `files` word the messages (an --onnx-model value is a "model file", an .onnx one)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise UserError(f"{spec} is a folder; give a {kind} ({files}) or a model name: {model_names()}.")
    entry = get_entry(spec)
    if entry is not None:
        return download(entry.name, offline=offline)
    raise MissingFileError(f"{kind} {spec} does not exist. Give the path of a {files} file or a model name: "
                           f"{model_names()} (see `openocr-det download --list`).")
