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
TEXT_COLOR = (0, 255, 0)  # BGR
TEXT_OUTLINE = (0, 0, 0)
TEXT_SCALE = 0.6  # OpenCV font scale, ~14 px tall
TEXT_LINE_HEIGHT = 22  # px


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

    def to_json(self) -> dict:
        return {"source": self.source, "frame": self.frame, "time": round(self.time, 3), "label": self.label,
                "top_k": [{"label": label, "score": round(score, 6)} for label, score in self.top_k],
                "latency_ms": round(self.latency_ms, 3), "frame_age_ms": round(self.frame_age_ms, 3)}


class FrameConsumer(Protocol):
    """What the classify loop hands each stream frame to, beside itself (see edge.consumers)."""

    def add(self, frame: np.ndarray, result: Result) -> None:
        """Take a BGR frame (not modified afterwards by anyone) and its result; return quickly."""

    def close(self) -> None:
        """Finish: the run is over."""


def annotate(frame: np.ndarray, result: Result) -> np.ndarray:
    """A copy of the BGR `frame` with the result drawn on it: label and score, then the frame's age."""
    import cv2

    label, top = result.label, result.top_k
    lines = [label if not top else f"{label} {top[0][1]:.2f}" if label != UNKNOWN_LABEL
             else f"{label} ({top[0][0]} {top[0][1]:.2f})", f"frame {result.frame}, {result.frame_age_ms:.0f} ms old"]
    annotated = frame.copy()
    for number, text in enumerate(lines, start=1):
        origin = (8, number * TEXT_LINE_HEIGHT)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(annotated, text, origin, font, TEXT_SCALE, TEXT_OUTLINE, 3, cv2.LINE_AA)
        cv2.putText(annotated, text, origin, font, TEXT_SCALE, TEXT_COLOR, 1, cv2.LINE_AA)
    return annotated
