"""The program `scripts/frame_cost.py` runs inside the emulated arm64 Python: one 640x480 BGR
frame prepared for a 224x224 model each way it could be, then the whole frame and a bare invoke.

Each preparation takes the BGR frame and returns RGB uint8 (224, 224, 3); scripts/frame_cost.py
imports PREPARATIONS to compare their pixels with the trainer's on the host. OpenCV's rows appear
only where OpenCV is installed (the camera extra; the device's base install has no OpenCV).
Before counting, it checks on this CPU that edge.image.shrink_bgr's OpenCV halving gives Pillow's
pixels (`shrink_differences`), and fails if not: the arm64 wheels' vector code is not x86's.

usage: python3 frame_cost_guest.py REPEATS MODEL.tflite
"""

import gc
import json
import sys
from collections import deque
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.classify import classify_frame  # noqa: E402
from edge.image import OPENCV_INSTALLED, resize_bgr, resize_rgb, shrink_bgr  # noqa: E402
from edge.model import load_model  # noqa: E402
from trainer.pi_cost_guest import TOP_K, WARMUP_INVOCATIONS, Regions, camera_frame  # noqa: E402

SIZE = (224, 224)  # (height, width)
BASELINE = "whole frame, bilinear"  # resize_bgr before it shrank the frame first
PILLOW_SHRINK = "Pillow reduce 1/2, bilinear"  # resize_bgr before OpenCV halved the frame
CURRENT = f"resize_bgr: {'OpenCV area' if OPENCV_INSTALLED else 'Pillow reduce'} 1/2, bilinear"  # classify_frame's
# Frames shrink_differences compares: (height, width); odd and not-by-4 sides take Pillow's way.
SHRINK_SHAPES = ((480, 640), (240, 320), (1080, 1920), (96, 128), (56, 40), (482, 642), (481, 643), (35, 47))
SHRINK_FACTORS = (2, 4, 8)


def bgr_image(frame: np.ndarray) -> Image.Image:
    return Image.frombuffer("RGB", frame.shape[1::-1], np.ascontiguousarray(frame), "raw", "BGR", 0, 1)


def numpy_box(frame: np.ndarray) -> np.ndarray:
    """2x2 box average of a uint8 frame in NumPy, rounded as Pillow's reduce rounds."""
    rows = frame[0::2].astype(np.uint16)
    rows += frame[1::2]
    boxes = rows[:, 0::2]
    boxes += rows[:, 1::2]
    boxes += 2
    boxes >>= 2
    return boxes.astype(np.uint8)


def shrink_differences() -> dict[str, int]:
    """How many values of each shrink differ from Pillow's reduce of the same BGR frame (random,
    its rows padded as picamera2 pads them): shrink_bgr by each factor, and OpenCV's INTER_AREA
    halving where OpenCV is installed. All must be 0."""
    rng = np.random.default_rng(1)
    differences = {}
    for height, width in SHRINK_SHAPES:
        frame = rng.integers(0, 256, (height, width + 8, 3), dtype=np.uint8)[:, :width]
        for factor in SHRINK_FACTORS:
            pillow = np.asarray(bgr_image(frame).reduce(factor))
            shrunk = np.asarray(shrink_bgr(frame, factor))
            differences[f"shrink_bgr {width}x{height} /{factor}"] = int(np.count_nonzero(shrunk != pillow))
            if OPENCV_INSTALLED and factor == 2 and height % 2 == 0 and width % 2 == 0:
                import cv2

                opencv = cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA)[..., ::-1]
                differences[f"OpenCV INTER_AREA {width}x{height} /2"] = int(np.count_nonzero(opencv != pillow))
    return differences


def _opencv_preparations() -> dict:
    try:
        import cv2
    except ImportError:
        return {}
    return {
        "OpenCV INTER_AREA": lambda frame: cv2.resize(frame, SIZE[::-1], interpolation=cv2.INTER_AREA)[..., ::-1],
        "OpenCV INTER_LINEAR": lambda frame: cv2.resize(frame, SIZE[::-1], interpolation=cv2.INTER_LINEAR)[..., ::-1],
        "OpenCV area 1/2, INTER_LINEAR": lambda frame: cv2.resize(
            cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA),
            SIZE[::-1], interpolation=cv2.INTER_LINEAR)[..., ::-1],
    }


PREPARATIONS = {
    BASELINE: lambda frame: resize_rgb(bgr_image(frame), SIZE),
    PILLOW_SHRINK: lambda frame: resize_rgb(bgr_image(frame).reduce(2), SIZE),
    CURRENT: lambda frame: resize_bgr(frame, SIZE),
    "Pillow reducing_gap=1": lambda frame: np.asarray(bgr_image(frame).resize(
        SIZE[::-1], Image.Resampling.BILINEAR, reducing_gap=1.0)),
    "NumPy box 1/2, bilinear": lambda frame: resize_rgb(bgr_image(numpy_box(frame)), SIZE),
    **_opencv_preparations(),
}


def main(repeats: int, model_path: str) -> dict[int, list[str]]:
    differing = {shrink: count for shrink, count in shrink_differences().items() if count}
    if differing:
        sys.exit(f"shrinking a frame is not Pillow's reduce here: values differing {differing}")
    gc.disable()  # as trainer/pi_cost_guest.py: a collection inside one counted run would make it unrepeatable
    regions = Regions(repeats)
    frame = camera_frame()
    for name, prepare in PREPARATIONS.items():
        for _ in range(WARMUP_INVOCATIONS):
            prepare(frame)
        regions.count("", name, lambda: prepare(frame))
    model = load_model(model_path, num_threads=1)
    recent_scores = deque(maxlen=1)
    for _ in range(WARMUP_INVOCATIONS):
        classify_frame(model, frame, TOP_K, recent_scores=recent_scores)
    regions.count("", "invoke", model.interpreter.invoke)
    regions.count("", "classify_frame", lambda: classify_frame(model, frame, TOP_K, recent_scores=recent_scores))
    return regions.table


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2])))
