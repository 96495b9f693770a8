"""Frames kept on the device for training: `--collect` (a labelled burst) and `--save_uncertain`.

Both write ordinary class folders that `retrain-edge train` reads as they are:
DIR/<folder for label>/<burst id>_nohash_<n>.jpg. The split hashes a file name without its
`_nohash_` suffix, so all frames of a burst (taken moments apart, near-copies of one another)
land in the same one of training, validation or testing, never across two.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import UserError
from .files import new_temporary, replacing
from .region import Cropper, parse_crop
from .results import Result, region_of
from .sources import open_camera

logger = logging.getLogger(__name__)

JPEG_QUALITY = 90  # Pillow's 0-100 scale: artefacts well below what a camera's own noise shows
DEFAULT_COLLECT_EVERY_S = 1.0  # --every: time to move the object or the camera between two shots
DEFAULT_SAVE_EVERY_S = 2.0  # --save_every
DEFAULT_SAVE_MAX = 500  # --save_max: images under the --save_uncertain folder; a 640x480 photo is ~70 KB
# --save_uncertain starts a new burst after this long without saving: a later uncertain frame is
# most likely another scene, which may go to another set; frames closer together stay in one.
UNCERTAIN_BURST_GAP_S = 60.0
UNCERTAIN_SIDECAR = "uncertain.jsonl"
# A burst id: the local date and time the burst began, then 4 random hex digits, so bursts
# collected on several devices in the same second can be merged into one folder.
BURST_TIME_FORMAT = "%Y%m%d-%H%M%S"
BURST_RANDOM_BYTES = 2
BURST_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")
# Characters some file system (FAT on an SD card or USB stick, Windows) refuses in a name.
UNSAFE_NAME_CHARACTERS = re.compile(r'[\x00-\x1f/\\:*?"<>|]+')


def folder_for_label(label: str) -> str:
    """The class folder name for a label: characters a file system may refuse become '_'.

    The trainer's label for that folder is the same label, for labels made of letters, digits
    and spaces (see trainer.dataset.label_for_folder).
    """
    folder = UNSAFE_NAME_CHARACTERS.sub("_", label.strip()).strip(". ")
    if not folder:
        raise UserError(f"the label {label!r} gives no usable folder name; use letters or digits")
    return folder


def image_count(root: Path) -> int:
    """.jpg files in root's class folders."""
    return sum(1 for _ in Path(root).glob("*/*.jpg"))


def write_jpeg(path: Path, frame: np.ndarray) -> None:
    """BGR uint8 (h, w, 3) frame -> JPEG at path, written whole or not at all, mode from the umask."""
    with replacing(path, new_temporary(path)) as temporary:
        Image.fromarray(np.ascontiguousarray(frame[..., ::-1])).save(temporary, "JPEG", quality=JPEG_QUALITY)


class BurstWriter:
    """JPEG frames in bursts: root/<folder for label>/<burst id>_nohash_<n>.jpg, n counting from 0.

    A burst id is used by no file in root when the burst starts, so no file is ever overwritten
    (save for another process writing the same random id in the same second).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.burst_id: str | None = None
        self.burst_frames = 0  # frames written in the current burst
        self.written = 0  # frames written in all bursts

    def new_burst(self) -> None:
        stamp = time.strftime(BURST_TIME_FORMAT)
        while True:
            burst_id = f"{stamp}-{secrets.token_hex(BURST_RANDOM_BYTES)}"
            if not any(self.root.glob(f"*/{burst_id}_*")):
                break
        self.burst_id, self.burst_frames = burst_id, 0

    def write(self, frame: np.ndarray, label: str) -> Path:
        """Write frame into label's folder; returns its path relative to root."""
        if self.burst_id is None:
            self.new_burst()
        relative = Path(folder_for_label(label)) / f"{self.burst_id}_nohash_{self.burst_frames:04d}.jpg"
        try:
            (self.root / relative.parent).mkdir(parents=True, exist_ok=True)
            write_jpeg(self.root / relative, frame)
        except OSError as error:
            raise UserError(f"cannot write {self.root / relative}: {error.strerror or error}") from None
        self.burst_frames += 1
        self.written += 1
        return relative


