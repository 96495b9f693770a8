"""--serve: the read-only live view, over real HTTP on 127.0.0.1, and in a real headless Chromium."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import TEST_TIMEOUT_S
from test_service import solid_jpeg, soak

from edge.classify import ClassifyOptions, run
from edge.consumers import ConsumerOptions, frame_consumers
from edge.results import Result
from edge.serve import MAX_CLIENTS, LiveView

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
JSON_FIELDS = {"source", "frame", "time", "label", "top_k", "latency_ms", "frame_age_ms"}


@pytest.fixture
def serving(color_models, deadline):
    """edge-classify --camera <stand-in, red> --serve 127.0.0.1:0, running in a thread; yields the view's port."""
    camera = soak.StandInCamera([solid_jpeg("red")], fps=30)
    urls, summaries = [], []
    options = ClassifyOptions(camera=camera.url, model=color_models["float"], max_reconnects=0)
    consumers = frame_consumers(ConsumerOptions(serve="127.0.0.1:0"), options, urls.append)
    thread = threading.Thread(target=lambda: summaries.append(run(options, lambda result: None, consumers=consumers)))
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


def port_of(view: LiveView) -> int:
    return int(view.url.rsplit(":", 1)[1].strip("/"))


def request(port: int, method: str, path: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        connection.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
def test_other_methods_get_405(method):
    view = LiveView("127.0.0.1", 0)
    try:
        for path in ("/latest.json", "/nope"):
            status, headers = request(port_of(view), method, path)
            assert status == 405 and headers["Allow"] == "GET", (method, path)
    finally:
        view.close()


def test_closed_tabs_free_their_places_while_no_frames_come():
    """During a camera outage no frame comes to fail a write on: a tab closed meanwhile must still leave."""
    view = LiveView("127.0.0.1", 0)
    try:
        for stream in [open_stream(port_of(view)) for _ in range(MAX_CLIENTS)]:
            assert stream.status == 200
            stream.close()
        for _ in range(50):
            if request(port_of(view), "GET", "/latest.json")[0] == 200:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the places of closed streams did not come free while no frame came")
    finally:
        view.close()


def handler_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if "process_request_thread" in thread.name]


def test_close_ends_waiting_and_stalled_clients_quickly():
    view = LiveView("127.0.0.1", 0)
    waiting = open_stream(port_of(view))  # waits for a frame that never comes
    stalled = socket.create_connection(("127.0.0.1", port_of(view)))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")  # and never reads: its thread blocks in a send
    rng = np.random.default_rng(0)
    result = Result("camera", 0, time.time(), "red", [("red", 1.0)], 1.0, 2.0)
    try:
        for index in range(60):
            view.add(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), result)
            time.sleep(0.02)
        assert len(handler_threads()) >= 2
        started = time.monotonic()
        view.close()
        assert time.monotonic() - started < 4.0
        assert not handler_threads(), "close() returned with client threads still running"
    finally:
        waiting.close()
        stalled.close()


def test_serve_without_opencv_is_one_sentence():
    """picamera2 frames need no OpenCV; annotating and encoding them for --serve do."""
    code = """
import sys
sys.modules["cv2"] = None  # as where OpenCV is not installed
from edge import UserError
from edge.serve import LiveView
try:
    LiveView("127.0.0.1", 0)
except UserError as error:
    print(error)
"""
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("--serve needs OpenCV"), completed.stdout
