"""Decoding and resizing: the one preprocessing path shared by the trainer and the device.

The trainer computes bottlenecks from exactly the pixels the device will feed its model, so a
model never sees at run time an input it was not trained on. Both sides call `load_rgb` (files,
or a file's bytes as a Beam pipeline reads them) or `resize_bgr` (camera frames); neither imports
TensorFlow. A camera frame reaches the trainer only as a JPEG the device saved (--collect,
--save_uncertain), which `load_rgb` decodes at the JPEG decoder's reduced scale: `resize_bgr`
shrinks a frame by that same factor first, so it sees the frame much as the trainer will.

The resize itself is integer arithmetic that OpenCV computes value for value (`bilinear`), so a
camera frame costs a Pi little (OpenCV's vector code) and the pixels are the same on every CPU.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Larger than any camera sensor (a 200 MP phone is 2e8); above this a file is a
# decompression bomb, not a photo, and is refused before any pixel is decoded.
MAX_IMAGE_PIXELS = 250_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow warns above its limit: raised as an error below
# The scales libjpeg can decode at (1/1, 1/2, 1/4, 1/8), largest first, as Pillow's draft picks them.
DRAFT_FACTORS = (8, 4, 2, 1)
# OpenCV (the camera extra; the device's base install has none) resizes for far fewer
# instructions than NumPy or Pillow (`opencv`).
OPENCV_INSTALLED = importlib.util.find_spec("cv2") is not None
_checked_opencv = None  # OpenCV's module, once `opencv` found that it computes this module's values

logger = logging.getLogger(__name__)


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


def box_factors(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The whole factors (x, y) by which `resize_rgb` box-averages an image of image_size=(width,
    height) before the bilinear step to size=(height, width): the largest that keep each side at
    least size, so that bilinear interpolation never shrinks a side by 2 or more (where it would
    skip pixels instead of averaging them)."""
    height, width = size
    return max(image_size[0] // width, 1), max(image_size[1] // height, 1)


def resize_rgb(image: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB image (PIL or uint8 HxWx3 array) to size=(height, width): uint8 (height, width, 3).

    Box averages by whole factors first (`box_factors`, Pillow's reduce), then `bilinear`. Aspect
    ratio is not kept, as in the classic retrain.py.
    """
    if isinstance(image, np.ndarray):
        if image.shape[:2] == tuple(size):
            return image
        image = Image.fromarray(image)
    factors = box_factors(image.size, size)
    if factors != (1, 1):
        image = image.reduce(factors)
    return bilinear(np.asarray(image), size)


def _bilinear_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each of `target` outputs along one axis: the two source indices and their 8-bit
    weights (summing to 256), sampled at pixel centres; outside the source, its edge pixel."""
    # OpenCV's scale is the reciprocal of target / source: for some sizes (501 to 256) a unit in
    # the last place from source / target, enough to tip a weight that lands halfway.
    position = (np.arange(target) + 0.5) * (1 / (target / source)) - 0.5
    first = np.floor(position).astype(np.intp)
    far = np.rint((position - first) * 256).astype(np.int32)  # rint: ties to even, as OpenCV rounds
    outside = (first < 0) | (first >= source - 1)
    far[outside] = 0
    first = np.clip(first, 0, source - 1)
    return first, np.minimum(first + 1, source - 1), 256 - far, far


def _channel_columns(pixel_columns: np.ndarray, channels: int) -> np.ndarray:
    """The columns of a row of interleaved channels that hold the given pixel columns' values."""
    return (pixel_columns[:, None] * channels + np.arange(channels)).ravel()


def bilinear(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (height, width, C) at size=(height, width), bilinear in integers.

    The arithmetic of OpenCV's INTER_LINEAR_EXACT, value for value (tests/test_edge.py compares
    them on hundreds of sizes; scripts/frame_cost_guest.py on the emulated Pi 5 before it
    counts): weights of 8 fractional bits, the row pass exact, the column pass rounded once. So
    the same on every CPU, and OpenCV can compute a camera frame's pixels (`resize_bgr`) where it
    is installed, while the trainer and file classification need no OpenCV.
    """
    if pixels.shape[:2] == tuple(size):
        return pixels
    height, width = size
    source_height, source_width, channels = pixels.shape
    # The row pass on rows of interleaved channels, in 16 bits: two 8-bit values weighted by 256
    # in all fit, as in OpenCV's row pass, and a Pi moves half the bytes it would in 32.
    flat = np.ascontiguousarray(pixels).reshape(source_height, source_width * channels)
    left, right, left_weight, right_weight = _bilinear_taps(source_width, width)
    rows = flat[:, _channel_columns(left, channels)].astype(np.uint16)
    rows *= np.repeat(left_weight, channels).astype(np.uint16)
    right_rows = flat[:, _channel_columns(right, channels)].astype(np.uint16)
    right_rows *= np.repeat(right_weight, channels).astype(np.uint16)
    rows += right_rows
    top, bottom, top_weight, bottom_weight = _bilinear_taps(source_height, height)
    result = rows[top].astype(np.uint32)
    result *= top_weight.astype(np.uint32)[:, None]
    bottom_rows = rows[bottom].astype(np.uint32)
    bottom_rows *= bottom_weight.astype(np.uint32)[:, None]
    result += bottom_rows
    result += 1 << 15
    result >>= 16
    return result.astype(np.uint8).reshape(height, width, channels)


def opencv():
    """OpenCV's module where it is installed, loads and computes this module's values, else None.

    Imported on first use, by a camera frame: the trainer and file classification import this
    module too, and have no use for OpenCV's start-up. Then OpenCV resizes a small frame each way
    `_opencv_resize_bgr` can, and must give Pillow's and NumPy's values: an OpenCV other than the
    one the tests ran (a distribution's, an older wheel) that rounds otherwise is left unused, with
    a warning, rather than feed the model pixels the trainer never computes.
    """
    global OPENCV_INSTALLED, _checked_opencv
    if OPENCV_INSTALLED and _checked_opencv is None:
        try:
            import cv2
        except ImportError:
            # Installed but unloadable (opencv-python without libGL, as on Raspberry Pi OS Lite):
            # Pillow and NumPy compute the same pixels, and no later frame tries again.
            OPENCV_INSTALLED = False
            return None
        if _opencv_differs(cv2):
            logger.warning("OpenCV %s resizes otherwise than the trainer: frames are resized without it, "
                           "for more CPU", cv2.__version__)
            OPENCV_INSTALLED = False
            return None
        _checked_opencv = cv2
    return _checked_opencv if OPENCV_INSTALLED else None


def _opencv_differs(cv2) -> bool:
    """Whether OpenCV resizes a random 64x48 frame otherwise than Pillow and NumPy do, at sizes
    that take each of its steps: halving then bilinear, halving twice then a box of 2, enlarging."""
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for size in ((16, 20), (11, 7), (96, 96)):
        factor = draft_factor(frame.shape[1::-1], size)
        resized = _opencv_resize_bgr(cv2, frame, factor, size)
        if resized is None or not np.array_equal(resized, resize_rgb(shrink_bgr(frame, factor), size)):
            return True
    return False


def draft_factor(image_size: tuple[int, int], size: tuple[int, int]) -> int:
    """The factor (1, 2, 4 or 8) by which `load_rgb` has the JPEG decoder shrink an image of
    image_size=(width, height) for size=(height, width): the largest that keeps both sides at
    least size, as Pillow's JpegImageFile.draft chooses it."""
    height, width = size
    fits = min(image_size[0] // width, image_size[1] // height)
    return next(factor for factor in DRAFT_FACTORS if factor <= max(fits, 1))


def shrink_bgr(frame: np.ndarray, factor: int) -> Image.Image:
    """A BGR uint8 (H, W, 3) frame halved log2(factor) times by Pillow's reduce(2) (2x2 box
    averages, a last partial box on an odd side): an RGB PIL image. Pillow's unpacker reads the
    BGR bytes straight into its RGB image, in the copy it makes anyway: swapping the channels of
    the whole frame first costs a Pi more than the network itself when NumPy does it."""
    image = Image.frombuffer("RGB", frame.shape[1::-1], np.ascontiguousarray(frame), "raw", "BGR", 0, 1)
    for _ in range(factor.bit_length() - 1):
        image = image.reduce(2)
    return image


def resize_bgr(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A camera's BGR uint8 (H, W, 3) frame -> RGB uint8 (height, width, 3) at size=(height, width).

    The frame is first shrunk by draft_factor (`shrink_bgr`), then resized as `resize_rgb` does.
    That is what `load_rgb` computes for the frame saved as a JPEG, with box averages where the
    decoder scales in its DCT. Where OpenCV is installed, it computes those very values
    (`_opencv_resize_bgr`) for far fewer instructions.
    """
    height, width = frame.shape[:2]
    factor = draft_factor((width, height), size)
    cv2 = opencv()
    resized = None if cv2 is None else _opencv_resize_bgr(cv2, frame, factor, size)
    return resize_rgb(shrink_bgr(frame, factor), size) if resized is None else resized


def _opencv_resize_bgr(cv2, frame: np.ndarray, factor: int, size: tuple[int, int]) -> np.ndarray | None:
    """`resize_bgr` in OpenCV's vector code, or None for a frame whose values it cannot compute
    (a side that does not halve evenly, a box of 3 or more): INTER_AREA halving of even sides is
    Pillow's reduce(2), INTER_LINEAR_EXACT at exactly half a side its reduce by 2 on that side
    (its weights are then 1/2 and 1/2, rounded as Pillow rounds), and at any other size `bilinear`.
    Value for value: tests/test_edge.py, and frame_cost_guest.py on the emulated Pi 5 with the
    arm64 wheels. On a Pi 5 that is 2.7 M instructions for a 640x480 frame and a 224x224 model,
    against 9.9 M through Pillow and NumPy (scripts/frame_cost.py).
    """
    height, width = frame.shape[:2]
    boxes = box_factors((width // factor, height // factor), size)
    if height % (factor * boxes[1]) or width % (factor * boxes[0]) or max(boxes) > 2:
        return None
    for _ in range(factor.bit_length() - 1):
        frame = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if frame.shape[:2] == tuple(size):
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    # Through RGBA: OpenCV's bit-exact bilinear is vectorised for 4 channels, not 3 (a frame costs
    # 0.7 M instructions more on 3, scripts/frame_cost.py), and the channel swap comes free.
    rgba = cv2.cvtColor(frame, cv2.COLOR_BGR2RGBA)
    if boxes != (1, 1):
        rgba = cv2.resize(rgba, (rgba.shape[1] // boxes[0], rgba.shape[0] // boxes[1]), interpolation=cv2.INTER_LINEAR_EXACT)
    rgba = cv2.resize(rgba, size[::-1], interpolation=cv2.INTER_LINEAR_EXACT)
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)


def load_rgb(path: str | Path | bytes, size: tuple[int, int]) -> np.ndarray:
    """Decode `path` (or a file's bytes) and resize it to size=(height, width): uint8 (height, width, 3)."""
    height, width = size
    return resize_rgb(open_rgb(path, draft_size=(width, height)), size)
