"""Decoding and resizing: the one preprocessing path shared by the trainer and the device.

The trainer computes bottlenecks from exactly the pixels the device will feed its model, so a
model never sees at run time an input it was not trained on. Both sides call `load_rgb` (files,
or a file's bytes as a Beam pipeline reads them) or `resize_bgr` (camera frames); neither imports
TensorFlow. A camera frame reaches the trainer only as a JPEG the device saved (--collect,
--save_uncertain), which `load_rgb` decodes at the JPEG decoder's reduced scale: `resize_bgr`
shrinks a frame by that same factor first, so it sees the frame much as the trainer will.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Larger than any camera sensor (a 200 MP phone is 2e8); above this a file is a
# decompression bomb, not a photo, and is refused before any pixel is decoded.
MAX_IMAGE_PIXELS = 250_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow warns above its limit: raised as an error below
RESAMPLE = Image.Resampling.BILINEAR
# The scales libjpeg can decode at (1/1, 1/2, 1/4, 1/8), largest first, as Pillow's draft picks them.
DRAFT_FACTORS = (8, 4, 2, 1)
# OpenCV (the camera extra; the device's base install has none) halves frames for far fewer
# instructions than Pillow (`shrink_bgr`). Looked up, not imported: the trainer and file
# classification import this module too, and have no use for OpenCV's start-up.
OPENCV_INSTALLED = importlib.util.find_spec("cv2") is not None


class ImageError(ValueError):
    """A file that is not a decodable, sane image."""


def open_rgb(path: str | Path | bytes, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode a file (a path, or the file's bytes) fully into an RGB PIL image, or raise ImageError.

    draft_size (width, height) lets the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding
    (never below draft_size), which makes decoding a 12 MP photo for a 224 px model ~10x faster.
    """
    if isinstance(path, bytes):
        source, path = io.BytesIO(path), f"{len(path)} bytes"  # error messages name the data by its length
    else:
        source = path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it: refuse those too, before decoding.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageError(f"{path}: {image.width}x{image.height} pixels is too large to be an image")
                if draft_size is not None:
                    image.draft("RGB", draft_size)
                return image.convert("RGB")
    except ImageError:
        raise
    except Exception as error:  # Pillow's decoders raise many types (struct.error, IndexError, ...) on bad files
        raise ImageError(f"{path}: not a decodable image ({error})") from None


def resize_rgb(image: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB image (PIL or uint8 HxWx3 array) to size=(height, width), bilinear.

    Returns uint8 (height, width, 3). Aspect ratio is not kept, as in the classic retrain.py.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), RESAMPLE)
    return np.asarray(image, dtype=np.uint8)


def draft_factor(image_size: tuple[int, int], size: tuple[int, int]) -> int:
    """The factor (1, 2, 4 or 8) by which `load_rgb` has the JPEG decoder shrink an image of
    image_size=(width, height) for size=(height, width): the largest that keeps both sides at
    least size, as Pillow's JpegImageFile.draft chooses it."""
    height, width = size
    fits = min(image_size[0] // width, image_size[1] // height)
    return next(factor for factor in DRAFT_FACTORS if factor <= max(fits, 1))


def shrink_bgr(frame: np.ndarray, factor: int) -> Image.Image:
    """A BGR uint8 (H, W, 3) frame averaged over factor x factor boxes, as Pillow's reduce does:
    an RGB PIL image of ceil(W / factor) x ceil(H / factor).

    Where OpenCV is installed and the frame's sides are even, OpenCV's INTER_AREA halves it: the
    same pixels, value for value (tests/test_pi_cost.py on the test machine, frame_cost_guest.py on
    the emulated Pi 5 with the arm64 wheels), for a fraction of the instructions of Pillow reading
    the whole frame and reducing it (scripts/frame_cost.py). Not by 4 or 8, where OpenCV rounds
    some box means differently (off by 1), nor for odd sides, whose last box Pillow averages over
    the pixels there are and OpenCV drops. Pillow's unpacker reads the BGR bytes straight into its
    RGB image, in the copy it makes anyway: swapping the channels of the whole frame first costs a
    Pi more than the network itself when NumPy does it (picamera2 without OpenCV).
    """
    global OPENCV_INSTALLED
    height, width = frame.shape[:2]
    if OPENCV_INSTALLED and factor == 2 and height % 2 == 0 and width % 2 == 0:
        try:
            import cv2  # an OpenCV camera has imported it already, to read the frame
        except ImportError:
            # Installed but unloadable (opencv-python without libGL, as on Raspberry Pi OS Lite):
            # picamera2 frames need no OpenCV, so Pillow halves them, and no later frame tries again.
            OPENCV_INSTALLED = False
        else:
            frame, factor = cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA), 1
    image = Image.frombuffer("RGB", frame.shape[1::-1], np.ascontiguousarray(frame), "raw", "BGR", 0, 1)
    return image.reduce(factor) if factor > 1 else image


def resize_bgr(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A camera's BGR uint8 (H, W, 3) frame -> RGB uint8 (height, width, 3) at size=(height, width).

    The frame is first averaged over draft_factor x draft_factor boxes (`shrink_bgr`), then
    resized as `resize_rgb` does. That is what `load_rgb` computes for the frame saved as a JPEG,
    with a box average where the decoder scales in its DCT: measured on the flower photos as
    640x480 frames, closer to the trainer's pixels than resizing the whole frame, for 0.46x its
    instructions on a Pi with OpenCV, 0.69x without (`scripts/frame_cost.py`).
    """
    height, width = frame.shape[:2]
    return resize_rgb(shrink_bgr(frame, draft_factor((width, height), size)), size)


def load_rgb(path: str | Path | bytes, size: tuple[int, int]) -> np.ndarray:
    """Decode `path` (or a file's bytes) and resize it to size=(height, width): uint8 (height, width, 3)."""
    height, width = size
    return resize_rgb(open_rgb(path, draft_size=(width, height)), size)
