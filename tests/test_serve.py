"""`openocr-det serve` as a client sees it: a real server process on 127.0.0.1 (a random port), real HTTP.

The model is the stand-in ONNX detector of test_onnx_backend (its map follows the bright "words" of the test
pages), so the boxes are known and the tests are fast; every request loop is bounded.
"""

from __future__ import annotations

import base64
import http.client
import json
import signal
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import test_api
from tests.serving import Server, multipart, rss_mb
from tests.test_onnx_backend import tiny_model

pytest.importorskip("fastapi")
pages = test_api.pages  # the API tests' fixture: three PNG pages and a JPEG with bright "words"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("serve-model") / "bright.onnx")


@pytest.fixture(scope="module")
def server(model):
    with Server("--onnx-model", str(model), "--max-wait-ms", "50", "--max-pixels", "20e6") as srv:
        yield srv
        assert srv.stop() == 0, srv.output()


def big_page(h: int = 3000, w: int = 4000) -> bytes:
    """A large, cheap-to-send PNG (flat with a few words): slow to decode, small on the wire."""
    image = np.full((h, w, 3), 20, np.uint8)
    for k in range(6):
        cv2.rectangle(image, (200 + 500 * k, 300 + 300 * k), (600 + 500 * k, 420 + 300 * k), (240, 240, 240), -1)
    return cv2.imencode(".png", image)[1].tobytes()


def png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels with a few KB of deflate: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    rows = b"".join(packer.compress(b"\x00" * (w + 1)) for _ in range(64)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def cli_boxes(cli, tmp_path: Path, image: Path, *flags: str) -> list:
    out = tmp_path / f"cli{len(list(tmp_path.iterdir()))}"
    code, _, err = cli("predict", image, *flags, "--output", out, "--no-vis")
    assert code == 0, err
    line = (out / "det_results.txt").read_text().splitlines()[0]
    return json.loads(line.split("\t", 1)[1])


# -- boxes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings", [
    {},
    {"box_type": "poly", "unclip_ratio": "2.0"},
    {"thresh": "0.5", "box_thresh": "0.7"},
    {"tile": "128"},
])
def test_boxes_equal_the_clis_for_the_same_image_and_settings(cli, tmp_path, server, model, pages, settings):
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    for name in ("p0.png", "p3.jpg"):
        expected = cli_boxes(cli, tmp_path, pages / name, "--onnx-model", str(model), *flags)
        assert expected, "the stand-in model finds the drawn words"
        data = (pages / name).read_bytes()
        status, _, body = server.detect(data, fields=settings)
        assert status == 200, body
        assert body["detections"] == expected
        h, w = cv2.imread(str(pages / name)).shape[:2]
        assert (body["width"], body["height"]) == (w, h)
        assert set(body["timing_ms"]) >= {"decode", "inference", "postprocess", "total"}
        query = "&".join(f"{k}={v}" for k, v in settings.items())  # the same settings in the query string
        assert server.detect(data, query=query)[2]["detections"] == expected
        as_json = {"image_base64": base64.b64encode(data).decode(), **settings}
        assert server.detect_json(as_json)[2]["detections"] == expected


def test_concurrent_requests_are_batched_and_give_the_same_boxes(server, pages):
    data = [(pages / f"p{i}.png").read_bytes() for i in range(3)]
    alone = [server.detect(d)[2]["detections"] for d in data]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: server.detect(data[i % 3]), range(24)))
    assert all(status == 200 for status, _, _ in answers)
    assert [body["detections"] for _, _, body in answers] == [alone[i % 3] for i in range(24)]
    assert max(body["batch"] for _, _, body in answers) > 1  # same-size pages ran together
    _, _, metrics = server.get("/metrics")
    text = metrics.decode()
    assert 'openocr_det_requests_total{endpoint="/v1/detect",status="200"}' in text
    assert "openocr_det_batch_size_bucket" in text and "openocr_det_queue_depth 0.0" in text


