"""The pipeline: image or frame -> resize (edge.image, as the trainer) -> normalise -> invoke -> top-k.

`run(options, ...)` is everything `edge-classify` does; the CLI only prints what it reports.
Stream frames (camera, video) get per-stage timing and smoothing. Each (frame, result) pair is
handed to the frame consumers the caller passes in (edge.consumers builds them from the options:
--save and --display, the --serve live view, --save_uncertain) before the result is reported;
the loop imports none of them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import UserError
from .image import ImageError, load_rgb, open_rgb, resize_bgr, resize_rgb
from .model import Model, load_model
from .motion import DEFAULT_INTERVAL_S, DEFAULT_MOTION_THRESHOLD, Gate
from .region import Crop, Cropper, parse_crop
from .results import UNKNOWN_LABEL, FrameConsumer, Result
from .sources import VideoSource, image_files, open_camera

logger = logging.getLogger(__name__)

EMIT_CHOICES = ("all", "changes")  # --emit: every result, or only when the top label changes
STATS_WINDOW_FRAMES = 30  # FPS and stage times are averaged over this many stream frames


@dataclass
class ClassifyOptions:
    """What `edge-classify` does; each field is one flag."""

    inputs: list[Path] = field(default_factory=list)  # image files and folders (recursive)
    camera: str | None = None  # OpenCV index "0", a video file, a stream URL, or "picamera"
    model: Path | None = None  # None: retrain_output/model.tflite, then model.tflite
    labels: Path | None = None  # None: the model's metadata, then labels.txt beside the model
    num_threads: int | None = None  # None: os.cpu_count()
    input_mean: float | None = None  # None: the model's metadata, then 127.5
    input_std: float | None = None
    top_k: int = 3
    threshold: float = 0.0  # a top score below this is reported as UNKNOWN_LABEL
    max_frames: int | None = None  # stop after this many images or frames
    smooth: int = 1  # average scores over the last N stream frames
    max_reconnects: int | None = None  # failed attempts in a row to reopen a lost live source; None: no limit
    emit: str = "all"  # one of EMIT_CHOICES
    delegate: Path | None = None  # external delegate library, e.g. libedgetpu.so.1
    crop: str | None = None  # "X,Y,W,H" (edge.region): only this region is classified; None: the whole image
    motion: bool = False  # classify a stream frame only when its region moved (edge.motion), or at the interval
    motion_threshold: float = DEFAULT_MOTION_THRESHOLD  # fraction of the region's pixels that must change
    interval: float | None = None  # seconds; with --motion None means DEFAULT_INTERVAL_S, without it every frame


@dataclass
class StageTimes:
    """Mean time per frame in each stage over some frames, and the frame rate.

    Capture and motion are averaged over every frame read; preprocess, inference and age over the
    frames classified (all of them unless --motion or --interval skips some).
    """

    frames: int = 0  # read
    seconds: float = 0.0  # wall time over these frames
    capture_ms: float = 0.0  # reading or decoding
    motion_ms: float = 0.0  # deciding whether to classify (--motion, --interval)
    preprocess_ms: float = 0.0  # colour conversion, resize, normalisation
    inference_ms: float = 0.0  # invoke and dequantise
    age_ms: float = 0.0  # from capture to result
    dropped: int = 0  # live frames replaced by a newer one before they were read
    skipped: int = 0  # frames read but not classified: no motion, and the interval not yet over
    gated: bool = False  # frames may be skipped: the line counts them and the motion check's time

    @property
    def fps(self) -> float:
        """Frames read per second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add(self, seconds: float, capture: float, motion: float = 0.0) -> None:
        """Add one frame read: the time since the previous one, reading it and the motion check (seconds)."""
        n = self.frames
        self.capture_ms = (self.capture_ms * n + capture * 1000) / (n + 1)
        self.motion_ms = (self.motion_ms * n + motion * 1000) / (n + 1)
        self.frames, self.seconds = n + 1, self.seconds + seconds
        self.skipped += 1  # until add_classified says otherwise

    def add_classified(self, preprocess: float, inference: float, age: float) -> None:
        """The frame added last was classified: its stage times and age (seconds each)."""
        self.skipped -= 1
        n = self.frames - self.skipped - 1  # classified before this one
        self.preprocess_ms = (self.preprocess_ms * n + preprocess * 1000) / (n + 1)
        self.inference_ms = (self.inference_ms * n + inference * 1000) / (n + 1)
        self.age_ms = (self.age_ms * n + age * 1000) / (n + 1)

    def __str__(self) -> str:
        motion = f" | motion {self.motion_ms:.2f} ms" if self.gated else ""
        return (f"{self.fps:.1f} fps | capture {self.capture_ms:.1f} ms{motion} | preprocess {self.preprocess_ms:.1f} ms"
                f" | inference {self.inference_ms:.1f} ms | age {self.age_ms:.1f} ms, {self.dropped} dropped"
                + (f", {self.skipped} skipped" if self.gated else ""))


