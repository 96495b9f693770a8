"""`--crop X,Y,W,H`: the region of a frame that is classified, collected and watched for motion.

X, Y, W and H are pixels, or fractions of the frame's width and height when all four are at
most 1. Cropping comes first, before any resizing: the model sees the region at the camera's own
resolution, resized once, as `--collect` with the same crop saves it for training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import UserError

Box = tuple[int, int, int, int]  # (x, y, width, height) in pixels, inside the frame


@dataclass(frozen=True)
class Crop:
    """A region as the user gave it: pixels, or fractions of the frame when `fractions`."""

    x: float
    y: float
    width: float
    height: float
    fractions: bool
    text: str  # as given, for messages

    def box(self, frame_width: int, frame_height: int) -> Box:
        """The region in pixels of a frame this size; UserError when it does not fit inside."""
        if self.fractions:
            left, top = round(self.x * frame_width), round(self.y * frame_height)
            right = round((self.x + self.width) * frame_width)
            bottom = round((self.y + self.height) * frame_height)
        else:
            left, top = int(self.x), int(self.y)
            right, bottom = left + int(self.width), top + int(self.height)
        if right > frame_width or bottom > frame_height or right <= left or bottom <= top:
            raise UserError(f"--crop {self.text} does not fit in the {frame_width}x{frame_height} frame"
                            + ("" if self.fractions else f": it reaches x={right}, y={bottom}"))
        return left, top, right - left, bottom - top


def parse_crop(text: str) -> Crop:
    """"X,Y,W,H" -> Crop; all four at most 1 makes them fractions. Raises UserError."""
    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)):
        raise UserError(f"--crop takes X,Y,W,H: four numbers, pixels or fractions of the frame, not {text}")
    x, y, width, height = values
    fractions = all(value <= 1 for value in values)
    if x < 0 or y < 0 or width <= 0 or height <= 0:
        raise UserError(f"--crop {text}: X and Y must be 0 or more, W and H more than 0")
    if fractions and (x + width > 1 or y + height > 1):
        raise UserError(f"--crop {text}: as fractions of the frame, X+W and Y+H must be at most 1")
    if not fractions and not all(value.is_integer() for value in values):
        raise UserError(f"--crop {text}: pixels are whole numbers (or give all four as fractions, at most 1)")
    return Crop(x, y, width, height, fractions, text)


class Cropper:
    """Cuts a crop's region out of stream frames; its box is worked out again only when the frame size changes."""

    def __init__(self, crop: Crop | None):
        self.crop = crop
        self.box: Box | None = None  # of the last frame cut; None without a crop
        self._shape: tuple[int, ...] | None = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The region of an (H, W, ...) frame, as a view (no copy); the frame itself without a crop.

        UserError when the region does not fit in the frame.
        """
        if self.crop is None:
            return frame
        if frame.shape != self._shape:  # a reopened camera may deliver another size
            self._shape, self.box = frame.shape, self.crop.box(frame.shape[1], frame.shape[0])
        x, y, width, height = self.box
        return frame[y:y + height, x:x + width]
