"""Where images come from: files and folders, or a stream of frames from a camera or video.

OpenCV and picamera2 are imported only when a stream is opened, so classifying files on a device
needs neither. Stream frames are BGR uint8 (height, width, 3), OpenCV's order, whatever the source.

A video file is data: every frame, in order. A live source (camera index, stream URL, picamera)
is read on its own thread that keeps only the newest frame, so a model slower than the camera
always classifies what the camera sees now; a live source that stops delivering is reopened.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import UserError
from .image import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

PICAMERA = "picamera"  # --camera value for the Raspberry Pi camera through picamera2
PICAMERA_SIZE = (640, 480)  # (width, height) px captured from picamera2; models take far less
CAMERA_INSTALL_HINT = "pip install 'retrain-edge[camera]' (OpenCV)"
# A stream that sends nothing for this long is lost (OpenCV's FFmpeg default is 30 s per read).
STREAM_TIMEOUT_S = 5.0
RECONNECT_FIRST_DELAY_S = 0.5  # wait before the first attempt to reopen a lost live source
RECONNECT_MAX_DELAY_S = 30.0  # the wait doubles after each failed attempt, up to this
OPENCV_QUIET_ENVIRONMENT = {"OPENCV_LOG_LEVEL": "ERROR", "OPENCV_FFMPEG_DEBUG": "1", "OPENCV_FFMPEG_LOGLEVEL": "-8"}
STOP_POLL_S = 0.2  # how often a wait for the next live frame checks for a stop request


def image_files(paths: list[str | Path]) -> Iterator[Path]:
    """Files named in `paths`, and the images (IMAGE_SUFFIXES) in folders, recursively, sorted.

    A path that does not exist is a warning, not an error: the run goes on with the others.
    """
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                logger.warning(f"{path}: no {', '.join(IMAGE_SUFFIXES)} images in this folder")
            yield from found
        elif path.is_file():
            yield path
        else:
            logger.warning(f"{path}: no such file or folder")


@dataclass
class Frame:
    """One frame of a stream and when it was captured."""

    pixels: np.ndarray  # BGR uint8 (height, width, 3)
    time: float  # seconds since the epoch at capture
    captured: float  # time.monotonic() at capture: its age, immune to clock changes


ReadFrame = Callable[[], "np.ndarray | None"]  # the next BGR frame, None when the device delivers none
Device = tuple[ReadFrame, Callable[[], None]]  # (read_frame, release) of one opened camera or stream


class VideoSource:
    """A video file: every frame, in order, none dropped, until its end."""

    def __init__(self, name: str, device: Device, fps: float | None):
        self.name = name  # as the user gave it
        self._read_frame, self._release = device
        self.fps = fps  # frames per second the file announces, None when unknown
        self.outages = 0  # losses the source came back from
        self.lost = False  # True when a lost source could not be reopened

    @property
    def dropped(self) -> int:
        """Frames captured but never handed out: none from a file."""
        return 0

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """The file's frames until its end or until `stop` is set."""
        while not stop.is_set() and (pixels := self._read_frame()) is not None:
            yield Frame(pixels, time.time(), time.monotonic())

    def close(self) -> None:
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class LiveSource(VideoSource):
    """A camera or stream read on its own thread, which keeps only the newest frame.

    Frames the reader captured but nobody took are counted in `dropped`. When the device stops
    delivering, the reader reopens it with `open_device`, waiting RECONNECT_FIRST_DELAY_S, doubling
    to RECONNECT_MAX_DELAY_S; after `max_reconnects` failed attempts in a row (None: never) it
    gives up and `lost` is set. `outages` counts the losses it came back from.
    """

    def __init__(self, name: str, device: Device, open_device: Callable[[], Device], max_reconnects: int | None):
        super().__init__(name, device, None)
        self._open_device = open_device
        self._max_reconnects = max_reconnects
        self._newest: Frame | None = None
        self._frames_read = 0
        self._frames_taken = 0
        self._reader_done = False
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read_forever, name=f"camera {name}", daemon=True)
        self._reader.start()

    @property
    def dropped(self) -> int:
        """Frames the reader captured that were replaced by a newer one before anybody took them."""
        with self._changed:
            return self._frames_read - self._frames_taken - (self._newest is not None)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """The newest frame each time one is asked for, waiting for one newer than the last taken."""
        while not stop.is_set():
            with self._changed:
                if self._newest is None and not self._reader_done:
                    self._changed.wait(STOP_POLL_S)
                frame, self._newest = self._newest, None
                if frame is None:
                    if self._reader_done:
                        return
                    continue
                self._frames_taken += 1
            yield frame

    def _read_forever(self) -> None:
        read_frame, release = self._read_frame, self._release
        lost_at = None
        attempts, delay = 0, RECONNECT_FIRST_DELAY_S  # failed attempts to reopen since the loss, wait before the next
        while not self._closing.is_set():
            pixels = read_frame() if read_frame is not None else None
            if pixels is not None:
                if lost_at is not None:
                    logger.warning(f"camera {self.name} is back after {time.monotonic() - lost_at:.1f} s")
                    self.outages += 1
                    lost_at, attempts, delay = None, 0, RECONNECT_FIRST_DELAY_S
                with self._changed:
                    self._newest = Frame(pixels, time.time(), time.monotonic())
                    self._frames_read += 1
                    self._changed.notify()
                continue
            if read_frame is not None:
                release()
                read_frame = None
            if lost_at is None:
                lost_at = time.monotonic()
                logger.warning(f"camera {self.name} lost: reopening it, first in {RECONNECT_FIRST_DELAY_S} s, "
                               f"then at most every {RECONNECT_MAX_DELAY_S:.0f} s")
            if self._max_reconnects is not None and attempts >= self._max_reconnects:
                logger.warning(f"camera {self.name}: giving up after {attempts} attempts to reopen it (--max_reconnects)")
                self.lost = True
                break
            if self._closing.wait(delay):
                break
            attempts, delay = attempts + 1, min(2 * delay, RECONNECT_MAX_DELAY_S)
            try:
                read_frame, release = self._open_device()
            except UserError:
                read_frame = None
        if read_frame is not None:
            release()
        with self._changed:
            self._reader_done = True
            self._changed.notify()

    def close(self) -> None:
        """Stop the reader; a read in progress ends within STREAM_TIMEOUT_S (the device's own timeout)."""
        self._closing.set()
        self._reader.join(STREAM_TIMEOUT_S + 1)