@dataclass
class Summary:
    """What a run did, printed at its end (also after Ctrl-C)."""

    images: int = 0  # files classified
    unreadable: int = 0  # files skipped with a warning
    stream: StageTimes = field(default_factory=StageTimes)  # all stream frames
    outages: int = 0  # times a live source was lost and came back
    source_lost: bool = False  # a live source was lost and could not be reopened (--max_reconnects)
    seconds: float = 0.0
    interrupted: bool = False  # by Ctrl-C (SIGINT)
    terminated: bool = False  # by SIGTERM, a service manager's normal stop
    broker_outages: int = 0  # times the --mqtt broker went away during the run (edge.mqtt)
    events_dropped: int = 0  # --mqtt events that did not fit the queue while the broker was away

    def __str__(self) -> str:
        parts = []
        if self.images or self.unreadable:
            parts.append(f"{self.images} image{'s' * (self.images != 1)} classified"
                         + (f", {self.unreadable} unreadable" if self.unreadable else ""))
        if self.stream.frames:
            parts.append(f"{self.stream.frames} frames: {self.stream}")
        if self.outages:
            parts.append(f"{self.outages} outage{'s' * (self.outages != 1)} survived")
        if self.broker_outages or self.events_dropped:
            parts.append(f"MQTT broker away {self.broker_outages} time{'s' * (self.broker_outages != 1)}, "
                         f"{self.events_dropped} event{'s' * (self.events_dropped != 1)} dropped")
        ending = (" (interrupted)" if self.interrupted else " (terminated)" if self.terminated
                  else " (camera lost)" if self.source_lost else "")
        return f"{'; '.join(parts) or 'nothing classified'} in {self.seconds:.1f} s{ending}"


def top_labels(scores: np.ndarray, labels: list[str], k: int, threshold: float = 0.0) -> tuple[str, list[tuple[str, float]]]:
    """scores (num_labels,) -> (top label or UNKNOWN_LABEL below threshold, [(label, score)] best first)."""
    k = min(k, len(scores))
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    top = [(labels[index], float(scores[index])) for index in best]
    return (top[0][0] if top[0][1] >= threshold else UNKNOWN_LABEL), top


def classify_frame(model: Model, frame: np.ndarray, top_k: int, threshold: float = 0.0,
                   recent_scores: deque | None = None) -> tuple[str, list[tuple[str, float]], float, float]:
    """BGR frame -> (label, top-k, preprocess seconds, inference seconds): edge-classify's stream path.

    recent_scores: a deque(maxlen=N) of the last score vectors; the top-k is taken on their mean.
    """
    start = time.perf_counter()
    tensor = model.preprocess(resize_bgr(frame, model.input_size))
    preprocessed = time.perf_counter()
    scores = model.infer(tensor)
    inferred = time.perf_counter()
    if recent_scores is not None:
        recent_scores.append(scores)
        scores = np.mean(recent_scores, axis=0) if len(recent_scores) > 1 else scores
    label, top = top_labels(scores, model.labels, top_k, threshold)
    return label, top, preprocessed - start, inferred - preprocessed


