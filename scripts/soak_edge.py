"""Soak edge-classify as a device service: a long run on a network camera and an MQTT broker that keep dropping.

The script serves its own stand-in MJPEG camera on 127.0.0.1 (the three ../shared test photos,
cycling), starts Debian's mosquitto on a free 127.0.0.1 port, and runs the real
`edge-classify --camera URL --serve 127.0.0.1:PORT --mqtt mqtt://127.0.0.1:PORT --json` in a
subprocess, with one client reading /stream.mjpg throughout. Every --drop_every seconds the
camera goes away (connections closed, new ones refused) for --drop_for seconds and comes back; at
a third and two thirds of the run the broker stops for --broker_for seconds and restarts on the
same port. After --frames results it sends SIGTERM and checks the exit code. It prints frames
classified (and whether any frame number is missing from the results), outages survived, mean and
max frame age, frames dropped by the newest-frame policy, and the process's RSS at start, after
warm-up and at the end.

Before the soak, the classification rate with --serve and a client reading the stream is measured
against the rate without --serve, in pairs of runs back to back (in alternating order, so that a
machine getting busier or quieter favours neither) on a camera that does not drop, and reported
as the median rates and the median of the pairs' ratios. The stand-in camera sends frames faster
than the model classifies them, so the classifier, not the camera, sets the rate.

Targets (issues 11 and 19): no crash, every camera and broker outage survived, no frame number
missing from the results (the classify loop goes on while the broker is away), RSS growth after
warm-up <= 5 MB, rate with --serve and a client >= 0.95 of the rate without.

    .venv/bin/python scripts/soak_edge.py [--frames 20000] [--model PATH] [--drop_every 20] [--broker_for 5]
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from edge.mqtt import RECONNECT_DELAY_S

REPO = Path(__file__).resolve().parents[1]
THIRDPARTY = REPO.parent / "shared" / "data" / "thirdparty"
DEFAULT_MODEL = THIRDPARTY / "mobilenet_v1_0.25_128_quant.tflite"  # the smallest hosted classifier, 0.5 MB
PHOTOS = ("grace_hopper.bmp", "cat.bmp", "sunflower.bmp")
FRAME_SIZE = (320, 240)  # (width, height) of the stand-in camera's frames
CAMERA_FPS = 250.0  # frames per second the stand-in camera sends: faster than the model, so the model sets the rate
PHOTO_SECONDS = 2.0  # the camera shows each photo this long, so labels change now and then
WARMUP_FRAMES = 1000  # RSS "after warm-up" is read once this many results came
RATE_FRAMES = 1500  # results per run in the rate comparison
RATE_PAIRS = 7  # pairs of runs, with and without --serve, in alternating order
RSS_TARGET_MB = 5.0
RATE_TARGET = 0.95
RESULT_TIMEOUT_S = 120.0  # no result for this long: the run has failed (a drop lasts seconds)
BROKER_START_S = 20.0  # mosquitto accepts connections within this, or the soak fails
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"  # Debian's package puts it in sbin


class StandInCamera:
    """An MJPEG network camera on 127.0.0.1: multipart/x-mixed-replace JPEG frames at `fps`.

    `drop()` closes every connection and refuses new ones, as a camera that lost power or
    network; `restore()` brings it back on the same port. `show(jpegs)` changes what it sends.
    """

    def __init__(self, jpegs: list[bytes], fps: float = CAMERA_FPS, seconds_per_jpeg: float = PHOTO_SECONDS):
        self.fps, self.seconds_per_jpeg = fps, seconds_per_jpeg
        self.jpegs = jpegs
        self.up = threading.Event()
        self.port = 0
        self.server = None
        self.restore()
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"

    def show(self, jpegs: list[bytes]) -> None:
        self.jpegs = jpegs

    def restore(self) -> None:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                started = time.monotonic()
                next_send = started
                try:
                    while camera.up.is_set():
                        jpegs = camera.jpegs
                        jpeg = jpegs[int((time.monotonic() - started) / camera.seconds_per_jpeg) % len(jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpeg) + jpeg + b"\r\n")
                        next_send += 1 / camera.fps
                        time.sleep(max(0.0, next_send - time.monotonic()))
                except OSError:
                    pass  # the reader went away

            def log_message(self, format: str, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.up.set()
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def drop(self) -> None:
        self.up.clear()
        self.server.shutdown()
        self.server.server_close()

    def close(self) -> None:
        if self.up.is_set():
            self.drop()


class Mosquitto:
    """Debian's mosquitto on 127.0.0.1:port with a config written into `folder`; stop() and start() keep the port.

    settings: lines of mosquitto.conf for the listener (authentication, TLS).
    """

    def __init__(self, folder: Path, settings: str = "allow_anonymous true"):
        self.port, self.folder, self.process = free_port(), folder, None
        # `user`: as root, mosquitto would drop to a `mosquitto` user that may not read `folder`.
        self.config = folder / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\n{settings}\npersistence false\n"
                               f"user {getpass.getuser()}\n")
        self.start()

    def start(self) -> None:
        log = self.folder / "mosquitto.log"
        with log.open("a") as stderr:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                            stderr=stderr)
        deadline = time.monotonic() + BROKER_START_S
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=BROKER_START_S)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def encode_jpeg(bgr: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def photo_jpegs() -> list[bytes]:
    import cv2

    return [encode_jpeg(cv2.resize(cv2.imread(str(THIRDPARTY / name)), FRAME_SIZE)) for name in PHOTOS]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class StreamClient(threading.Thread):
    """One viewer reading /stream.mjpg as fast as it comes; counts the bytes."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.received, self.stopped = port, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/stream.mjpg")
                response = connection.getresponse()
                while not self.stopped.is_set() and (chunk := response.read1(65536)):
                    self.received += len(chunk)
                connection.close()
            except OSError:
                pass  # edge-classify is starting or between runs
            self.stopped.wait(0.2)