# -- hostile input ---------------------------------------------------------------------------------------
def test_hostile_inputs_get_a_4xx_naming_the_problem_and_the_server_goes_on(server, pages):
    good = (pages / "p3.jpg").read_bytes()
    png = (pages / "p0.png").read_bytes()
    text_form, text_kind = multipart({"image": "text, no @"})
    cases = [
        (server.detect(b"hello, not an image", filename="x.png"), 415, "not an image"),
        (server.detect(b""), 422, "empty"),
        (server.detect(good[: len(good) // 2], filename="cut.jpg"), 422, "truncated"),
        (server.detect(png[: len(png) // 2]), 422, "truncated"),
        (server.request("/v1/detect", text_form, {"Content-Type": text_kind}), 422, "text, not a file"),
        (server.detect(good, field="file"), 422, "form field 'file' is a file; only `image` takes a file: send it "
                                                 "as `image`"),
        (server.detect(good, fields={"picture": "x"}), 422, "unknown form field 'picture'"),
        (server.detect(good, query="tresh=0.3"), 422, "unknown query parameter 'tresh'"),
        (server.detect(good, fields={"thresh": "high"}), 422, "thresh='high' is not a number"),
        (server.detect(good, fields={"box_thresh": "1.5"}), 422, "box_thresh must be a number between 0 and 1"),
        (server.detect(good, fields={"box_type": "circle"}), 422, "box_type must be one of"),
        (server.detect(good, fields={"tile": "100"}), 422, "multiple of 32"),
        (server.request("/v1/detect", good, {"Content-Type": "image/jpeg"}), 415, "multipart/form-data"),
        (server.request("/v1/detect", b"{not json", {"Content-Type": "application/json"}), 400, "not valid JSON"),
        (server.detect_json({"image_base64": "***"}), 422, "not valid base64"),
        (server.detect_json({"image_url": "http://169.254.169.254/"}), 422, "unknown JSON key 'image_url'"),
        (server.detect_json({"image": "x"}), 422, "goes in `image_base64`"),
        (server.detect_json({"thresh": 0.5}), 422, "no string `image_base64`"),
        (server.request("/v1/detect", b"--x\r\nbroken", {"Content-Type": "multipart/form-data"}), 400, None),
        (server.get("/v1/detect"), 405, "Method Not Allowed"),
        (server.get("/nothing-here"), 404, "Not Found"),
    ]
    for (status, headers, body), want, words in cases:
        assert status == want, body
        assert headers["Content-Type"].startswith("application/json") and set(body) == {"error"}, body
        if words:
            assert words in body["error"], body
    assert server.get("/healthz")[0] == 200
    assert server.detect(good)[0] == 200


def test_bodies_over_the_upload_limit_get_413_before_being_read(model, pages):
    with Server("--onnx-model", str(model), "--max-upload-mb", "0.05") as srv:
        # a declared length over the limit is refused from the headers: the body is never sent
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.putrequest("POST", "/v1/detect")
        conn.putheader("Content-Type", "multipart/form-data; boundary=x")
        conn.putheader("Content-Length", str(10 ** 9))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413 and "--max-upload-mb" in json.loads(response.read())["error"]
        conn.close()
        # a chunked body (no length) is cut off once it passes the limit
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        body, kind = multipart({"image": ("big.png", np.random.default_rng(0).bytes(200_000))})
        conn.request("POST", "/v1/detect", body=iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
                     headers={"Content-Type": kind}, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413 and "reading stopped" in json.loads(response.read())["error"]
        conn.close()
        assert srv.detect((pages / "p3.jpg").read_bytes())[0] == 200  # under the limit
        assert srv.stop() == 0


def test_images_over_the_pixel_limit_get_413_from_the_header_without_being_decoded(server):
    before = rss_mb(server.proc.pid, "VmHWM")
    bomb = png_header_only(40000, 40000)  # 1.6 G pixels (4.8 GB decoded) in a few KB
    assert len(bomb) < 200_000
    status, _, body = server.detect(bomb)
    assert status == 413 and "1,600,000,000 pixels" in body["error"] and "not decoded" in body["error"]
    status, _, body = server.detect(png_header_only(5000, 5000))  # over this server's --max-pixels 20e6
    assert status == 413 and "5000x5000 = 25,000,000 pixels" in body["error"], body
    assert rss_mb(server.proc.pid, "VmHWM") - before < 100  # peak memory: nothing was decoded


# -- access ---------------------------------------------------------------------------------------------
def test_api_key_is_required_on_the_api_but_not_on_health_or_the_page(model, pages):
    image = (pages / "p0.png").read_bytes()
    with Server("--onnx-model", str(model), env={"OPENOCR_DET_API_KEY": "s3cret"}) as srv:
        assert srv.detect(image)[0] == 401
        status, headers, body = srv.detect(image, headers={"Authorization": "Bearer wrong"})
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer" and "Authorization: Bearer" in body["error"]
        assert srv.get("/metrics")[0] == 401 and srv.get("/v1/info")[0] == 401
        assert srv.detect(image, headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert srv.get("/v1/info", headers={"Authorization": "bearer s3cret"})[0] == 200
        assert srv.get("/healthz")[0] == 200
        status, _, page_html = srv.get("/")
        assert status == 200 and b'"needs_key": true' in page_html
        assert srv.stop() == 0


def test_info_page_docs_and_no_cors_unless_asked(server):
    status, _, info = server.get("/v1/info")
    assert status == 200 and info["backend"] == "onnx" and info["limits"]["max_pixels"] == 20_000_000
    assert info["settings"]["box_thresh"]["value"] == 0.6
    status, headers, html = server.get("/")
    assert status == 200 and b"<canvas" in html and b'"box_thresh": 0.6' in html
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert b"http://" not in html and b"https://" not in html  # nothing loads from the network
    status, _, spec = server.get("/openapi.json")
    assert status == 200 and "/v1/detect" in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]
    assert server.get("/docs")[0] == 200
    _, headers, _ = server.request("/v1/detect", method="OPTIONS",
                                   headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in headers


# -- load --------------------------------------------------------------------------------------------------
def test_a_burst_over_the_queue_is_shed_with_503_and_retry_after(model):
    big = big_page()
    with Server("--onnx-model", str(model), "--max-queue", "2", "--decode-threads", "1") as srv:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: srv.detect(big), range(12)))
        statuses = sorted(status for status, _, _ in answers)
        assert set(statuses) == {200, 503}, statuses
        assert 2 <= statuses.count(200) < 12
        shed = next(headers for status, headers, _ in answers if status == 503)
        assert shed["Retry-After"] == "1"
        assert all("--max-queue" in body["error"] for status, _, body in answers if status == 503)
        assert srv.detect(big)[0] == 200  # recovered
        assert 'status="503"' in srv.get("/metrics")[2].decode()
        assert srv.stop() == 0


def test_a_request_over_the_timeout_gets_504(model):
    with Server("--onnx-model", str(model), "--timeout-s", "0.02") as srv:
        status, _, body = srv.detect(big_page())
        assert status == 504 and "--timeout-s" in body["error"]
        assert srv.get("/healthz")[0] == 200
        assert srv.stop() == 0


def test_sigterm_stops_accepting_finishes_requests_in_flight_and_exits_0(model):
    big = big_page()
    with Server("--onnx-model", str(model), "--decode-threads", "1") as srv:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(srv.detect, big) for _ in range(4)]
            deadline = time.monotonic() + 30
            while "openocr_det_queue_depth 4.0" not in srv.get("/metrics")[2].decode():  # all four admitted
                assert time.monotonic() < deadline, "the requests never arrived"
                time.sleep(0.02)
            srv.proc.send_signal(signal.SIGTERM)
            answers = [f.result(timeout=60) for f in futures]
        assert [status for status, _, _ in answers] == [200] * 4
        assert all(body["detections"] for _, _, body in answers)
        assert srv.stop() == 0
        assert "stopped" in srv.output() and "Traceback" not in srv.output()
        with pytest.raises(OSError):
            http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5).request("GET", "/healthz")


def test_workers_share_the_port_and_metrics_add_up(model, pages):
    image = (pages / "p1.png").read_bytes()
    with Server("--onnx-model", str(model), "--workers", "2") as srv:
        srv.wait_healthy()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: srv.detect(image), range(16)))
        assert [status for status, _, _ in answers] == [200] * 16
        assert len({json.dumps(body["detections"]) for _, _, body in answers}) == 1
        text = srv.get("/metrics")[2].decode()
        assert 'openocr_det_requests_total{endpoint="/v1/detect",status="200"} 16.0' in text
        assert srv.stop() == 0


@pytest.mark.slow
def test_a_torch_checkpoint_serves_the_boxes_predict_gives(cli, tmp_path, random_ckpt, pages):
    flags = ["--device", "cpu", "--thresh", "0.58", "--box-thresh", "0"]  # the random model's map, cut in blobs
    expected = cli_boxes(cli, tmp_path, pages / "p1.png", "-w", str(random_ckpt), *flags)
    assert expected
    with Server("-w", str(random_ckpt), *flags) as srv:
        status, _, body = srv.detect((pages / "p1.png").read_bytes())
        assert status == 200 and body["detections"] == expected
        assert srv.get("/v1/info")[2]["backend"] == "torch"
        assert srv.stop() == 0


def test_an_onnx_server_runs_on_the_lean_install_without_torch(model, pages):
    from tests.test_imports import BLOCKER, TRAINING_ONLY

    launch = (f"BLOCKED = {TRAINING_ONLY!r}\n{BLOCKER}import runpy\nsys.argv = ['openocr-det', *sys.argv[1:]]\n"
              "runpy.run_module('openocr_cli', run_name='__main__')\n")
    with Server("--onnx-model", str(model), launcher=("-c", launch)) as srv:
        status, _, body = srv.detect((pages / "p0.png").read_bytes())
        assert status == 200 and len(body["detections"]) == 4
        assert srv.stop() == 0


# -- start-up errors -------------------------------------------------------------------------------------
def test_start_up_errors_are_one_clear_message(cli, tmp_path, model):
    code, _, err = cli("serve", "--onnx-model", tmp_path / "missing.onnx", "--port", "0")
    assert code != 0 and "missing.onnx" in err and "Traceback" not in err
    code, _, err = cli("serve", "--onnx-model", model, "--api-key", " ")
    assert code == 2 and "--api-key" in err
    busy = __import__("socket").socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        code, _, err = cli("serve", "--onnx-model", model, "--port", busy.getsockname()[1])
        assert code == 1 and "cannot listen on 127.0.0.1" in err and "--port" in err
    finally:
        busy.close()


def test_json_image_may_be_a_data_url(server, pages):
    data = (pages / "p2.png").read_bytes()
    plain = server.detect(data)[2]["detections"]
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert server.detect_json({"image_base64": url})[2]["detections"] == plain


# -- PDFs ----------------------------------------------------------------------------------------------
def words_pdf(path: Path, pages: int, words: int = 3) -> Path:
    """A PDF of dark pages with bright rectangles ("words") at places that differ per page."""
    pdfium = pytest.importorskip("pypdfium2")
    raw = pdfium.raw
    doc = pdfium.PdfDocument.new()
    for index in range(pages):
        page = doc.new_page(400, 300)
        for x, y, w, h, grey in [(0, 0, 400, 300, 0)] + [(30 + 60 * k + 20 * index, 40 + 70 * k, 120, 18, 255)
                                                          for k in range(words)]:
            rect = raw.FPDFPageObj_CreateNewRect(x, y, w, h)
            raw.FPDFPageObj_SetFillColor(rect, grey, grey, grey, 255)
            raw.FPDFPath_SetDrawMode(rect, raw.FPDF_FILLMODE_ALTERNATE, False)
            raw.FPDFPage_InsertObject(page, rect)
        raw.FPDFPage_GenerateContent(page)
    doc.save(str(path))
    doc.close()
    return path


def test_a_pdf_gets_each_pages_boxes_in_order_equal_to_predicts(cli, tmp_path, server, model):
    doc = words_pdf(tmp_path / "doc.pdf", 2)
    out = tmp_path / "cli"
    code, _, err = cli("predict", doc, "--onnx-model", str(model), "--output", out, "--no-vis")
    assert code == 0, err
    expected = [json.loads(line.split("\t", 1)[1]) for line in (out / "det_results.txt").read_text().splitlines()]
    status, _, body = server.detect(doc.read_bytes())
    assert status == 200, body
    assert body["page_count"] == 2 and [page["page"] for page in body["pages"]] == [1, 2]
    assert [page["detections"] for page in body["pages"]] == expected and len(expected[0]) == 3
    assert expected[0] != expected[1]
    assert all(abs(page["width"] - 1111) <= 1 and abs(page["height"] - 833) <= 1 for page in body["pages"])  # 200 dpi


def test_pdfs_over_the_page_or_pixel_limits_or_damaged_get_4xx(tmp_path, server):
    status, _, body = server.detect(words_pdf(tmp_path / "long.pdf", 21, words=1).read_bytes())
    assert status == 413 and "21 pages" in body["error"] and "--max-pages" in body["error"]
    status, _, body = server.detect(b"%PDF-1.7\n garbage")
    assert status == 422 and "the PDF" in body["error"] and "openocr-det-upload" not in body["error"]
