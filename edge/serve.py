"""`--serve`: a read-only live view of a stream for a headless device, in the browser.

- `/`: the page a device's owner keeps open: the annotated video scaled to the window (the
  --crop region drawn), the scores as bars, the last label changes with their times, and the
  device's health. One self-contained page: nothing is fetched from outside the device.
- `/stream.mjpg`: the annotated frames as multipart/x-mixed-replace JPEG.
- `/events`: Server-Sent Events, for the page, Node-RED or any EventSource: each new result as
  a plain message (the --json fields), each label change as an `event: change`, the health
  every HEALTH_EVERY_S as an `event: health`. On connecting, a client gets the changes kept so
  far (CHANGES_KEPT), the latest result and the health.
- `/latest.json`: the last result (the --json fields); `/health.json`: the health.

Anything else is 404, nothing is read from disk, and at most MAX_STREAMS video and event streams
are served at once (others get 503; the short requests are always answered). It is a frame consumer beside the classify loop: `add` only keeps a
reference to the newest (frame, result), and each client's own thread annotates and encodes
the newest frame, or encodes the new results, when it is ready for them, so a slow client never
slows classification; one that falls more than EVENTS_KEPT results behind misses the oldest.

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
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from . import UserError
from .health import Health
from .results import Result, annotate

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # only this device sees the view unless another address is given
# /stream.mjpg and /events served at once. An open page holds one of each, so this lets 4 tabs
# watch; each stream encodes on its own thread, and beyond that a Pi's CPU belongs to the
# classifier. The short requests (/, /latest.json, /health.json) end at once and are not counted,
# so a health poller is answered however many tabs are open.
MAX_STREAMS = 8
STREAM_PATHS = ("/stream.mjpg", "/events")
STREAM_MAX_FPS = 15.0  # frames sent per second per client, at most: a person watching needs no more
JPEG_QUALITY = 80  # OpenCV's 0-100 scale
CLIENT_TIMEOUT_S = 10.0  # a client that takes no data for this long is dropped, freeing its place
WAIT_POLL_S = 0.5  # how often a client waiting for a frame checks whether the view is closing or it left
CLOSE_TIMEOUT_S = 3.0  # close() waits at most this long for the server and its clients to end
BOUNDARY = "frame"  # multipart boundary between JPEG parts
EVENTS_KEPT = 64  # results kept for /events clients that fall behind: a few seconds of a fast stream
CHANGES_KEPT = 20  # label changes kept for a page that connects later
HEALTH_EVERY_S = 2.0  # between `health` events
EVENTS_RETRY_MS = 2000  # an EventSource reconnects after this long when the device went away

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-classify</title>
<style>
:root { color-scheme: dark; --bg: #0f1115; --panel: #181b22; --line: #272c36; --text: #e8eaf0; --muted: #9aa3b2;
        --accent: #4fb3ff; --good: #3ecf8e; --warn: #ffb020; --bad: #ff5a5f; }
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; background: var(--bg); color: var(--text);
             font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
body { display: grid; grid-template-rows: auto minmax(0, 1fr); }
header { display: flex; gap: 1em; align-items: baseline; padding: .5em 1em; background: var(--panel);
         border-bottom: 1px solid var(--line); }
header h1 { font-size: 1em; margin: 0; }
#source { color: var(--muted); overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#connection { margin-left: auto; white-space: nowrap; }
main { display: grid; grid-template-columns: minmax(0, 1fr) minmax(17rem, 24rem); gap: 1em; padding: 1em; min-height: 0; }
#video { display: block; width: 100%; height: 100%; min-height: 0; object-fit: contain; background: #000;
         border-radius: 6px; }
aside { display: flex; flex-direction: column; gap: .7em; min-height: 0; overflow-y: auto; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .55em .9em; }
h2 { font-size: .75em; font-weight: 600; text-transform: uppercase; letter-spacing: .08em; color: var(--muted);
     margin: 0 0 .4em; }
#label { font-size: 2em; font-weight: 700; line-height: 1.15; overflow-wrap: anywhere; }
#when { color: var(--muted); }
.score { display: grid; grid-template-columns: minmax(0, 9em) 1fr 3.2em; gap: .6em; align-items: center; margin: .2em 0; }
.score .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar { height: .75em; background: var(--line); border-radius: .4em; overflow: hidden; }
.bar > div { height: 100%; background: var(--accent); border-radius: .4em; }
.score:first-child .bar > div { background: var(--good); }
.value, dd, time { font-variant-numeric: tabular-nums; }
.value { text-align: right; }
#changes { list-style: none; margin: 0; padding: 0; max-height: 9em; overflow-y: auto; }
#changes li { display: flex; gap: .6em; padding: .15em 0; border-bottom: 1px solid var(--line); }
#changes li:last-child { border-bottom: 0; }
#changes time { color: var(--muted); }
#changes .from { color: var(--muted); margin-left: auto; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.empty { color: var(--muted); }
dl { display: grid; grid-template-columns: auto 1fr; gap: .05em 1em; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; text-align: right; }
.good { color: var(--good); } .warn { color: var(--warn); } .bad { color: var(--bad); }
@media (max-width: 760px) {
  body { display: block; height: auto; }
  main { grid-template-columns: 1fr; }
  #video { height: auto; max-height: 60vh; }
}
</style>
</head>
<body>
<header><h1>edge-classify</h1><span id="source"></span><span id="connection" class="warn">connecting</span></header>
<main>
<img id="video" src="/stream.mjpg" alt="live view of the camera">
<aside>
<section><h2>Now</h2><div id="label">waiting for the first result</div><div id="when"></div></section>
<section><h2>Scores</h2><div id="scores"></div></section>
<section><h2>Last changes</h2><ol id="changes"><li class="empty">none yet</li></ol></section>
<section><h2>Device</h2><dl>
<dt>Frame rate</dt><dd id="fps">-</dd>
<dt>Frame age</dt><dd id="frame_age">-</dd>
<dt>Last frame</dt><dd id="last_frame">-</dd>
<dt>Dropped</dt><dd id="dropped">-</dd>
<dt>Skipped (still)</dt><dd id="skipped">-</dd>
<dt>Uptime</dt><dd id="uptime">-</dd>
<dt>MQTT</dt><dd id="mqtt">-</dd>
<dt>CPU temperature</dt><dd id="temperature">-</dd>
<dt>Throttling</dt><dd id="throttled">-</dd>
</dl></section>
</aside>
</main>
<script>
"use strict";
const $ = id => document.getElementById(id);
const TRIGGERS = {first: "first frame", motion: "motion", interval: "interval"};
const CHANGES_SHOWN = 20;
let latest = null;
let clockOffset = 0;  // the device's clock minus this browser's, in seconds, from the health events

function deviceNow() { return Date.now() / 1000 + clockOffset; }
function clock(seconds) { return new Date((seconds - clockOffset) * 1000).toLocaleTimeString(); }
function duration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} days`;
}
function setText(id, text, state) {
  const element = $(id);
  element.textContent = text;
  element.className = state || "";
}

function showResult(result) {
  latest = result;
  $("source").textContent = result.source;
  $("label").textContent = result.label;
  $("scores").replaceChildren(...result.top_k.map(entry => {
    const row = document.createElement("div");
    row.className = "score";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = name.title = entry.label;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = `${Math.max(0, Math.min(1, entry.score)) * 100}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = entry.score.toFixed(2);
    row.append(name, bar, value);
    return row;
  }));
  showWhen();
}

function showWhen() {
  if (!latest) return;
  const why = latest.trigger ? `, ${TRIGGERS[latest.trigger] || latest.trigger}` : "";
  $("when").textContent = `classified ${duration(deviceNow() - latest.time)} ago (${clock(latest.time)}${why})`;
}

function addChange(change) {
  const list = $("changes");
  list.querySelector(".empty")?.remove();
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.dateTime = new Date(change.time * 1000).toISOString();
  time.textContent = clock(change.time);
  const label = document.createElement("strong");
  label.textContent = change.label;
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = change.previous === null ? "first result" : `from ${change.previous}`;
  item.append(time, label, from);
  list.prepend(item);
  while (list.children.length > CHANGES_SHOWN) list.lastChild.remove();
}

function showHealth(health) {
  clockOffset = health.time - Date.now() / 1000;
  setText("fps", health.fps === null ? "-" : `${health.fps.toFixed(1)} fps`);
  setText("frame_age", health.frame_age_ms === null ? "-" : `${health.frame_age_ms.toFixed(0)} ms`,
          health.frame_age_ms > 1000 ? "warn" : "");
  setText("last_frame", health.last_frame_s === null ? "none yet" : `${duration(health.last_frame_s)} ago`,
          health.last_frame_s > 5 ? "bad" : "");
  setText("dropped", String(health.dropped));
  setText("skipped", String(health.skipped));
  setText("uptime", duration(health.uptime_s));
  setText("mqtt", health.mqtt === null ? "off" : health.mqtt, health.mqtt === "connected" ? "good"
          : health.mqtt === null ? "" : "bad");
  setText("temperature", health.cpu_temperature_c === null ? "n/a" : `${health.cpu_temperature_c.toFixed(1)} \\u00b0C`,
          health.cpu_temperature_c >= 80 ? "bad" : health.cpu_temperature_c >= 70 ? "warn" : "");
  const throttled = health.throttled;
  setText("throttled", throttled === null ? "n/a" : throttled.now.length ? throttled.now.join(", ")
          : throttled.since_boot.length ? `earlier: ${throttled.since_boot.join(", ")}` : "none",
          throttled === null ? "" : throttled.now.length ? "bad" : throttled.since_boot.length ? "warn" : "good");
}

const events = new EventSource("/events");
events.onopen = () => setText("connection", "live", "good");
events.onerror = () => setText("connection", "reconnecting", "bad");
events.onmessage = message => showResult(JSON.parse(message.data));
events.addEventListener("change", message => addChange(JSON.parse(message.data)));
events.addEventListener("health", message => showHealth(JSON.parse(message.data)));
setInterval(showWhen, 1000);
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


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class BackgroundServer:
    """A ThreadingHTTPServer serving on its own daemon threads from construction until close().

    Shared by the live view and `retrain-edge review`'s page; `name` says which in errors and thread names.
    """

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str):
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            raise UserError(f"cannot serve the {name} on {host}:{port} ({error.strerror or error})") from None
        self._server.daemon_threads = True  # a client that stays connected does not keep the process alive
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop accepting and serving; waits at most timeout_s for the serving thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout_s)


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing per request and sends whole, uncached-by-default bodies."""

    def _send(self, content_type: str, body: bytes, status: HTTPStatus = HTTPStatus.OK, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass  # a line per request would flood a service's journal or bury a command's summary


class LiveView:
    """The --serve HTTP server, on its own threads, showing the newest (frame, result) it was given.

    `health` is the run's (edge.health); without one the view keeps its own, which knows its uptime.
    """

    every_frame = True  # the video goes on while --motion skips frames; only new results become events

    def __init__(self, host: str, port: int, health: Health | None = None):
        try:
            import cv2  # noqa: F401
        except ImportError:  # picamera2 frames need no OpenCV; annotating and encoding them do
            raise UserError("--serve needs OpenCV to draw and encode frames: pip install 'retrain-edge[camera]'") from None
        self._changed = threading.Condition()
        self._newest: tuple[np.ndarray, Result] | None = None
        self._sequence = 0  # how many frames were added; identifies the newest
        self._jpeg_lock = threading.Lock()
        self._jpeg_sequence, self._jpeg = 0, b""  # the newest frame encoded so far, shared by all clients
        self.health = health or Health()
        self._last_frame_at: float | None = None  # time.monotonic() of the newest frame
        self._result_sequence = 0  # how many distinct results were added; numbers /events messages
        self._results: deque[tuple[int, Result]] = deque(maxlen=EVENTS_KEPT)
        self._changes: deque[tuple[int, dict]] = deque(maxlen=CHANGES_KEPT)  # (result number, `change` event)
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.closing = threading.Event()
        self._connections: set[socket.socket] = set()  # of the clients being served, for close(); under _changed
        self._server = BackgroundServer(host, port, type("LiveViewHandler", (_Handler,), {"view": self}), "live view")
        self.url = self._server.url
        if not is_loopback(host):
            logger.warning(f"the live view at {self.url} has no authentication: anyone who can reach "
                           "this address sees the camera")

    def add(self, frame: np.ndarray, result: Result) -> None:
        """Keep `frame` (BGR, not modified afterwards by anyone) and its result as the newest.

        A result not seen before is an event for /events, and a change when its label differs.
        """
        with self._changed:
            previous = self._newest[1] if self._newest else None
            self._newest = (frame, result)
            self._sequence += 1
            self._last_frame_at = time.monotonic()
            if result is not previous:
                self._result_sequence += 1
                self._results.append((self._result_sequence, result))
                if previous is None or result.label != previous.label:
                    self._changes.append((self._result_sequence, {
                        "time": round(result.time, 3), "label": result.label,
                        "previous": previous.label if previous else None, "frame": result.frame,
                        "score": round(result.top_k[0][1], 6) if result.top_k else None}))
            self._changed.notify_all()

    def health_json(self) -> bytes:
        """The health fields (edge.health), with the device's clock and the time since the newest frame."""
        with self._changed:
            last_frame_at = self._last_frame_at
        return json.dumps({**self.health.snapshot(), "time": round(time.time(), 3), "last_frame_s": None
                           if last_frame_at is None else round(time.monotonic() - last_frame_at, 1)}).encode()

    def next_events(self, after: int) -> tuple[list[tuple[int, Result]], list[tuple[int, dict]]]:
        """(number, result) and (number, change) numbered above `after`, oldest first, waiting up to
        WAIT_POLL_S for one. A change has the number of the result it came with; a client further
        behind than EVENTS_KEPT results gets the kept ones.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._result_sequence > after or self.closing.is_set(), WAIT_POLL_S)
            return ([(number, result) for number, result in self._results if number > after],
                    [(number, change) for number, change in self._changes if number > after])

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
        self._server.close(max(0.0, deadline - time.monotonic()))
        with self._changed:
            self._changed.wait_for(lambda: not self._connections, max(0.0, deadline - time.monotonic()))


class _Handler(QuietHandler):
    view: LiveView
    server_version = "edge-classify"
    timeout = CLIENT_TIMEOUT_S

    def do_GET(self) -> None:
        route = {"/": self._page, "/stream.mjpg": self._stream, "/events": self._events, "/latest.json": self._latest,
                 "/health.json": self._health}.get(self.path.partition("?")[0])
        if route is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        streaming = self.path.partition("?")[0] in STREAM_PATHS
        if streaming and not self.view.streams.acquire(blocking=False):
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, f"at most {MAX_STREAMS} streams at once")
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
            if streaming:
                self.view.streams.release()

    def _method_not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET")
        self.send_header("Content-Length", "0")
        self.end_headers()

    # Read-only: every other standard method is refused (http.server answers 501 to unknown ones).
    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _method_not_allowed

    def _page(self) -> None:
        self._send("text/html; charset=utf-8", PAGE)

    def _latest(self) -> None:
        self._send("application/json", self.view.latest_json())

    def _health(self) -> None:
        self._send("application/json", self.view.health_json())

    def _events(self) -> None:
        """Server-Sent Events until the client leaves or the view closes (see the module's docstring)."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(f"retry: {EVENTS_RETRY_MS}\n\n".encode())
        # On connecting: the changes kept so far, then only the latest result, then the health.
        results, changes = self.view.next_events(0)
        results, after = results[-1:], 0
        next_health = time.monotonic()
        while not self.view.closing.is_set():
            parts = [f"event: change\ndata: {json.dumps(change)}\n\n" for _, change in changes]
            parts += [f"id: {number}\ndata: {json.dumps(result.to_json())}\n\n" for number, result in results]
            after = max([after] + [number for number, _ in results + changes])
            if time.monotonic() >= next_health:
                parts.append(f"event: health\ndata: {self.view.health_json().decode()}\n\n")
                next_health = time.monotonic() + HEALTH_EVERY_S
            if parts:
                self.wfile.write("".join(parts).encode())
                self.wfile.flush()
            elif self._client_left():  # nothing to send (a still scene, an outage): no failed write will tell
                return
            results, changes = self.view.next_events(after)

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