class EdgeRun:
    """`edge-classify --camera URL --json [--serve]` in a subprocess, its results read on a thread."""

    def __init__(self, model: Path, camera_url: str, serve_port: int | None, threads: int, mqtt_url: str | None = None):
        command = [sys.executable, "-c", "from edge.cli import main; main()", "--model", str(model),
                   "--camera", camera_url, "--json", "--num_threads", str(threads)]
        if serve_port is not None:
            command += ["--serve", f"127.0.0.1:{serve_port}"]
        if mqtt_url is not None:
            command += ["--mqtt", mqtt_url, "--mqtt_topic", "soak/edge", "--mqtt_snapshot"]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.results: list[tuple[float, float, int]] = []  # (time received, frame_age_ms, frame)
        self.changed = threading.Condition()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_results, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True).start()

    def _read_results(self) -> None:
        for line in self.process.stdout:
            result = json.loads(line)
            with self.changed:
                self.results.append((time.monotonic(), result["frame_age_ms"], result["frame"]))
                self.changed.notify_all()

    def wait_for(self, count: int) -> None:
        with self.changed:
            while len(self.results) < count:
                if not self.changed.wait(RESULT_TIMEOUT_S) or self.process.poll() is not None and len(self.results) < count:
                    raise RuntimeError(f"edge-classify stopped delivering after {len(self.results)} results: "
                                       + "".join(self.stderr[-5:]))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def broker_recovered(stderr: list[str]) -> int:
    """Reconnections to the broker edge-classify reported (one warning line each)."""
    return sum(line.startswith("warning: MQTT broker ") and " is back after " in line for line in stderr)


def free_port() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return port


