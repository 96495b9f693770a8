"""The program `scripts/frame_cost.py` runs inside the emulated arm64 Python: one 640x480 BGR
frame prepared for a 224x224 model each way it could be, then the whole frame and a bare invoke.

Each preparation takes the BGR frame and returns RGB uint8 (224, 224, 3); scripts/frame_cost.py
imports PREPARATIONS to compare their pixels with the trainer's on the host. OpenCV's rows appear
only where OpenCV is installed (the camera extra; the device's base install has no OpenCV).
Before counting, it checks on this CPU that OpenCV computes edge.image's pixels
(`opencv_differences`), and fails if not: the arm64 wheels' vector code is not x86's.

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
from edge.image import OPENCV_INSTALLED, bilinear, draft_factor, resize_bgr, resize_rgb, shrink_bgr  # noqa: E402
from edge.model import load_model  # noqa: E402
from trainer.pi_cost_guest import TOP_K, WARMUP_INVOCATIONS, Regions, camera_frame  # noqa: E402

SIZE = (224, 224)  # (height, width)
BASELINE = "whole frame, antialiased bilinear"  # resize_bgr before it shrank the frame first
PILLOW_SHRINK = "Pillow reduce 1/2, antialiased bilinear"  # then before OpenCV halved the frame
PREVIOUS = "OpenCV area 1/2, antialiased bilinear"  # then before the bilinear step became exact integers
CURRENT = f"resize_bgr: {'OpenCV' if OPENCV_INSTALLED else 'Pillow reduce 1/2, NumPy bilinear'}"  # classify_frame's
# Frames opencv_differences compares: (height, width), camera sizes, small frames the model sizes
# enlarge, and sides that a halving or box of 2 does not divide (OpenCV leaves those to Pillow).
FRAME_SHAPES = ((480, 640), (240, 320), (1080, 1920), (96, 128), (56, 40), (482, 642), (481, 643), (35, 49))
# Sizes (height, width) the bilinear step is compared at: up and down, odd and even, and 256, where
# OpenCV's scale for a side of 49 is not 49 / 256 (edge.image._bilinear_taps).
BILINEAR_SIZES = ((224, 224), (160, 96), (97, 33), (500, 300), (128, 128), (160, 160), (256, 256))


def antialiased(image: Image.Image) -> np.ndarray:
    """The trainer's resize before its bilinear step became exact integers: Pillow's, antialiased."""
    return np.asarray(image.resize(SIZE[::-1], Image.Resampling.BILINEAR))


def opencv_differences() -> dict[str, int]:
    """How many values OpenCV computes otherwise than edge.image on random BGR frames (their rows
    padded as picamera2 pads them): INTER_AREA halving against Pillow's reduce(2), INTER_LINEAR_EXACT
    against `bilinear`, and resize_bgr against what it computes without OpenCV. All must be 0."""
    import cv2

    rng = np.random.default_rng(1)
    differences = {}
    for height, width in FRAME_SHAPES:
        frame = rng.integers(0, 256, (height, width + 8, 3), dtype=np.uint8)[:, :width]
        if height % 2 == 0 and width % 2 == 0:
            halved = cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA)[..., ::-1]
            differences[f"INTER_AREA {width}x{height} /2"] = int(np.count_nonzero(halved != shrink_bgr(frame, 2)))
        for size in BILINEAR_SIZES:
            exact = cv2.resize(frame, size[::-1], interpolation=cv2.INTER_LINEAR_EXACT)
            differences[f"INTER_LINEAR_EXACT {width}x{height} -> {size[1]}x{size[0]}"] = int(
                np.count_nonzero(exact != bilinear(frame, size)))
            without = resize_rgb(shrink_bgr(frame, draft_factor((width, height), size)), size)
            differences[f"resize_bgr {width}x{height} -> {size[1]}x{size[0]}"] = int(
                np.count_nonzero(resize_bgr(frame, size) != without))
    return differences


def _opencv_preparations() -> dict:
    try:
        import cv2
    except ImportError:
        return {}

    def halve(frame: np.ndarray) -> np.ndarray:
        return cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)

    return {
        PREVIOUS: lambda frame: antialiased(shrink_bgr(halve(frame), 1)),
        "OpenCV area 1/2, exact bilinear on 3 channels": lambda frame: cv2.cvtColor(
            cv2.resize(halve(frame), SIZE[::-1], interpolation=cv2.INTER_LINEAR_EXACT), cv2.COLOR_BGR2RGB),
        "OpenCV area 1/2, INTER_LINEAR (not exact)": lambda frame: cv2.cvtColor(
            cv2.resize(halve(frame), SIZE[::-1], interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB),
    }


PREPARATIONS = {
    BASELINE: lambda frame: antialiased(shrink_bgr(frame, 1)),
    PILLOW_SHRINK: lambda frame: antialiased(shrink_bgr(frame, 2)),
    **_opencv_preparations(),
    CURRENT: lambda frame: resize_bgr(frame, SIZE),
    "Pillow reduce 1/2, NumPy bilinear": lambda frame: resize_rgb(shrink_bgr(frame, 2), SIZE),
}


def main(repeats: int, model_path: str) -> dict[int, list[str]]:
    differing = {what: count for what, count in opencv_differences().items() if count} if OPENCV_INSTALLED else {}
    if differing:
        sys.exit(f"OpenCV does not compute edge.image's pixels here: values differing {differing}")
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