def classify_files(model: Model, paths: list[Path], options: ClassifyOptions, summary: Summary,
                   stop: threading.Event, crop: Crop | None = None) -> Iterator[Result]:
    """One Result per readable image under `paths` until `stop` is set; unreadable files are warnings.

    With `crop`, a file the region does not fit in is a warning too (files may differ in size).
    """
    for path in image_files(paths):
        if stop.is_set():
            return
        read_at, started_reading = time.time(), time.perf_counter()
        box = None
        try:
            if crop is None:
                pixels = load_rgb(path, model.input_size)
            else:  # decoded whole: the decoder's shrinking (load_rgb's draft) would move the region
                image = open_rgb(path)
                box = crop.box(*image.size)
                x, y, width, height = box
                pixels = resize_rgb(image.crop((x, y, x + width, y + height)), model.input_size)
        except (ImageError, UserError) as error:
            logger.warning(f"{path}: {error}" if isinstance(error, UserError) else str(error))
            summary.unreadable += 1
            continue
        start = time.perf_counter()
        label, top = top_labels(model.scores(pixels), model.labels, options.top_k, options.threshold)
        summary.images += 1
        done = time.perf_counter()
        yield Result(str(path), 0, read_at, label, top, (done - start) * 1000, (done - started_reading) * 1000,
                     region=box)


def classify_stream(model: Model, source: VideoSource, options: ClassifyOptions, summary: Summary,
                    stop: threading.Event, on_stats: Callable[[StageTimes], None] = lambda stats: None,
                    crop: Crop | None = None, gate: Gate | None = None) -> Iterator[tuple[np.ndarray, Result, bool]]:
    """(BGR frame, Result, classified) for each frame `source` hands out until it ends or `stop` is set.

    Only the `crop` region is classified. A frame the `gate` skips comes with the last Result
    again (the same object) and classified False. on_stats gets the timings of every
    STATS_WINDOW_FRAMES frames read.
    """
    recent_scores = deque(maxlen=options.smooth)
    gated = gate is not None
    window, summary.stream.gated = StageTimes(gated=gated), gated
    dropped_before_window = 0
    frames = source.frames(stop)
    previous_capture = None
    cropper, result = Cropper(crop), None
    try:
        for index in itertools.count():
            cycle_start = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            captured = time.perf_counter()
            region = cropper(frame.pixels)
            # A video file is paced by its own clock, as --collect paces it: the same frames however fast it is read.
            trigger = gate.check(region, index / source.fps if source.fps else frame.captured) if gated else None
            checked = time.perf_counter()
            # Frame rate from capture to capture: it counts everything, the caller's printing too.
            interval = captured - (previous_capture if previous_capture is not None else cycle_start)
            previous_capture = captured
            for stats in (window, summary.stream):
                stats.add(interval, captured - cycle_start, checked - captured)
            classified = not gated or trigger is not None
            if classified:
                label, top, preprocess, inference = classify_frame(model, region, options.top_k, options.threshold,
                                                                   recent_scores)
                age = time.monotonic() - frame.captured
                result = Result(source.name, index, frame.time, label, top, (time.perf_counter() - checked) * 1000,
                                age * 1000, trigger, cropper.box)
                for stats in (window, summary.stream):
                    stats.add_classified(preprocess, inference, age)
            if window.frames == STATS_WINDOW_FRAMES:
                window.dropped = source.dropped - dropped_before_window
                dropped_before_window = source.dropped
                on_stats(window)
                window = StageTimes(gated=gated)
            yield frame.pixels, result, classified
    finally:
        frames.close()
        summary.stream.dropped, summary.outages, summary.source_lost = source.dropped, source.outages, source.lost


