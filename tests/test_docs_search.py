"""The built documentation site in a real browser, opened from disk: the site's search answers a newcomer's
questions ("tile" lands on the tiling guide), and no request leaves the machine. Debian's headless Chromium
driven by Playwright, as tests/test_serve_page.py (no browser download; `make test` installs chromium)."""

from __future__ import annotations

import re

import pytest

from tests.browser import require_chromium
from tests.test_docs import site  # noqa: F401 (the session fixture that builds the site with --strict)

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = require_chromium()

WAIT_MS = 30_000
TILING = re.compile(r"\btil(e|es|ing)\b", re.I)
# a newcomer's question -> the guide among the search's first three results
QUESTIONS = {"nginx": "guides/serving.html", "int8": "guides/export.html", "multi-GPU": "guides/training.html",
             "resume killed predict": "guides/large-runs.html", "ICDAR 2015": "getting-started.html"}


def search(tab, query: str):
    """Put the whole query into the site's search at once (typed key by key, a busy machine's first answer may be
    to its first letters) and return the result links once they have stopped changing."""
    box = tab.locator("input[data-md-component='search-query']")
    links = tab.locator(".md-search-result__list > li > a")
    for _ in range(WAIT_MS // 1000):  # the search index loads in the background: ask again until it answers
        box.fill("")
        box.click()
        box.fill(query)
        tab.keyboard.press("End")  # a key event too: the search listens for keys as well as for input
        try:
            links.first.wait_for(timeout=1000)
        except sync_api.TimeoutError:
            continue
        seen, still = None, 0
        for _ in range(50):  # up to 5 s for the answer to settle: the same first three for 0.5 s
            top = [links.nth(i).get_attribute("href") for i in range(min(3, links.count()))]
            still = still + 1 if top == seen else 0
            if still >= 5:
                break
            seen = top
            tab.wait_for_timeout(100)
        return links
    return links


def test_search_from_disk_lands_on_the_guide_that_answers(site):  # noqa: F811
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("request", lambda request: requests.append(request.url))
            tab.goto((site / "index.html").as_uri())
            search(tab, "tile").first.click()  # the first result
            tab.wait_for_load_state()
            assert tab.url.startswith("file://"), tab.url
            headings = tab.locator("article h1, article h2").all_inner_texts()
            assert any(TILING.search(h) for h in headings), f"'tile' led to {tab.url}, headings {headings}"
            for query, page in QUESTIONS.items():
                tab.goto((site / "index.html").as_uri())
                links = search(tab, query)
                top = [links.nth(i).get_attribute("href") for i in range(min(3, links.count()))]
                assert any(page in href for href in top), f"{query!r}: {page} is not among the first results {top}"
        finally:
            browser.close()
    assert len(requests) > 10
    remote = [url for url in requests if not url.startswith(("file:", "data:", "blob:", "about:"))]
    assert not remote, f"the site requested {remote}"