@dataclass
class Interval:
    """At most one event per `seconds` of the given timestamps."""

    seconds: float
    last: float | None = None  # timestamp of the last event let through

    def due(self, timestamp: float) -> bool:
        return self.last is None or timestamp - self.last >= self.seconds

    def mark(self, timestamp: float) -> None:
        self.last = timestamp


class Collector:
    """`--collect DIR --label NAME`: one burst of frames into DIR/<folder for NAME>/, one per `every` seconds."""

    def __init__(self, root: Path, label: str, every: float = DEFAULT_COLLECT_EVERY_S):
        if every < 0:
            raise UserError("--every must be zero or more seconds")
        folder_for_label(label)  # a label without a usable folder name fails before the camera opens
        self.label = label
        self.writer = BurstWriter(root)
        self.writer.new_burst()
        self.interval = Interval(every)

    @property
    def saved(self) -> int:
        return self.writer.written

    def offer(self, frame: np.ndarray, timestamp: float) -> Path | None:
        """Save frame if `every` seconds have passed since the last saved one (timestamps in seconds)."""
        if not self.interval.due(timestamp):
            return None
        self.interval.mark(timestamp)
        return self.writer.write(frame, self.label)


class UncertainSaver:
    """`--save_uncertain DIR`: frames the model was unsure of, under DIR/<predicted label>/.

    Each saved frame gets a line in DIR/uncertain.jsonl: the caller's record (scores, source,
    time) with "file" (relative to DIR) and "reason". At most one frame per `every` seconds, and
    never more than `max_files` images in DIR, counting those already there, so a device left
    running cannot fill its card; moving the reviewed images out makes room again.
    As a frame consumer beside the classify loop, `add(frame, result)` takes a stream's frames,
    timed by the video's clock when `fps` is given (a file), else by when they were captured.
    """

    def __init__(self, root: Path, threshold: float, margin: float | None = None,
                 every: float = DEFAULT_SAVE_EVERY_S, max_files: int = DEFAULT_SAVE_MAX, fps: float | None = None):
        if every < 0:
            raise UserError("--save_every must be zero or more seconds")
        if max_files < 1:
            raise UserError("--save_max must be at least 1")
        if margin is not None and not 0 < margin <= 1:
            raise UserError("--margin must be in (0, 1]")
        if threshold <= 0 and margin is None:
            raise UserError("--save_uncertain needs --threshold (a top score below it is uncertain) or --margin")
        self.root = Path(root)
        self.threshold, self.margin, self.max_files = threshold, margin, max_files
        self.writer = BurstWriter(self.root)
        self.interval = Interval(every)
        self.files = image_count(self.root)
        self.warned_full = False
        self.fps = fps
        self.sidecar = None  # opened at the first saved frame

    def reason(self, top: list[tuple[str, float]]) -> str | None:
        """Why a frame with these (label, score) pairs, best first, is uncertain; None when it is not."""
        best = top[0][1]
        if best < self.threshold:
            return f"top score {best:.3f} < threshold {self.threshold:g}"
        if self.margin is not None and len(top) > 1 and best - top[1][1] < self.margin:
            return f"margin {best - top[1][1]:.3f} < {self.margin:g}"
        return None

    def offer(self, frame: np.ndarray, timestamp: float, top: list[tuple[str, float]], record: dict) -> Path | None:
        """Save frame when it is uncertain, the interval has passed and DIR has room; returns its path."""
        reason = self.reason(top)
        if reason is None or not self.interval.due(timestamp):
            return None
        if self.files >= self.max_files:
            if not self.warned_full:
                logger.warning(f"--save_uncertain: {self.root} holds {self.files} images (--save_max "
                               f"{self.max_files}); saving no more until some are moved out")
                self.warned_full = True
            return None
        if self.interval.last is None or timestamp - self.interval.last > UNCERTAIN_BURST_GAP_S:
            self.writer.new_burst()
        self.interval.mark(timestamp)
        relative = self.writer.write(frame, top[0][0])
        self.files += 1
        if self.sidecar is None:
            self.sidecar = open(self.root / UNCERTAIN_SIDECAR, "a", encoding="utf-8")
        # One write of a whole line, flushed, in append mode: a crash can cut only the last line short.
        self.sidecar.write(json.dumps({"file": relative.as_posix(), "reason": reason, **record}) + "\n")
        self.sidecar.flush()
        return relative

    def add(self, frame: np.ndarray, result: Result) -> None:
        """Offer a classified stream frame; what is saved is what the model was shown (its --crop region)."""
        timestamp = result.frame / self.fps if self.fps else result.time
        self.offer(region_of(frame, result), timestamp, result.top_k, result.to_json())

    def close(self) -> None:
        if self.sidecar is not None:
            self.sidecar.close()