def _check_options(options: ClassifyOptions) -> None:
    if not options.inputs and options.camera is None:
        raise UserError("no input given: name image files or folders, or use --camera 0")
    if options.top_k < 1:
        raise UserError("--top_k must be at least 1")
    if options.max_frames is not None and options.max_frames < 1:
        raise UserError("--max_frames must be at least 1")
    if options.smooth < 1:
        raise UserError("--smooth must be at least 1")
    if options.max_reconnects is not None and options.max_reconnects < 0:
        raise UserError("--max_reconnects must be 0 or more")
    if options.emit not in EMIT_CHOICES:
        raise UserError(f"--emit must be one of {', '.join(EMIT_CHOICES)}, not {options.emit}")
    if (options.motion or options.interval is not None) and options.camera is None:
        raise UserError("--motion and --interval choose which --camera frames to classify (a camera, video file or stream)")


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, summary: Summary) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop`: the run ends after the current frame, its outputs complete.

    A second signal acts at once (the handlers in place before are restored by the first).
    Signal handlers can only be set from the main thread; elsewhere signals keep their handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def request_stop(signum: int, _frame) -> None:
        summary.interrupted, summary.terminated = signum == signal.SIGINT, signum == signal.SIGTERM
        stop.set()
        restore()

    def restore() -> None:
        for number, handler in previous.items():
            if handler is not None:  # None: set outside Python, which cannot be put back from here
                signal.signal(number, handler)

    for number in (signal.SIGINT, signal.SIGTERM):
        previous[number] = signal.signal(number, request_stop)
    try:
        yield
    finally:
        restore()


# (the model, the stream's frames per second, None when unknown; the run's stop event; the run's summary,
# which a consumer may add its counts to as it closes) -> the frame consumers
OpenConsumers = Callable[[Model, float | None, threading.Event, Summary], list[FrameConsumer]]


def run(options: ClassifyOptions, on_result: Callable[[Result], None],
        on_stats: Callable[[StageTimes], None] = lambda stats: None,
        consumers: OpenConsumers = lambda model, fps, stop, summary: []) -> Summary:
    """Classify options.inputs, then options.camera; hand each Result to on_result (all, or changes).

    `consumers` opens the frame consumers (edge.consumers.frame_consumers) when the stream starts;
    each gets every classified (frame, result) pair, and is closed when the run ends. A consumer
    may set the stop event to end the run (the --display window closed).

    A stream frame that --motion or --interval skips is not classified: it gives no result to
    on_result (whatever --emit), does not count towards --max_frames and does not enter the
    --smooth average. Consumers whose `every_frame` is true (--save, --display, --serve: they show
    video) get it with the last result again; the others (--save_uncertain) do not.
    SIGTERM, SIGINT (Ctrl-C) or KeyboardInterrupt end the run cleanly after the current frame: the
    summary says how it ended, a --save video is complete.
    """
    _check_options(options)
    crop = parse_crop(options.crop) if options.crop is not None else None
    gate = (Gate(options.motion, options.motion_threshold,
                 DEFAULT_INTERVAL_S if options.motion and options.interval is None else options.interval)
            if options.motion or options.interval is not None else None)
    model = load_model(options.model, options.labels, options.num_threads, options.input_mean, options.input_std,
                       options.delegate)
    started = time.perf_counter()
    summary = Summary()
    stop = threading.Event()
    results_left = options.max_frames
    previous_label = None

    def report(result: Result) -> bool:
        """Hand out `result` as --emit says; False when the run has classified --max_frames."""
        nonlocal results_left, previous_label
        if options.emit == "all" or result.label != previous_label:
            on_result(result)
        previous_label = result.label
        if results_left is not None:
            results_left -= 1
        return results_left != 0

    try:
        with contextlib.ExitStack() as stack:
            source = (stack.enter_context(open_camera(options.camera, options.max_reconnects))
                      if options.camera is not None else None)
            stack.enter_context(_stop_on_signals(stop, summary))
            if options.inputs:
                with contextlib.closing(classify_files(model, list(options.inputs), options, summary, stop, crop)) as results:
                    for result in results:
                        if not report(result):
                            break
            if source is not None and results_left != 0 and not stop.is_set():
                opened = [stack.enter_context(contextlib.closing(consumer))
                          for consumer in consumers(model, source.fps, stop, summary)]
                with contextlib.closing(classify_stream(model, source, options, summary, stop, on_stats,
                                                        crop, gate)) as results:
                    for frame, result, classified in results:
                        # Consumers first: a caller that stops at this result still gets this frame saved.
                        for consumer in opened:
                            if classified or getattr(consumer, "every_frame", False):
                                consumer.add(frame, result)
                        if classified and not report(result):
                            break
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.seconds = time.perf_counter() - started
    if not options.camera and summary.images == 0 and not (summary.interrupted or summary.terminated):
        raise UserError("no readable images found in " + ", ".join(str(path) for path in options.inputs))
    return summary

