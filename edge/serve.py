"""`--serve`: a read-only live view of a stream for a headless device, in the browser.

`/` is a page with the live annotated video and the current top-k, `/stream.mjpg` the annotated
frames as multipart/x-mixed-replace JPEG, `/latest.json` the last result (the --json fields);
anything else is 404, nothing is read from disk, and at most MAX_CLIENTS requests are served at
once (others get 503). It is a frame consumer beside the classify loop: `add` only keeps a
reference to the newest (frame, result), and each client's own thread annotates and encodes
the newest frame when it is ready for one, so a slow client never slows classification.

The standard library's ThreadingHTTPServer is enough for a handful of local viewers and adds
nothing to install on the device.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import select
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from . import UserError
from .results import Result, annotate

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # only this device sees the view unless another address is given
MAX_CLIENTS = 4  # requests served at once: a Pi's CPU belongs to the classifier
STREAM_MAX_FPS = 15.0  # frames sent per second per client, at most: a person watching needs no more
JPEG_QUALITY = 80  # OpenCV's 0-100 scale
CLIENT_TIMEOUT_S = 10.0  # a client that takes no data for this long is dropped, freeing its place
WAIT_POLL_S = 0.5  # how often a client waiting for a frame checks whether the view is closing or it left
CLOSE_TIMEOUT_S = 3.0  # close() waits at most this long for the server and its clients to end
BOUNDARY = "frame"  # multipart boundary between JPEG parts

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-classify</title>
<style>
body { font-family: sans-serif; margin: 1em; background: #111; color: #eee; }
img { max-width: 100%; background: #000; }
#label { font-size: 2em; margin: 0.3em 0; }
#top_k { font-family: monospace; }
</style>
</head>
<body>
<img src="/stream.mjpg" alt="live view">
<p id="label">waiting for the first result</p>
<p id="details"></p>
<ol id="top_k"></ol>
<script>
const REFRESH_MS = 500;
async function refresh() {
  try {
    const response = await fetch("/latest.json", {cache: "no-store"});
    const result = response.ok ? await response.json() : null;
    if (result) {
      document.getElementById("label").textContent = result.label;
      document.getElementById("details").textContent =
        `${result.source} frame ${result.frame}, ${result.frame_age_ms.toFixed(0)} ms old`;
      const list = document.getElementById("top_k");
      list.replaceChildren(...result.top_k.map(entry => {
        const item = document.createElement("li");
        item.textContent = `${entry.label} ${entry.score.toFixed(3)}`;
        return item;
      }));
    }
  } catch (error) {
    document.getElementById("details").textContent = "edge-classify is not answering";
  }
  setTimeout(refresh, REFRESH_MS);
}
refresh();
</script>
</body>
</html>
""".encode()