def is_live(camera: str) -> bool:
    """A camera index, stream URL or picamera (read as live), not a video file (read as data)."""
    return camera == PICAMERA or camera.isdigit() or "://" in camera


def open_camera(camera: str, max_reconnects: int | None = None) -> VideoSource:
    """Open `camera`: an OpenCV device index ("0"), a video file, a stream URL, or "picamera".

    Index 0 falls back to picamera2 where OpenCV cannot open it and picamera2 is installed (a Pi).
    A live source is reopened when lost (see LiveSource). Raises UserError naming the camera and
    what to try when it cannot be opened at first.
    """
    if camera == PICAMERA:
        return LiveSource(camera, _open_picamera(), _open_picamera, max_reconnects)
    try:
        device, fps = _open_capture(camera)
    except UserError:
        if camera != "0" or not _picamera2_installed():
            raise
        logger.warning("OpenCV cannot open camera 0; using the Raspberry Pi camera through picamera2")
        return LiveSource(camera, _open_picamera(), _open_picamera, max_reconnects)
    if is_live(camera):
        return LiveSource(camera, device, lambda: _open_capture(camera)[0], max_reconnects)
    return VideoSource(camera, device, fps)


def _open_capture(camera: str) -> tuple[Device, float | None]:
    """An OpenCV capture of `camera` as (read_frame, release), and the fps a video file announces."""
    # OpenCV and FFmpeg print a line or two on every failed attempt to reopen a lost stream, for as
    # long as it is away; our own warnings say when it is lost and when it is back. OpenCV reads
    # these when it first loads (log level) or first opens a stream (FFmpeg's, which needs DEBUG set).
    for name, value in OPENCV_QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    try:
        import cv2
    except ImportError:
        raise UserError(f"--camera needs OpenCV, which is not installed: {CAMERA_INSTALL_HINT}") from None
    is_index = camera.isdigit()
    if not is_index and "://" not in camera and not os.path.exists(camera):
        raise UserError(f"cannot open camera {camera}: it is not a device index, an existing video file or a stream URL")
    if "://" in camera:
        timeout_ms = int(STREAM_TIMEOUT_S * 1000)
        capture = cv2.VideoCapture(camera, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
    else:
        capture = cv2.VideoCapture(int(camera) if is_index else camera)
    if not capture.isOpened():
        capture.release()
        if is_index:
            raise UserError(f"cannot open camera {camera}: check that it is plugged in and not used by another "
                            f"program, try another index (--camera 1), or --camera {PICAMERA} on a Raspberry Pi")
        raise UserError(f"cannot open {camera}: check that it is a video file or stream OpenCV can read "
                        "(e.g. .mp4, .avi, rtsp://, http://)")
    fps = capture.get(cv2.CAP_PROP_FPS)

    def read_frame() -> np.ndarray | None:
        ok, frame = capture.read()
        return frame if ok else None

    return (read_frame, capture.release), (fps if not is_live(camera) and fps > 0 else None)


def _picamera2_installed() -> bool:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        return False
    return True


def _open_picamera() -> Device:
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise UserError(f"cannot open camera {PICAMERA}: picamera2 is not installed; on Raspberry Pi OS run "
                        "sudo apt install python3-picamera2 and create the venv with --system-site-packages") from None
    try:
        camera = Picamera2()
        # picamera2's "RGB888" is stored B, G, R in memory: the same order as OpenCV frames.
        camera.configure(camera.create_video_configuration(main={"size": PICAMERA_SIZE, "format": "RGB888"}))
        camera.start()
    except (RuntimeError, IndexError) as error:
        raise UserError(f"cannot open camera {PICAMERA}: {error}; check the ribbon cable and that no other "
                        "program (e.g. rpicam-hello) is using it") from None

    def read_frame() -> np.ndarray | None:
        try:
            return camera.capture_array("main")
        except RuntimeError:  # the camera stopped delivering: the reader reopens it
            return None

    def release() -> None:
        camera.stop()
        camera.close()

    return read_frame, release