def measure_rate(model: Path, camera_url: str, served: bool, threads: int) -> float:
    """Results per second over RATE_FRAMES results after the first (start-up excluded).

    served: with --serve and a client reading /stream.mjpg throughout.
    """
    port = free_port() if served else None
    run = EdgeRun(model, camera_url, port, threads)
    client = StreamClient(port) if served else None
    if client:
        client.start()
    run.wait_for(RATE_FRAMES + 1)
    run.stop()
    if client:
        client.stopped.set()
        if client.received == 0:
            sys.exit("error: the stream client received nothing")
    return RATE_FRAMES / (run.results[RATE_FRAMES][0] - run.results[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20_000, help="results in the soak run")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--drop_every", type=float, default=20.0, help="seconds between camera outages")
    parser.add_argument("--drop_for", type=float, default=2.0, help="seconds each outage lasts")
    parser.add_argument("--broker_for", type=float, default=5.0, help="seconds each of the two broker outages lasts")
    parser.add_argument("--num_threads", type=int, default=1, help="interpreter threads")
    args = parser.parse_args()
    if not args.model.is_file() or not (THIRDPARTY / PHOTOS[0]).is_file():
        sys.exit(f"error: {args.model} or the photos in {THIRDPARTY} are absent (../shared not beside the repo)")
    if not Path(MOSQUITTO).is_file():
        sys.exit("error: mosquitto is not installed: apt-get install mosquitto")

    camera = StandInCamera(photo_jpegs())
    print(f"camera {camera.url} ({FRAME_SIZE[0]}x{FRAME_SIZE[1]}, {CAMERA_FPS:.0f} fps); model {args.model.name}, "
          f"{args.num_threads} thread(s)", flush=True)

    rates = {False: [], True: []}  # served with a client -> results per second, one per run
    for pair in range(RATE_PAIRS):
        for with_view in (False, True) if pair % 2 == 0 else (True, False):
            rates[with_view].append(measure_rate(args.model, camera.url, with_view, args.num_threads))
    baseline, served = statistics.median(rates[False]), statistics.median(rates[True])
    ratio = statistics.median(with_client / without for with_client, without in zip(rates[True], rates[False]))

    broker_folder = tempfile.TemporaryDirectory()
    broker = Mosquitto(Path(broker_folder.name))
    port = free_port()
    run = EdgeRun(args.model, camera.url, port, args.num_threads, broker.url)
    client = StreamClient(port)
    client.start()
    run.wait_for(1)
    rss_start = rss_mb(run.process.pid)
    run.wait_for(WARMUP_FRAMES)
    rss_warm = rss_mb(run.process.pid)
    drops, next_drop = 0, time.monotonic() + args.drop_every
    broker_drops_at = [args.frames // 3, 2 * args.frames // 3]  # results after which the broker goes away
    broker_drops, results_while_broker_away = 0, []
    while len(run.results) < args.frames:
        if time.monotonic() >= next_drop:
            camera.drop()
            time.sleep(args.drop_for)
            camera.restore()
            drops += 1
            next_drop = time.monotonic() + args.drop_every
        if broker_drops < len(broker_drops_at) and len(run.results) >= broker_drops_at[broker_drops]:
            results_before = len(run.results)
            broker.stop()
            time.sleep(args.broker_for)
            results_while_broker_away.append(len(run.results) - results_before)
            broker.start()
            broker_drops += 1
        run.wait_for(min(len(run.results) + 100, args.frames))
    # The last reconnection may still be due, however far paho's back-off got.
    deadline = time.monotonic() + RECONNECT_DELAY_S[1] + 5
    while broker_recovered(run.stderr) < broker_drops and time.monotonic() < deadline:
        time.sleep(0.5)
    rss_end = rss_mb(run.process.pid)
    exit_code = run.stop()
    client.stopped.set()
    camera.close()
    broker.stop()
    broker_folder.cleanup()
    summary = run.stderr[-1].strip() if run.stderr else ""
    outages = int(summary.split(" outage")[0].rsplit(" ", 1)[-1]) if " outage" in summary else 0
    dropped = int(summary.split(" dropped")[0].rsplit(" ", 1)[-1]) if " dropped" in summary else 0
    frames = [frame for _, _, frame in run.results]
    missing = frames[-1] + 1 - len(set(frames))
    ages = [age for _, age, _ in run.results]

    rows = [
        ("frames classified", f"{len(run.results)}", f">= {args.frames}"),
        ("outages survived / caused", f"{outages} / {drops}", "all"),
        ("broker outages recovered / caused", f"{broker_recovered(run.stderr)} / {broker_drops}", "all"),
        ("results while the broker was away, each outage", " / ".join(map(str, results_while_broker_away)), "> 0"),
        ("frame numbers missing from the results", f"{missing}", "0"),
        ("frame age, mean / max", f"{statistics.mean(ages):.1f} / {max(ages):.1f} ms", ""),
        ("frames dropped (newest-frame policy)", f"{dropped}", ""),
        ("RSS start / after warm-up / end", f"{rss_start:.1f} / {rss_warm:.1f} / {rss_end:.1f} MB", ""),
        ("RSS growth after warm-up", f"{rss_end - rss_warm:+.1f} MB", f"<= {RSS_TARGET_MB:.0f} MB"),
        (f"rate without --serve (median of {RATE_PAIRS} runs)", f"{baseline:.1f} frames/s", ""),
        (f"rate with --serve + 1 client (median of {RATE_PAIRS})", f"{served:.1f} frames/s", ""),
        ("rate ratio, --serve + client / without (median of pairs)", f"{ratio:.3f}", f">= {RATE_TARGET}"),
        ("exit code after SIGTERM", f"{exit_code}", "0"),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"\n| {'what':<{width}} | figure | target |\n| {'-' * width} | --- | --- |")
    for what, figure, target in rows:
        print(f"| {what:<{width}} | {figure} | {target} |")
    print(f"\nlast line of edge-classify's stderr: {summary}")
    failed = (outages != drops or broker_recovered(run.stderr) != broker_drops or missing
              or not all(results_while_broker_away) or exit_code != 0 or rss_end - rss_warm > RSS_TARGET_MB or ratio < RATE_TARGET)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
