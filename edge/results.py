"""What classifying one image or frame gives, and that result drawn onto its frame.

A leaf of the package: the classify loop makes `Result`s and every frame consumer (edge.consumers:
--save and --display, --serve, --save_uncertain) takes them, so none of those imports another to
share them. It imports nothing of the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

UNKNOWN_LABEL = "unknown"  # reported when the top score is below --threshold
TEXT_COLOR = (255, 255, 255)  # BGR
BAND_COLOR = (0, 0, 0)  # behind the text, so it reads on any scene
BAND_OPACITY = 0.6
REGION_COLOR = (0, 215, 255)  # BGR amber: the --crop region
LINE_HEIGHT_FRACTION = 1 / 20  # of the frame's height: a line of text, readable when the frame is scaled to a window
MIN_LINE_HEIGHT = 12  # px
FONT_HEIGHT_PER_SCALE = 22  # px: the height of Hershey Simplex's capitals and descenders at scale 1


@dataclass
class Result:
    """The classification of one image or frame."""

    source: str  # file path, or the camera as given
    frame: int  # index in the stream; 0 for a file
    time: float  # seconds since the epoch when the image was read
    label: str  # top label, or UNKNOWN_LABEL below the threshold
    top_k: list[tuple[str, float]]  # (label, score), best first; empty while collecting (no model)
    latency_ms: float  # preprocess + inference + top-k, for this image
    frame_age_ms: float  # from capture (or reading the file) to this result
    trigger: str | None = None  # why this frame was classified under --motion/--interval (edge.motion); None: every frame is
    region: tuple[int, int, int, int] | None = None  # the --crop region classified, (x, y, width, height) px; None: all

    def to_json(self) -> dict:
        return {"source": self.source, "frame": self.frame, "time": round(self.time, 3), "label": self.label,
                "top_k": [{"label": label, "score": round(score, 6)} for label, score in self.top_k],
                "latency_ms": round(self.latency_ms, 3), "frame_age_ms": round(self.frame_age_ms, 3),
                "trigger": self.trigger, "region": list(self.region) if self.region else None}


class FrameConsumer(Protocol):
    """What the classify loop hands each classified stream frame to, beside itself (see edge.consumers).

    A consumer with a true `every_frame` attribute (one that shows video) also gets the frames that
    --motion or --interval skip, each with the last result again (the same object).
    """

    def add(self, frame: np.ndarray, result: Result) -> None:
        """Take a BGR frame (not modified afterwards by anyone) and its result; return quickly."""

    def close(self) -> None:
        """Finish: the run is over."""


def region_of(frame: np.ndarray, result: Result) -> np.ndarray:
    """The part of `frame` the model was shown for `result`: its --crop region, or the whole frame (a view)."""
    if result.region is None:
        return frame
    x, y, width, height = result.region
    return frame[y:y + height, x:x + width]


def annotate(frame: np.ndarray, result: Result) -> np.ndarray:
    """A copy of the BGR `frame` with the result drawn on it: the region, then on a dark band at the
    top the label and score, and the frame's number, age and trigger.

    Text is sized to the frame's height and drawn once per line: an outline drawn thicker beneath it
    is laid out wider by OpenCV, and the two drift apart along the line.
    """
    import cv2

    label, top = result.label, result.top_k
    lines = [label if not top else f"{label} {top[0][1]:.2f}" if label != UNKNOWN_LABEL
             else f"{label} ({top[0][0]} {top[0][1]:.2f})",
             f"frame {result.frame}, {result.frame_age_ms:.0f} ms old" + (f", {result.trigger}" if result.trigger else "")]
    annotated = frame.copy()
    height = frame.shape[0]
    if result.region is not None:
        x, y, width, region_height = result.region
        cv2.rectangle(annotated, (x, y), (x + width - 1, y + region_height - 1), REGION_COLOR, max(1, height // 240))
    line_height = max(MIN_LINE_HEIGHT, round(height * LINE_HEIGHT_FRACTION))
    scale = 0.75 * line_height / FONT_HEIGHT_PER_SCALE
    thickness = max(1, round(line_height / 20))
    band_height = min(height, line_height * len(lines) + line_height // 3)
    band = annotated[:band_height]
    cv2.addWeighted(band, 1 - BAND_OPACITY, np.full_like(band, BAND_COLOR), BAND_OPACITY, 0, dst=band)
    for number, text in enumerate(lines, start=1):
        origin = (line_height // 3, number * line_height - line_height // 5)
        cv2.putText(annotated, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOR, thickness, cv2.LINE_AA)
    return annotated
