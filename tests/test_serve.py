"""--serve: the read-only live view, over real HTTP on 127.0.0.1, and in a real headless Chromium."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, TEST_TIMEOUT_S
from test_service import solid_jpeg, soak

from edge.classify import ClassifyOptions, run
from edge.consumers import ConsumerOptions, frame_consumers
from edge.health import Health
from edge.results import Result
from edge.serve import EVENTS_KEPT, MAX_STREAMS, LiveView

JSON_FIELDS = {"source", "frame", "time", "label", "top_k", "latency_ms", "frame_age_ms", "trigger", "region"}
HEALTH_FIELDS = {"uptime_s", "fps", "frame_age_ms", "dropped", "skipped", "mqtt", "cpu_temperature_c", "throttled",
                 "time", "last_frame_s"}


@pytest.fixture
def serving(color_models, deadline):
    """edge-classify --camera <stand-in, red> --serve 127.0.0.1:0, running in a thread, as the CLI wires it.

    Yields .port (the view's) and .camera (to change what it shows).
    """
    camera = soak.StandInCamera([solid_jpeg("red")], fps=30)
    urls, summaries = [], []
    health = Health()
    options = ClassifyOptions(camera=camera.url, model=color_models["float"], max_reconnects=0)
    consumers = frame_consumers(ConsumerOptions(serve="127.0.0.1:0"), options, urls.append, health)
    thread = threading.Thread(target=lambda: summaries.append(run(options, lambda result: None, health.record,
                                                                  consumers)))
    thread.start()
    try:
        for _ in range(100):
            if urls:
                break
            time.sleep(0.05)
        yield SimpleNamespace(port=int(urls[0].rsplit(":", 1)[1].strip("/")), camera=camera)
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


def open_stream(port: int, path: str = "/stream.mjpg") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path)
    return connection.getresponse()


def read_part(stream: http.client.HTTPResponse) -> np.ndarray:
    """The next JPEG of a multipart/x-mixed-replace stream, decoded."""
    assert stream.fp.readline() == b"--frame\r\n"
    headers = dict(line.decode().strip().split(": ", 1) for line in iter(stream.fp.readline, b"\r\n"))
    assert headers["Content-Type"] == "image/jpeg"
    jpeg = stream.fp.read(int(headers["Content-Length"]))
    assert stream.fp.read(2) == b"\r\n"
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def read_events(port: int, count: int) -> list[tuple[str, dict]]:
    """The first `count` Server-Sent Events of /events, as (event type, data)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/events")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    events, fields = [], {}
    try:
        while len(events) < count:
            line = response.fp.readline().decode().rstrip("\n")
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif "data" in fields:
                events.append((fields.get("event", "message"), json.loads(fields["data"])))
                fields = {}
            else:
                assert set(fields) <= {"retry"}, fields
                fields = {}
    finally:
        connection.close()
    return events


def test_endpoints(serving):
    port = serving.port
    status, content_type, page = get(port, "/")
    assert status == 200 and content_type == "text/html; charset=utf-8"
    # One self-contained page, pushed to: nothing from another host, no polling.
    assert b'src="/stream.mjpg"' in page and b'EventSource("/events")' in page
    assert b"http" not in page and b"fetch(" not in page

    result = latest(port)
    assert set(result) == JSON_FIELDS and result["label"] == "red" and result["top_k"][0]["label"] == "red"
    assert result["frame_age_ms"] >= result["latency_ms"] > 0

    stream = open_stream(port)
    assert stream.status == 200
    assert stream.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=frame"
    frames = [read_part(stream), read_part(stream)]
    stream.close()
    for frame in frames:  # the camera's 64x48 red frame, annotated on a dark band at the top
        assert frame.shape == (48, 64, 3)
        blue, green, red = np.median(frame[32:].reshape(-1, 3), axis=0)
        assert red > 200 and green < 60 and blue < 60
        assert np.median(frame[:24]) < 120

    status, content_type, body = get(port, "/health.json")
    health = json.loads(body)
    assert status == 200 and content_type == "application/json" and set(health) == HEALTH_FIELDS
    assert health["mqtt"] is None and health["last_frame_s"] < 5 and health["uptime_s"] > 0

    for path in ("/nope", "/../", "/../etc/passwd", "/stream.mjpg/../latest.json", "/index.html", "/latest.json/",
                 "/events/"):
        assert get(port, path)[0] == 404, path


def test_events_push_changes_results_and_health(serving):
    events = read_events(serving.port, 3)  # on connecting: the changes so far, the latest result, the health
    assert [kind for kind, _ in events] == ["change", "message", "health"], events
    change, result, health = (data for _, data in events)
    assert change["label"] == "red" and change["previous"] is None and set(result) == JSON_FIELDS
    assert set(health) == HEALTH_FIELDS

    serving.camera.show([solid_jpeg("green")])
    for _ in range(100):
        if latest(serving.port)["label"] == "green":
            break
        time.sleep(0.05)
    # A client that connects later gets the changes it missed, then results as they come.
    events = read_events(serving.port, 5)
    assert [kind for kind, _ in events] == ["change", "change", "message", "health", "message"], events
    red, green, first, _, pushed = (data for _, data in events)
    assert (red["label"], red["previous"], green["label"], green["previous"]) == ("red", None, "green", "red")
    assert green["time"] >= red["time"] and pushed["frame"] > first["frame"] >= green["frame"]


def test_a_client_that_never_reads_events_never_slows_add():
    view = LiveView("127.0.0.1", 0)
    stalled = socket.create_connection(("127.0.0.1", port_of(view)))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /events HTTP/1.0\r\n\r\n")
    frame = np.zeros((48, 64, 3), np.uint8)
    top_k = [(f"label {index} " + "x" * 200, 1.0 / (index + 1)) for index in range(10)]  # ~2.5 KB per event
    try:
        slowest = 0.0
        for index in range(2000):
            result = Result("camera", index, time.time(), f"label {index % 2}", top_k, 1.0, 2.0)
            started = time.perf_counter()
            view.add(frame, result)
            slowest = max(slowest, time.perf_counter() - started)
        # add() only appends to a bounded queue: the client's thread, blocked writing, holds nothing add() needs.
        assert slowest < 0.5, slowest
        assert len(view.next_events(0)[0]) == EVENTS_KEPT
    finally:
        stalled.close()
        view.close()


def test_four_tabs_fit_and_only_streams_beyond_max_get_503(serving):
    serving = serving.port
    # Four open pages, each holding its video and its events.
    streams = [open_stream(serving, path) for _ in range(4) for path in ("/stream.mjpg", "/events")]
    streams += [open_stream(serving) for _ in range(MAX_STREAMS - len(streams))]
    try:
        assert all(stream.status == 200 for stream in streams)
        assert open_stream(serving).status == 503 and open_stream(serving, "/events").status == 503
        # The short requests are answered however many streams are open: a health poller, a new page.
        assert [get(serving, path)[0] for path in ("/health.json", "/latest.json", "/")] == [200, 200, 200]
    finally:
        streams.pop().close()
    for _ in range(50):  # the server sees the closed stream at its next frame
        extra = open_stream(serving)
        if extra.status == 200:
            extra.close()
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
def test_page_in_headless_chromium_follows_events(serving):
    playwright = pytest.importorskip("playwright.sync_api")
    base = f"http://127.0.0.1:{serving.port}/"
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            requested = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(base, timeout=TEST_TIMEOUT_S * 1000)
            wait = lambda script: page.wait_for_function(script, timeout=20_000)  # noqa: E731
            wait("document.getElementById('label').textContent === 'red'")
            wait("document.getElementById('connection').textContent === 'live'")
            assert page.locator("#scores .score .name").first.inner_text() == "red"
            assert page.locator("#changes li").first.inner_text().split()[-2:] == ["first", "result"]
            wait("document.querySelector('#video').naturalWidth === 64")
            video = page.locator("#video").bounding_box()
            assert video["width"] > 4 * 64 and video["height"] > 4 * 48  # scaled to the window

            serving.camera.show([solid_jpeg("green")])
            wait("document.getElementById('label').textContent === 'green'")
            assert "from red" in page.locator("#changes li").first.inner_text()
            assert page.locator("#changes li").count() == 2
            wait("document.getElementById('fps').textContent.endsWith(' fps')")  # the first stats window
            assert page.locator("#mqtt").inner_text() == "off"
            assert page.locator("#uptime").inner_text().endswith(" s")
        finally:
            browser.close()
    # Everything came from the device, and results were pushed: the page never asked for /latest.json.
    assert requested and all(url.startswith(base) for url in requested), requested
    assert sorted({url.removeprefix(base) for url in requested}) == ["", "events", "stream.mjpg"], requested


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
        for stream in [open_stream(port_of(view)) for _ in range(MAX_STREAMS)]:
            assert stream.status == 200
            stream.close()
        for _ in range(50):
            extra = open_stream(port_of(view))
            extra.close()
            if extra.status == 200:
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
    # edge-classify finds it with the other options, before the model is loaded or the camera opened.
    code = """
import sys
sys.modules["cv2"] = None
from edge.cli import main
main()
"""
    for option in (["--serve", "127.0.0.1:0"], ["--save", "out.avi"], ["--display"]):
        completed = subprocess.run([sys.executable, "-c", code, "--model", "no-such-model.tflite", "--camera", "picamera",
                                    *option], capture_output=True, text=True, timeout=60, env={**os.environ, "DISPLAY": ":0"})
        assert completed.returncode == 2, completed.stderr
        assert completed.stderr == "error: --save, --display and --serve need OpenCV: pip install 'retrain-edge[camera]'\n"
