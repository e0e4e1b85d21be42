"""The service under abuse (issue 35): one request cannot take it down, memory has a budget, slow clients cannot
starve others, authentication and the Host check fail closed, workers die with their supervisor.

Real server processes on 127.0.0.1 (random ports) with the stand-in ONNX model; every wait is bounded.
"""

from __future__ import annotations

import glob
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import test_api
from tests.serving import Server, multipart, rss_mb
from tests.test_onnx_backend import tiny_model

pytest.importorskip("fastapi")
pages = test_api.pages


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("limits-model") / "bright.onnx")


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    """D1's image: 7000x7000 all-zero greyscale PNG, about 47 KB on the wire and 49 M pixels decoded."""
    return cv2.imencode(".png", np.zeros((7000, 7000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


def timed(call, *args, **kw):
    start = time.monotonic()
    result = call(*args, **kw)
    return result, time.monotonic() - start


# -- D1: work per request is bounded and cancellable ---------------------------------------------------------
def test_D1_tiles_over_the_budget_or_under_the_floor_are_refused_before_decoding(model, pages, huge_png):
    with Server("--onnx-model", str(model)) as srv:
        (status, _, body), seconds = timed(srv.detect, huge_png, query="tile=64", timeout=20)
        assert status == 422 and "at least 128" in body["error"], body
        (status, _, body), seconds = timed(srv.detect, huge_png, query="tile=128", timeout=20)
        assert status == 422 and "11,881 tiles" in body["error"] and "--max-tiles" in body["error"], body
        assert seconds < 3
        status, _, body = srv.detect((pages / "p0.png").read_bytes(), query="tile=128")
        assert status == 200 and body["detections"]
        assert srv.get("/v1/info")[2]["limits"]["max_tiles"] == 256
        assert srv.stop() == 0


def test_D1_a_pdf_page_over_the_tile_limit_is_refused_before_it_is_rendered(model, tmp_path):
    from tests.test_serve import words_pdf

    doc = words_pdf(tmp_path / "doc.pdf", 2).read_bytes()  # 400 x 300 pt: 1112 x 834 px at 200 dpi
    with Server("--onnx-model", str(model), "--max-tiles", "20") as srv:
        status, _, body = srv.detect(doc, query="tile=128")
        assert status == 422 and "1112x834 page (page 1 of the PDF)" in body["error"], body
        assert "--max-tiles" in body["error"]
        status, _, body = srv.detect(doc, query="tile=512")  # 6 tiles a page
        assert status == 200 and [len(page["detections"]) for page in body["pages"]] == [3, 3], body
        assert srv.stop() == 0


def test_D1_the_timeout_cancels_the_remaining_tiles_others_are_answered_and_sigterm_drains_in_time(
        model, pages):
    small = (pages / "p0.png").read_bytes()
    # D1's image at 100 MP: about 8,000 tiles of 128 px, several seconds even with this pointwise model on a fast
    # idle machine, so the 1.5 s timeout always comes first
    bigger = cv2.imencode(".png", np.zeros((10_000, 10_000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    with Server("--onnx-model", str(model), "--timeout-s", "1.5", "--max-tiles", "100000",
                "--max-pixels", "120e6") as srv:
        with ThreadPoolExecutor(2) as pool:
            tiled = pool.submit(timed, srv.detect, bigger, query="tile=128", timeout=60)
            time.sleep(0.5)  # the tiles are running
            (status, _, _), seconds = timed(srv.detect, small, timeout=30)
            assert status == 200 and seconds < 5, seconds
            (status, _, body), seconds = tiled.result(60)
        assert status == 504 and seconds < 1.5 + 2, (status, seconds)
        (status, _, _), seconds = timed(srv.detect, small, timeout=30)  # the cancelled tiles no longer run
        assert status == 200 and seconds < 1.5, seconds
        with ThreadPoolExecutor(1) as pool:  # SIGTERM while a tiled request runs: out within --timeout-s + 5 s
            pool.submit(srv.detect, bigger, query="tile=128", timeout=60)
            time.sleep(0.5)
            start = time.monotonic()
            code = srv.stop(timeout=30)
            assert time.monotonic() - start < 1.5 + 5
        assert code == 0, srv.output()


# -- D2: decoded pixels in flight have a budget ----------------------------------------------------------------
def test_D2_pixels_in_flight_over_the_budget_get_503_and_memory_returns_near_idle(model, huge_png):
    with Server("--onnx-model", str(model), "--max-pixels-in-flight", "60e6", "--decode-threads", "2") as srv:
        srv.detect(huge_png, timeout=60)  # first-use costs (allocator, decoder) paid
        idle = rss_mb(srv.proc.pid)
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: srv.detect(huge_png, timeout=60), range(6)))
        statuses = [status for status, _, _ in answers]
        assert 200 in statuses and 503 in statuses, statuses
        shed = [(headers, body) for status, headers, body in answers if status == 503]
        assert all(h["Retry-After"] == "1" and "--max-pixels-in-flight" in b["error"] for h, b in shed)
        assert srv.get("/v1/info")[2]["limits"]["max_pixels_in_flight"] == 60_000_000
        time.sleep(1)
        assert rss_mb(srv.proc.pid) - idle < 100
        assert srv.stop() == 0


# -- D3: slow clients cannot starve others ---------------------------------------------------------------------
def _trickle(port: int, stop: threading.Event, length: int = 200_000) -> str:
    """A client sending its body one byte at a time; the answer's status line (or what happened)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                     b"\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n")
        try:
            while not stop.is_set():
                sock.sendall(b" ")
                sock.settimeout(0.1)
                try:
                    answer = sock.recv(200)
                    return answer.split(b"\r\n", 1)[0].decode()
                except TimeoutError:
                    sock.settimeout(30)
        except OSError as exc:
            return f"closed: {exc}"
    return "stopped"


def test_D3_trickling_bodies_hold_no_queue_place_and_half_headers_are_closed(model, pages):
    image = (pages / "p0.png").read_bytes()
    with Server("--onnx-model", str(model), "--max-queue", "2", "--read-timeout-s", "2",
                "--min-upload-kbps", "1") as srv:
        stop = threading.Event()
        with ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(_trickle, srv.port, stop) for _ in range(2)]
            half = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            half.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
            time.sleep(0.5)
            statuses = []
            for _ in range(10):
                statuses.append(srv.detect(image, timeout=30)[0])
                time.sleep(0.1)
            assert statuses.count(200) >= 9, statuses
            opened = time.monotonic()
            assert half.recv(100) == b""  # closed by the server (the header deadline), not by the 10 s timeout
            assert time.monotonic() - opened < 4
            half.close()
            answers = [f.result(30) for f in slow]
            stop.set()
        assert all(" 408 " in answer for answer in answers), answers
        assert srv.stop() == 0


# -- D5 / D14 / D7: fail closed ----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["", "   "])
def test_D5_an_empty_or_blank_key_from_the_environment_refuses_to_start(model, key):
    env = dict(os.environ, OPENOCR_DET_OFFLINE="1", OPENOCR_DET_API_KEY=key, COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "openocr_cli", "serve", "--port", "0", "--onnx-model", str(model)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "OPENOCR_DET_API_KEY is empty" in proc.stderr and "Traceback" not in proc.stderr


def test_D5_the_library_refuses_a_blank_key():
    from openocr_cli.serve.app import create_app

    with pytest.raises(ValueError, match="empty or blank"):
        create_app(None, api_key=" ")


def test_D14_host_allow_list_and_browser_posts_need_a_non_simple_header(model, pages):
    image = (pages / "p0.png").read_bytes()
    body, kind = multipart({"image": ("p.png", image)})

    def post(headers: dict, skip_host: bool = False) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.putrequest("POST", "/v1/detect", skip_host=skip_host or "Host" in headers)
        for name, value in {"Content-Type": kind, "Content-Length": str(len(body)), **headers}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        status = conn.getresponse().status
        conn.close()
        return status

    with Server("--onnx-model", str(model)) as srv:
        assert srv.get("/v1/info", headers={"Host": "rebound.example"})[0] == 421
        assert srv.get("/", headers={"Host": "rebound.example:8000"})[0] == 421
        assert post({}, skip_host=True) == 400
        assert post({"Host": f"localhost:{srv.port}"}) == 200
        assert post({"Host": "127.0.0.1"}) == 200  # curl, a script: no Origin
        evil = {"Origin": "http://evil.example"}
        assert post(evil) == 403  # a cross-site form
        assert post({**evil, "X-Requested-With": "x"}) == 200  # only a page that may send it (CORS) can
        assert srv.stop() == 0
    with Server("--onnx-model", str(model), "--allowed-hosts", "ocr.example") as srv:
        assert srv.get("/healthz", headers={"Host": "ocr.example"})[0] == 200
        assert srv.get("/healthz")[0] == 421  # 127.0.0.1 is no longer in the list
        assert srv.stop() == 0


def test_D6_D7_settings_out_of_range_are_422_and_deeply_nested_json_is_400(model, pages):
    with Server("--onnx-model", str(model)) as srv:
        status, _, body = srv.detect((pages / "p0.png").read_bytes(), fields={"unclip_ratio": "1e9"})
        assert status == 422 and "unclip_ratio must be a number above 0 and at most 10" in body["error"], body
        status, _, body = srv.request("/v1/detect", b"[" * 100_000, {"Content-Type": "application/json"})
        assert status == 400 and "nested too deeply" in body["error"], body
        assert srv.get("/healthz")[0] == 200
        assert srv.stop() == 0


# -- D11: workers die with their supervisor ------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        found += [int(p) for p in Path(task).read_text().split()]
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_D11_workers_end_with_a_killed_supervisor_and_the_key_is_never_in_a_file(model):
    key = "k3y-" + os.urandom(6).hex()
    stale = tempfile.mkdtemp(prefix="openocr-det-serve-999999999-")  # a killed supervisor's leftover
    with Server("--onnx-model", str(model), "--workers", "2", env={"OPENOCR_DET_API_KEY": key}) as srv:
        srv.wait_healthy()
        assert not os.path.exists(stale)
        setups = glob.glob(os.path.join(tempfile.gettempdir(), f"openocr-det-serve-{srv.proc.pid}-*", "setup.pickle"))
        assert setups and key.encode() not in Path(setups[0]).read_bytes()
        workers = [p for p in _children(srv.proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) == 2
        srv.proc.kill()
        srv.proc.wait(10)
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text()
                  for p in workers):
            assert time.monotonic() < deadline, "the workers outlived their supervisor"
            time.sleep(0.2)
        with socket.socket() as sock:  # the port is free again
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", srv.port))
            sock.listen()
    with Server("--onnx-model", str(model)) as again:  # the dead supervisor's folder goes at the next start
        assert not glob.glob(os.path.join(tempfile.gettempdir(), f"openocr-det-serve-{srv.proc.pid}-*"))
        assert again.stop() == 0
