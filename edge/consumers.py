"""Frame consumers: what happens to each (frame, result) pair beside the classify loop.

Each consumer has `add(frame, result)`, which must return quickly, and `close()`:
--save and --display (FrameOutput, here), the --serve live view (edge.serve.LiveView),
--save_uncertain (edge.collect.UncertainSaver), --mqtt (edge.mqtt.MqttPublisher).
`frame_consumers` is the one place that builds them from the options; the loop
(edge.classify.run) is handed them and imports none of them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import UserError
from .classify import ClassifyOptions, OpenConsumers, Summary
from .collect import DEFAULT_SAVE_EVERY_S, DEFAULT_SAVE_MAX, UncertainSaver
from .health import Health
from .model import Model
from .mqtt import MqttOptions, MqttPublisher, check_options
from .results import FrameConsumer, Result, annotate

LIVE_SAVE_FPS = 10.0  # frame rate written to --save for a live camera, which announces none reliably
WINDOW_TITLE = "edge-classify"
QUIT_KEYS = (ord("q"), 27)  # q or Esc closes the --display window


@dataclass
class ConsumerOptions:
    """What is done with the classified frames of a stream; each field is one flag."""

    save: Path | None = None  # write annotated stream frames to this video file
    display: bool = False  # show annotated stream frames in a window
    serve: str | None = None  # "[HOST:]PORT" of the read-only live view (edge.serve); None: off
    save_uncertain: Path | None = None  # keep stream frames below --threshold or --margin here (edge.collect)
    margin: float | None = None  # top-two score difference below which a frame is uncertain
    save_every: float = DEFAULT_SAVE_EVERY_S  # seconds between saved uncertain frames, at least
    save_max: int = DEFAULT_SAVE_MAX  # images in the save_uncertain folder, at most
    mqtt: MqttOptions | None = None  # publish debounced states and changes to a broker (edge.mqtt); None: off


def frame_consumers(options: ConsumerOptions, classify: ClassifyOptions,
                    on_serving: Callable[[str], None] = lambda url: None, health: Health | None = None) -> OpenConsumers:
    """Check `options` against the run's `classify` options now; return what opens the consumers.

    Bad options raise UserError here, before the model is loaded or the camera opened. The
    returned function is edge.classify.run's `consumers`; on_serving gets the --serve URL.
    `health` (edge.health) is the run's, shown by the live view and kept up to date by the caller
    (stats windows) and by consumers (MQTT's connection).
    """
    if (options.save or options.display or options.serve) and classify.camera is None:
        raise UserError("--save, --display and --serve work with --camera (a camera, video file or stream)")
    if options.mqtt and classify.camera is None:
        raise UserError("--mqtt publishes the state of --camera (a camera, video file or stream)")
    if options.save_uncertain and classify.camera is None:
        raise UserError("--save_uncertain keeps frames of --camera (a camera, video file or stream)")
    if options.margin is not None and classify.top_k < 2:
        raise UserError("--margin compares the top two scores: use --top_k 2 or more")
    if options.display and sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("--display needs a screen and none is set (no DISPLAY); use --save out.mp4 on a headless device")
    if options.save or options.display or options.serve:
        try:
            import cv2  # noqa: F401
        except ImportError:  # picamera2 frames need no OpenCV; drawing, writing and encoding them do
            raise UserError("--save, --display and --serve need OpenCV: pip install 'retrain-edge[camera]'") from None
    if options.serve:
        from .serve import parse_address

        address = parse_address(options.serve)
    if options.mqtt:
        check_options(options.mqtt)  # a bad URL, or paho missing

    def open_consumers(model: Model, fps: float | None, stop: threading.Event, summary: Summary) -> list[FrameConsumer]:
        consumers: list[FrameConsumer] = []
        with contextlib.ExitStack() as opened:  # one that cannot open closes those opened before it
            if options.mqtt:
                consumers.append(MqttPublisher(options.mqtt, model.labels, model.path.name, summary, health))
                opened.callback(consumers[-1].close)
            if options.save or options.display:
                consumers.append(FrameOutput(options.save, options.display, fps or LIVE_SAVE_FPS, stop))
                opened.callback(consumers[-1].close)
            if options.serve:
                from .serve import LiveView

                consumers.append(LiveView(*address, health))
                opened.callback(consumers[-1].close)
                on_serving(consumers[-1].url)
            if options.save_uncertain:
                consumers.append(UncertainSaver(options.save_uncertain, classify.threshold, options.margin,
                                                options.save_every, options.save_max, fps))
            opened.pop_all()
        return consumers

    return open_consumers


class FrameOutput:
    """--save and --display: a frame consumer writing and showing annotated frames."""

    every_frame = True  # a video: frames --motion skips are written and shown too, with the last result

    def __init__(self, save: Path | None, display: bool, fps: float, stop: threading.Event):
        self.save, self.display, self.fps, self.stop = save, display, fps, stop
        self.writer = None
        import cv2  # frame_consumers checked that it is installed

        self.cv2 = cv2

    def add(self, frame: np.ndarray, result: Result) -> None:
        """Annotate, write and display `frame`; closing the window (q, Esc) stops the run."""
        annotated = annotate(frame, result)
        if self.save:
            if self.writer is None:
                self.writer = self._open_writer(frame.shape[1], frame.shape[0])
            self.writer.write(annotated)
        if self.display:
            try:
                self.cv2.imshow(WINDOW_TITLE, annotated)
            except self.cv2.error:
                raise UserError("--display needs OpenCV with window support (pip install opencv-python, "
                                "not -headless); use --save out.mp4 instead") from None
            if (self.cv2.waitKey(1) & 0xFF) in QUIT_KEYS:
                self.stop.set()

    def _open_writer(self, width: int, height: int):
        fourcc = self.cv2.VideoWriter_fourcc(*("mp4v" if self.save.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"))
        writer = self.cv2.VideoWriter(str(self.save), fourcc, self.fps, (width, height))
        if not writer.isOpened():
            raise UserError(f"cannot write the video {self.save}: use a .mp4 or .avi name in a writable folder")
        return writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if self.display:
            self.cv2.destroyAllWindows()
