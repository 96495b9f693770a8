"""Where images come from: files and folders, or a stream of frames from a camera or video.

OpenCV and picamera2 are imported only when a stream is opened, so classifying files on a device
needs neither. Stream frames are BGR uint8 (height, width, 3), OpenCV's order, whatever the source.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import UserError
from .image import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

PICAMERA = "picamera"  # --camera value for the Raspberry Pi camera through picamera2
PICAMERA_SIZE = (640, 480)  # (width, height) px captured from picamera2; models take far less
CAMERA_INSTALL_HINT = "pip install 'retrain-edge[camera]' (OpenCV)"


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


class VideoSource:
    """Frames from an OpenCV capture (camera index, video file or stream URL) or from picamera2."""

    def __init__(self, name: str, read_frame, release, fps: float | None):
        self.name = name  # as the user gave it: "0", "clip.mp4", "rtsp://...", "picamera"
        self._read_frame = read_frame
        self._release = release
        self.fps = fps  # frames per second the source announces, None when unknown (live cameras)

    def frames(self) -> Iterator[np.ndarray]:
        """BGR uint8 (height, width, 3) frames until the source ends."""
        while (frame := self._read_frame()) is not None:
            yield frame

    def close(self) -> None:
        self._release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_camera(camera: str) -> VideoSource:
    """Open `camera`: an OpenCV device index ("0"), a video file, a stream URL, or "picamera".

    Index 0 falls back to picamera2 where OpenCV cannot open it and picamera2 is installed (a Pi).
    Raises UserError naming the camera and what to try when it cannot be opened.
    """
    if camera == PICAMERA:
        return _open_picamera()
    try:
        import cv2
    except ImportError:
        if camera == "0" and _picamera2_installed():
            return _open_picamera()
        raise UserError(f"--camera needs OpenCV, which is not installed: {CAMERA_INSTALL_HINT}") from None
    is_index = camera.isdigit()
    if not is_index and "://" not in camera and not os.path.exists(camera):
        raise UserError(f"cannot open camera {camera}: it is not a device index, an existing video file or a stream URL")
    capture = cv2.VideoCapture(int(camera) if is_index else camera)
    if not capture.isOpened():
        capture.release()
        if camera == "0" and _picamera2_installed():
            logger.warning("OpenCV cannot open camera 0; using the Raspberry Pi camera through picamera2")
            return _open_picamera()
        if is_index:
            raise UserError(f"cannot open camera {camera}: check that it is plugged in and not used by another "
                            f"program, try another index (--camera 1), or --camera {PICAMERA} on a Raspberry Pi")
        raise UserError(f"cannot open {camera}: check that it is a video file or stream OpenCV can read "
                        "(e.g. .mp4, .avi, rtsp://, http://)")
    fps = capture.get(cv2.CAP_PROP_FPS)

    def read_frame() -> np.ndarray | None:
        ok, frame = capture.read()
        return frame if ok else None

    return VideoSource(camera, read_frame, capture.release, fps if not is_index and fps > 0 else None)


def _picamera2_installed() -> bool:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        return False
    return True


def _open_picamera() -> VideoSource:
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

    def release() -> None:
        camera.stop()
        camera.close()

    return VideoSource(PICAMERA, lambda: camera.capture_array("main"), release, None)
