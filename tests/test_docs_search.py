"""The built documentation site in a real browser, opened from disk: searching "tile" lands on the tiling guide,
and no request leaves the machine. Debian's headless Chromium driven by Playwright, as tests/test_serve_page.py
(no browser download; `make test` installs chromium when it is missing)."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.test_docs import site  # noqa: F401 (the session fixture that builds the site with --strict)

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium)",
                    pytrace=False)
    pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

WAIT_MS = 30_000
TILING = re.compile(r"\btil(e|es|ing)\b", re.I)


def test_search_for_tile_from_disk_lands_on_the_tiling_guide(site):  # noqa: F811
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            requests: list[str] = []
            tab.on("request", lambda request: requests.append(request.url))
            tab.goto((site / "index.html").as_uri())
            search = tab.locator("input[data-md-component='search-query']")
            first = tab.locator(".md-search-result__list li a").first
            for _ in range(WAIT_MS // 1000):  # the search index loads in the background: type again until it answers
                search.fill("")
                search.click()
                tab.keyboard.type("tile")
                try:
                    first.wait_for(timeout=1000)
                    break
                except sync_api.TimeoutError:
                    continue
            first.click()
            tab.wait_for_load_state()
            assert tab.url.startswith("file://"), tab.url
            headings = tab.locator("article h1, article h2").all_inner_texts()
            assert any(TILING.search(h) for h in headings), f"landed on {tab.url}, headings {headings}"
        finally:
            browser.close()
    remote = [url for url in requests if not url.startswith(("file:", "data:", "blob:"))]
    assert not remote, f"the site requested {remote}"
