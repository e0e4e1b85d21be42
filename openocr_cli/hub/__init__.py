"""Named pretrained models: where they are published, how they are fetched, where they are cached.

registry: the names, their files, mirrors and expected preprocessing. cache: the cache folder and
the integrity checks on it. transfer: the HTTP download itself. api: fetch/download/resolve_weights,
which tie the three together. Import from here; the submodules are the package's own business.

Nothing here prints: notes and warnings go to the "openocr_cli" logger, and a download shows a progress
bar only through a ProgressFactory (passed to fetch/download, or set_default_progress, as the CLI does).
"""

from openocr_cli.hub.api import Fetched, download, fetch, resolve_weights
from openocr_cli.hub.cache import cache_dir, cache_status, sha256_file
from openocr_cli.hub.registry import MIRRORS, MODELS, RELEASE, ModelEntry, Preprocess, get_entry, model_names
from openocr_cli.hub.transfer import DownloadProgress, NoProgress, ProgressFactory, is_offline, set_default_progress

__all__ = [
    "MIRRORS", "MODELS", "RELEASE", "DownloadProgress", "Fetched", "ModelEntry", "NoProgress", "Preprocess",
    "ProgressFactory", "cache_dir", "cache_status", "download", "fetch", "get_entry", "is_offline", "model_names",
    "resolve_weights", "set_default_progress", "sha256_file",
]
