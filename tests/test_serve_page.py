"""The try-it page at `/` in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

`make test` installs chromium when it is missing; on CI a missing browser fails the test instead of skipping it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import pytest

from tests.browser import require_chromium
from tests.serving import Server
from tests.test_api import page as draw_page
from tests.test_onnx_backend import tiny_model

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = require_chromium()

WAIT_MS = 30_000


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("page-model") / "bright.onnx")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page-image") / "page.png"
    cv2.imwrite(str(path), draw_page(0))
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def new_tab(browser):
    """A tab that lets Playwright's waits evaluate script despite the page's strict CSP (real users keep it)."""
    return browser.new_context(bypass_csp=True).new_page()


def count(tab) -> int:
    """The number of boxes the page shows once its last detection has come back."""
    tab.wait_for_function("document.body.dataset.state === 'idle' && document.querySelector('#summary').dataset.count"
                          " !== undefined", timeout=WAIT_MS)
    rows = tab.locator("#boxes tbody tr").count()
    assert int(tab.locator("#summary").get_attribute("data-count")) == rows
    return rows


def slide(tab, name: str, value: float) -> None:
    """Move a slider and wait for the detection it starts to be answered (the page counts answers)."""
    before = int(tab.evaluate("Number(document.body.dataset.runs || 0)"))
    tab.eval_on_selector(f"#{name}", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", value)
    tab.wait_for_function(f"Number(document.body.dataset.runs || 0) > {before}", timeout=WAIT_MS)


def test_upload_draws_the_boxes_sliders_rerun_and_the_json_downloads(browser, model, image, tmp_path):
    with Server("--onnx-model", str(model)) as srv:
        expected = srv.detect(image.read_bytes())[2]["detections"]
        assert len(expected) == 4
        tab = new_tab(browser)
        requests: list[str] = []
        tab.on("request", lambda r: requests.append(r.url))
        tab.goto(srv.url + "/")
        assert tab.input_value("#box_thresh") == "0.6"  # the server's setting, written into the page

        tab.set_input_files("#file", str(image))
        assert count(tab) == 4
        scores = [tab.locator(f"#boxes tbody tr:nth-child({i + 1}) td:nth-child(2)").inner_text() for i in range(4)]
        assert scores == [f"{d['score']:.3f}" for d in expected]
        # the first box is drawn on the canvas, in the box colour, at its first corner
        x, y = expected[0]["points"][0]
        pixel = tab.evaluate("([x, y]) => Array.from(document.querySelector('#canvas').getContext('2d')"
                             ".getImageData(x, y, 1, 1).data)", [x, y])
        assert pixel[:3] == [0, 229, 255], pixel

        slide(tab, "box_thresh", 0.95)  # above every score of the stand-in model: no boxes
        assert count(tab) == 0
        slide(tab, "box_thresh", 0.5)
        assert count(tab) == 4
        before = tab.locator("#boxes tbody tr:nth-child(1) td:nth-child(3)").inner_text()
        slide(tab, "unclip_ratio", 3.0)  # larger boxes
        assert count(tab) == 4
        assert tab.locator("#boxes tbody tr:nth-child(1) td:nth-child(3)").inner_text() != before
        grown = srv.detect(image.read_bytes(), fields={"box_thresh": "0.5", "unclip_ratio": "3"})[2]["detections"]

        with tab.expect_download(timeout=WAIT_MS) as download:
            tab.click("#download")
        saved = tmp_path / "detections.json"
        download.value.save_as(saved)
        document = json.loads(saved.read_text())
        assert document["image"] == "page.png" and document["detections"] == grown

        # a dropped file works too, and a non-image says why instead of drawing anything
        data = base64.b64encode(image.read_bytes()).decode()
        tab.evaluate("""(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
            document.querySelector('#drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true }));
        }""", data)
        assert count(tab) == 4
        not_image = tmp_path / "notes.png"
        not_image.write_text("not an image")
        tab.set_input_files("#file", str(not_image))
        tab.wait_for_function("document.querySelector('#status').className === 'error'", timeout=WAIT_MS)
        assert "not an image" in tab.inner_text("#status")
        assert all(url.startswith((srv.url, "blob:", "data:")) for url in requests), requests  # nothing external
        tab.close()
        assert srv.stop() == 0


def test_a_server_with_an_api_key_asks_for_it_under_the_pages_own_csp(browser, model, image):
    expect = sync_api.expect
    with Server("--onnx-model", str(model), env={"OPENOCR_DET_API_KEY": "k3y"}) as srv:
        tab = browser.new_page()  # the page's Content-Security-Policy enforced, as users get it
        errors: list[str] = []
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.goto(srv.url + "/")
        expect(tab.locator("#key")).to_be_visible()
        tab.set_input_files("#file", str(image))
        expect(tab.locator("#status")).to_contain_text("API key", timeout=WAIT_MS)
        tab.fill("#key", "k3y")
        tab.dispatch_event("#key", "change")
        expect(tab.locator("#summary")).to_have_attribute("data-count", "4", timeout=WAIT_MS)
        expect(tab.locator("#canvas")).to_be_visible()
        assert not [e for e in errors if "Content Security Policy" in e], errors
        tab.close()
        assert srv.stop() == 0