def parse_address(address: str) -> tuple[str, int]:
    """"[HOST:]PORT" -> (host, port); the host defaults to DEFAULT_HOST. Raises UserError."""
    host, _, port = address.rpartition(":")
    host = host or DEFAULT_HOST
    if not port.isdigit() or int(port) > 65535 or ":" in host:
        raise UserError(f"--serve takes [HOST:]PORT with an IPv4 address or name, e.g. 8080 or 0.0.0.0:8080, not {address}")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class LiveView:
    """The --serve HTTP server, on its own threads, showing the newest (frame, result) it was given."""

    def __init__(self, host: str, port: int):
        try:
            import cv2  # noqa: F401
        except ImportError:  # picamera2 frames need no OpenCV; annotating and encoding them do
            raise UserError("--serve needs OpenCV to draw and encode frames: pip install 'retrain-edge[camera]'") from None
        self._changed = threading.Condition()
        self._newest: tuple[np.ndarray, Result] | None = None
        self._sequence = 0  # how many frames were added; identifies the newest
        self._jpeg_lock = threading.Lock()
        self._jpeg_sequence, self._jpeg = 0, b""  # the newest frame encoded so far, shared by all clients
        self.clients = threading.BoundedSemaphore(MAX_CLIENTS)
        self.closing = threading.Event()
        self._connections: set[socket.socket] = set()  # of the clients being served, for close(); under _changed
        handler = type("LiveViewHandler", (_Handler,), {"view": self})
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            raise UserError(f"cannot serve the live view on {host}:{port} ({error.strerror or error})") from None
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/"
        if not _is_loopback(host):
            logger.warning(f"the live view at {self.url} has no authentication: anyone who can reach "
                           "this address sees the camera")
        self._thread = threading.Thread(target=self._server.serve_forever, name="live view", daemon=True)
        self._thread.start()

    def add(self, frame: np.ndarray, result: Result) -> None:
        """Keep `frame` (BGR, not modified afterwards by anyone) and its result as the newest."""
        with self._changed:
            self._newest = (frame, result)
            self._sequence += 1
            self._changed.notify_all()

    def latest_json(self) -> bytes:
        """The newest result's --json fields, `null` before the first."""
        with self._changed:
            result = self._newest[1] if self._newest else None
        return json.dumps(result.to_json() if result else None).encode()

    def next_jpeg(self, after: int) -> tuple[int, bytes] | None:
        """(sequence, annotated JPEG) of a frame newer than `after`, or None if none came for WAIT_POLL_S."""
        import cv2

        with self._changed:
            if self._sequence <= after:
                self._changed.wait(WAIT_POLL_S)
            if self._sequence <= after:
                return None
            sequence, (frame, result) = self._sequence, self._newest
        with self._jpeg_lock:
            if self._jpeg_sequence < sequence:
                _, encoded = cv2.imencode(".jpg", annotate(frame, result), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                self._jpeg_sequence, self._jpeg = sequence, encoded.tobytes()
            return self._jpeg_sequence, self._jpeg

    def admit(self, connection: socket.socket) -> bool:
        """Count a client's connection in, for close(); False once the view is closing."""
        with self._changed:
            if self.closing.is_set():
                return False
            self._connections.add(connection)
            return True

    def leave(self, connection: socket.socket) -> None:
        with self._changed:
            self._connections.discard(connection)
            self._changed.notify_all()

    def close(self) -> None:
        """Stop serving; the server and every client's thread end within CLOSE_TIMEOUT_S."""
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        with self._changed:
            self.closing.set()
            self._changed.notify_all()
            for connection in self._connections:  # wakes a thread blocked sending to a client that stopped reading
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._changed:
            self._changed.wait_for(lambda: not self._connections, max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    view: LiveView
    server_version = "edge-classify"
    timeout = CLIENT_TIMEOUT_S

    def do_GET(self) -> None:
        route = {"/": self._page, "/stream.mjpg": self._stream, "/latest.json": self._latest}.get(self.path.partition("?")[0])
        if route is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        if not self.view.clients.acquire(blocking=False):
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, f"at most {MAX_CLIENTS} clients at once")
            return
        try:
            if not self.view.admit(self.connection):
                self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "the live view is closing")
                return
            try:
                route()
            except OSError:
                pass  # the client went away or stopped reading, or close() shut it: its place is free again
            finally:
                self.view.leave(self.connection)
        finally:
            self.view.clients.release()

    def _method_not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET")
        self.send_header("Content-Length", "0")
        self.end_headers()

    # Read-only: every other standard method is refused (http.server answers 501 to unknown ones).
    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _method_not_allowed

    def _send(self, content_type: str, body: bytes) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _page(self) -> None:
        self._send("text/html; charset=utf-8", PAGE)

    def _latest(self) -> None:
        self._send("application/json", self.view.latest_json())

    def _stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        sequence, next_send = 0, time.monotonic()
        while not self.view.closing.is_set():
            newest = self.view.next_jpeg(sequence)
            if newest is None:
                if self._client_left():  # no frame came (a camera outage): no failed write will tell
                    return
                continue
            sequence, jpeg = newest
            self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                             + jpeg + b"\r\n")
            next_send += 1 / STREAM_MAX_FPS
            time.sleep(max(0.0, next_send - time.monotonic()))
            next_send = max(next_send, time.monotonic())

    def _client_left(self) -> bool:
        """True when the client closed its end: its socket reads as ended (it never sends anything more)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        try:
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def log_message(self, format: str, *args) -> None:
        pass  # a line per request would flood a service's journal; errors reach the client
