"""Debian's chromium for the browser tests (Playwright drives it; no browser is downloaded). `make test` installs
chromium when it is missing; on CI a missing browser fails the test module instead of skipping it."""

from __future__ import annotations

import os
import shutil

import pytest


def require_chromium() -> str:
    """The chromium executable, or skip (fail on CI) the calling test module."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium)",
                        pytrace=False)
        pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
    return path
