"""--serve: the read-only live view, over real HTTP on 127.0.0.1, and in a real headless Chromium."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time

import cv2
import numpy as np
import pytest
from test_edge import color_models  # noqa: F401
from test_service import TEST_TIMEOUT_S, deadline, solid_jpeg, soak  # noqa: F401

from edge.classify import ClassifyOptions, Result, run
from edge.serve import MAX_CLIENTS, LiveView

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
JSON_FIELDS = {"source", "frame", "time", "label", "top_k", "latency_ms", "frame_age_ms"}


@pytest.fixture
def serving(color_models, deadline):
    """edge-classify --camera <stand-in, red> --serve 127.0.0.1:0, running in a thread; yields the view's port."""
    camera = soak.StandInCamera([solid_jpeg("red")], fps=30)
    urls, summaries = [], []
    options = ClassifyOptions(camera=camera.url, model=color_models["float"], serve="127.0.0.1:0", max_reconnects=0)
    thread = threading.Thread(target=lambda: summaries.append(run(options, lambda result: None,
                                                                  on_serving=urls.append)))
    thread.start()
    try:
        for _ in range(100):
            if urls:
                break
            time.sleep(0.05)
        yield int(urls[0].rsplit(":", 1)[1].strip("/"))
    finally:
        camera.close()  # with --max_reconnects 0, a lost camera ends the run
        thread.join(TEST_TIMEOUT_S)
    assert summaries and summaries[0].source_lost


def get(port: int, path: str) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    status, content_type, body = response.status, response.getheader("Content-Type"), response.read()
    connection.close()
    return status, content_type, body


def latest(port: int) -> dict:
    for _ in range(100):
        status, content_type, body = get(port, "/latest.json")
        assert status == 200 and content_type == "application/json"
        if json.loads(body):
            return json.loads(body)
        time.sleep(0.05)
    raise AssertionError("no result in /latest.json")


def open_stream(port: int) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/stream.mjpg")
    return connection.getresponse()


def read_part(stream: http.client.HTTPResponse) -> np.ndarray:
    """The next JPEG of a multipart/x-mixed-replace stream, decoded."""
    assert stream.fp.readline() == b"--frame\r\n"
    headers = dict(line.decode().strip().split(": ", 1) for line in iter(stream.fp.readline, b"\r\n"))
    assert headers["Content-Type"] == "image/jpeg"
    jpeg = stream.fp.read(int(headers["Content-Length"]))
    assert stream.fp.read(2) == b"\r\n"
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def test_endpoints(serving):
    status, content_type, page = get(serving, "/")
    assert status == 200 and content_type == "text/html; charset=utf-8"
    assert b'src="/stream.mjpg"' in page and b"/latest.json" in page

    result = latest(serving)
    assert set(result) == JSON_FIELDS and result["label"] == "red" and result["top_k"][0]["label"] == "red"
    assert result["frame_age_ms"] >= result["latency_ms"] > 0

    stream = open_stream(serving)
    assert stream.status == 200
    assert stream.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=frame"
    frames = [read_part(stream), read_part(stream)]
    stream.close()
    for frame in frames:  # the camera's 64x48 red frame, annotated in green
        assert frame.shape == (48, 64, 3)
        blue, green, red = np.median(frame.reshape(-1, 3), axis=0)
        assert red > 200 and green < 60 and blue < 60

    for path in ("/nope", "/../", "/../etc/passwd", "/stream.mjpg/../latest.json", "/index.html", "/latest.json/"):
        assert get(serving, path)[0] == 404, path


def test_more_than_max_clients_get_503(serving):
    streams = [open_stream(serving) for _ in range(MAX_CLIENTS)]
    try:
        assert all(stream.status == 200 for stream in streams)
        assert get(serving, "/latest.json")[0] == 503
        assert get(serving, "/")[0] == 503
    finally:
        streams.pop().close()
    for _ in range(50):  # the server sees the closed stream at its next frame
        if get(serving, "/latest.json")[0] == 200:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("a place did not come free after a client left")
    for stream in streams:
        stream.close()


def test_a_client_that_never_reads_never_slows_add():
    view = LiveView("127.0.0.1", 0)
    stalled = socket.create_connection(("127.0.0.1", int(view.url.rsplit(":", 1)[1].strip("/"))))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)  # noise: ~400 KB per JPEG, fills buffers fast
    result = Result("camera", 0, time.time(), "red", [("red", 1.0)], 1.0, 2.0)
    try:
        slowest = 0.0
        for index in range(300):
            started = time.perf_counter()
            view.add(frame, result)
            slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.002)
        # add() only keeps a reference: it never waits for the client, which blocks for CLIENT_TIMEOUT_S.
        assert slowest < 0.5, slowest
    finally:
        stalled.close()
        view.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
def test_page_in_headless_chromium_shows_the_label(serving):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{serving}/", timeout=TEST_TIMEOUT_S * 1000)
            page.wait_for_function("document.getElementById('label').textContent === 'red'", timeout=20_000)
            assert page.locator("#top_k li").first.inner_text().startswith("red ")
            page.wait_for_function("document.querySelector('img').naturalWidth === 64", timeout=20_000)
        finally:
            browser.close()