@dataclass
class CollectOptions:
    """What `edge-classify --collect` does; each field is one flag."""

    camera: str  # as for classifying: an index, a video file, a stream URL or "picamera"
    folder: Path  # --collect: frames go to folder/<folder for label>/
    label: str
    every: float = DEFAULT_COLLECT_EVERY_S  # seconds between saved frames (of video time, for a file)
    max_frames: int | None = None  # stop after saving this many
    max_reconnects: int | None = None  # as for classifying
    serve: str | None = None  # "[HOST:]PORT" of the live view, showing the label and the count
    crop: str | None = None  # "X,Y,W,H" (edge.region): only this region is saved, as classifying it would see it


@dataclass
class CollectSummary:
    """What a --collect run did, printed at its end (also after Ctrl-C)."""

    folder: Path  # where the frames went: CollectOptions.folder/<folder for label>
    burst_id: str
    saved: int = 0
    frames: int = 0  # read from the camera
    seconds: float = 0.0
    interrupted: bool = False

    def __str__(self) -> str:
        ending = " (interrupted)" if self.interrupted else ""
        return (f"{self.saved} frame{'s' * (self.saved != 1)} saved to {self.folder} as burst {self.burst_id} "
                f"({self.frames} read) in {self.seconds:.1f} s{ending}")


def collect(options: CollectOptions, on_saved: Callable[[Path], None] = lambda path: None,
            on_serving: Callable[[str], None] = lambda url: None) -> CollectSummary:
    """Save frames of options.camera as one burst of training images; on_saved gets each file's path.

    A video file is paced by its own clock (frame index / frames per second), so it gives the
    same frames however fast it is read; a live camera by when each frame was captured.
    With a crop, only the region is saved; the live view shows the whole frame with the region drawn.
    Ctrl-C ends the run; every file written is whole.
    """
    if options.max_frames is not None and options.max_frames < 1:
        raise UserError("--max_frames must be at least 1")
    crop = Cropper(parse_crop(options.crop) if options.crop is not None else None)
    collector = Collector(options.folder, options.label, options.every)
    summary = CollectSummary(Path(options.folder) / folder_for_label(options.label), collector.writer.burst_id)
    started = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            view = None
            if options.serve:
                from .serve import LiveView, parse_address

                view = stack.enter_context(contextlib.closing(LiveView(*parse_address(options.serve))))
                on_serving(view.url)
            source = stack.enter_context(open_camera(options.camera, options.max_reconnects))
            for index, frame in enumerate(source.frames(threading.Event())):
                summary.frames += 1
                saved = collector.offer(crop(frame.pixels), index / source.fps if source.fps else frame.captured)
                if saved is not None:
                    summary.saved += 1
                    on_saved(Path(options.folder) / saved)
                if view is not None:
                    # No model, so no scores: the view shows what is being collected instead.
                    view.add(frame.pixels, Result(source.name, index, frame.time, f"collecting {options.label}: "
                                                  f"{summary.saved} saved", [], 0.0,
                                                  (time.monotonic() - frame.captured) * 1000, region=crop.box))
                if summary.saved == options.max_frames:
                    break
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.seconds = time.perf_counter() - started
    return summary
