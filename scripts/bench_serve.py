"""Benchmark what --serve costs the classify loop, in one run.

The loop is edge-classify's stream path (640x480 BGR frame -> classify_frame -> top-k) on a real
model, handing each frame and result to a LiveView as --serve does (the view's client threads
annotate and encode the frames they send). Frames per second, the median
over --rounds rounds of --frames frames, each condition once per round (interleaved, so a shared
machine's load falls on all alike), against the loop without a LiveView; and the process's CPU
time per frame (the loop's and the serving threads'), which another process's load disturbs less:
  - serving, nobody watching (target: 1.00, nothing is kept or encoded)
  - one client reading /stream.mjpg (target: >= 0.95)
  - four clients reading /stream.mjpg (the client cap)
  - one client that opened /stream.mjpg and never reads (target: >= 0.95)

    .venv/bin/python scripts/bench_serve.py [--model ../shared/data/thirdparty/mobilenet_v2_1.0_224_quant.tflite]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.classify import classify_frame  # noqa: E402
from edge.results import Result  # noqa: E402
from edge.model import load_model  # noqa: E402
from edge.serve import MAX_STREAMS, LiveView  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "shared" / "data" / "thirdparty" / "mobilenet_v2_1.0_224_quant.tflite"
FRAME_SIZE = (480, 640)  # (height, width), a typical USB webcam
DISTINCT_FRAMES = 8  # noise frames cycled through: the largest JPEGs, the worst case for serving
WARMUP_FRAMES = 10
CLIENT_START_S = 1.0  # for the clients to connect and be waiting for frames


def address(view: LiveView) -> tuple[str, int]:
    host, port = view.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    return host, int(port)


# Clients run in their own process, as a browser does: the CPU time measured is the device's alone.
READER = """
import http.client, signal, sys, threading
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
received = [0] * count
def read(index):
    connection = http.client.HTTPConnection(host, port, timeout=5)
    connection.request("GET", "/stream.mjpg")
    response = connection.getresponse()
    while chunk := response.read1(65536):
        received[index] += len(chunk)
for index in range(count):
    threading.Thread(target=read, args=(index,), daemon=True).start()
signal.signal(signal.SIGTERM, lambda *_: (print(sum(received) // count, flush=True), sys.exit(0)))
signal.pause()
"""


@contextlib.contextmanager
def reading_clients(view: LiveView, count: int):
    """`count` clients reading /stream.mjpg as fast as it comes, in another process; yields [bytes per client]."""
    reader = subprocess.Popen([sys.executable, "-c", READER, *map(str, address(view)), str(count)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(CLIENT_START_S)
    received = []
    try:
        yield received
    finally:
        reader.terminate()
        output, _ = reader.communicate(timeout=10)
        received.append(int(output))


@contextlib.contextmanager
def stalled_client(view: LiveView):
    """A client that asks for /stream.mjpg and never reads a byte."""
    with socket.create_connection(address(view), timeout=5) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        time.sleep(CLIENT_START_S)
        yield


def run_loop(model, frames: list[np.ndarray], count: int, view: LiveView | None) -> tuple[float, float]:
    """(frames per second, CPU ms per frame of the whole process: the loop's and the serving threads')."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for index in range(count):
        frame = frames[index % len(frames)]
        captured_at, captured = time.time(), time.perf_counter()
        label, top, _, _ = classify_frame(model, frame, 3)
        if view is not None:
            latency_ms = (time.perf_counter() - captured) * 1000
            view.add(frame, Result("bench", index, captured_at, label, top, latency_ms, latency_ms))
    return count / (time.perf_counter() - start), (time.process_time() - cpu_start) * 1000 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--num_threads", type=int, default=None, help="interpreter threads (default: all cores)")
    parser.add_argument("--frames", type=int, default=100, help="frames per condition per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not args.model.exists():
        sys.exit(f"error: {args.model} is absent: pass --model with any TFLite image classifier")
    model = load_model(args.model, num_threads=args.num_threads)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*FRAME_SIZE, 3), np.uint8) for _ in range(DISTINCT_FRAMES)]
    run_loop(model, frames, WARMUP_FRAMES, None)

    conditions = {
        "no --serve (baseline)": lambda view: contextlib.nullcontext(),
        "--serve, nobody watching": lambda view: contextlib.nullcontext(),
        "--serve, 1 client reading the stream": lambda view: reading_clients(view, 1),
        f"--serve, {MAX_STREAMS} clients reading the stream": lambda view: reading_clients(view, MAX_STREAMS),
        "--serve, 1 stalled client (never reads)": lambda view: stalled_client(view),
    }
    rates: dict[str, list[float]] = {name: [] for name in conditions}
    cpu_ms: dict[str, list[float]] = {name: [] for name in conditions}
    streamed: dict[str, list[float]] = {name: [] for name in conditions}
    for _ in range(args.rounds):
        for name, clients in conditions.items():
            with contextlib.ExitStack() as stack:
                view = None
                if not name.startswith("no --serve"):
                    view = stack.enter_context(contextlib.closing(LiveView("127.0.0.1", 0)))
                received = stack.enter_context(clients(view))
                start = time.perf_counter()
                rate, cpu = run_loop(model, frames, args.frames, view)
                rates[name].append(rate)
                cpu_ms[name].append(cpu)
                seconds = time.perf_counter() - start
            if received:
                streamed[name].append(received[0] / seconds / 1e6)

    baseline = statistics.median(rates["no --serve (baseline)"])
    baseline_cpu = statistics.median(cpu_ms["no --serve (baseline)"])
    print(f"{args.model.name}, {FRAME_SIZE[1]}x{FRAME_SIZE[0]} noise frames, {args.frames} frames x {args.rounds} rounds")
    print(f"{'condition':<42} {'frames/s':>9} {'ratio':>6} {'CPU ms/frame':>13} {'ratio':>6} {'MB/s per client':>16}")
    for name, values in rates.items():
        rate, cpu = statistics.median(values), statistics.median(cpu_ms[name])
        per_client = f"{statistics.median(streamed[name]):.1f}" if streamed[name] else "-"
        print(f"{name:<42} {rate:>9.1f} {rate / baseline:>6.2f} {cpu:>13.1f} {cpu / baseline_cpu:>6.2f} {per_client:>16}")


if __name__ == "__main__":
    main()
