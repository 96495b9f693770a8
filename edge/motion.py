"""`--motion` and `--interval`: which stream frames are worth classifying.

A frame is classified when it is the first, when its region moved, or when `interval` seconds
have passed since the last classification (so a slow change, a light going off, is caught and
the state is refreshed). Every other frame is skipped. Motion is read from a small grey copy of
the region against a running background: a pixel changed when it differs from the background
by more than PIXEL_DELTA grey levels, and the region moved when more than `threshold` of its
pixels changed. It costs some 20 microseconds of numpy per frame on an x86 core, whatever the region's size:
it runs on every frame, where the model runs on few.

The background follows the scene (BACKGROUND_RATE of each frame), so after a change the region
counts as moving for a few more frames, until the background has taken the new scene in: the
scene as it settled is classified too, not only the scene while it moved.
"""

from __future__ import annotations

import numpy as np

from . import UserError

DEFAULT_MOTION_THRESHOLD = 0.02  # --motion_threshold: fraction of the region's pixels that must change
DEFAULT_INTERVAL_S = 60.0  # --interval with --motion and no --interval given
PIXEL_DELTA = 25.0  # grey levels (of 255): well above a camera's pixel noise (a few levels)
BACKGROUND_RATE = 0.25  # weight of each frame in the background: a new scene is taken in within ~8 frames
GREY_SIZE = 64  # px: the grey copy's longer side is about this (every n-th pixel of the region)
GREY_WEIGHTS = np.array([0.114, 0.587, 0.299], np.float32)  # B, G, R (ITU-R BT.601 luma)

FIRST, MOTION, INTERVAL = "first", "motion", "interval"  # why a frame was classified (Result.trigger)


def small_grey(region: np.ndarray) -> np.ndarray:
    """BGR uint8 (h, w, 3) -> float32 grey of every n-th pixel, about GREY_SIZE on its longer side."""
    step = max(1, max(region.shape[:2]) // GREY_SIZE)
    return region[::step, ::step] @ GREY_WEIGHTS


class Gate:
    """Decides, frame by frame, whether a stream frame is classified (see the module's docstring)."""

    def __init__(self, motion: bool, threshold: float = DEFAULT_MOTION_THRESHOLD, interval: float | None = None):
        if not 0 < threshold <= 1:
            raise UserError("--motion_threshold is a fraction of the region's pixels, in (0, 1]")
        if interval is not None and interval <= 0:
            raise UserError("--interval must be more than 0 seconds")
        self.motion, self.threshold, self.interval = motion, threshold, interval
        self.background: np.ndarray | None = None
        self.last: float | None = None  # timestamp of the last frame let through

    def check(self, region: np.ndarray, timestamp: float) -> str | None:
        """Why the frame whose `region` (BGR) was captured at `timestamp` (s) is classified; None: skip it."""
        moved = self.motion and self._moved(region)
        if self.last is None:
            trigger = FIRST
        elif moved:
            trigger = MOTION
        elif self.interval is not None and timestamp - self.last >= self.interval:
            trigger = INTERVAL
        else:
            return None
        self.last = timestamp
        return trigger

    def _moved(self, region: np.ndarray) -> bool:
        grey = small_grey(region)
        if self.background is None or self.background.shape != grey.shape:
            self.background = grey
            return False
        difference = grey - self.background
        changed = float(np.count_nonzero(np.abs(difference) > PIXEL_DELTA)) / difference.size  # fraction of pixels
        self.background += BACKGROUND_RATE * difference
        return changed >= self.threshold
