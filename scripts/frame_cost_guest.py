"""The program `scripts/frame_cost.py` runs inside the emulated arm64 Python: one 640x480 BGR
frame prepared for a 224x224 model each way it could be, then the whole frame and a bare invoke.

Each preparation takes the BGR frame and returns RGB uint8 (224, 224, 3); scripts/frame_cost.py
imports PREPARATIONS to compare their pixels with the trainer's on the host. OpenCV's rows appear
only where OpenCV is installed (the camera extra; the device's base install has no OpenCV).

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
from edge.image import resize_bgr, resize_rgb  # noqa: E402
from edge.model import load_model  # noqa: E402
from trainer.pi_cost_guest import TOP_K, WARMUP_INVOCATIONS, Regions, camera_frame  # noqa: E402

SIZE = (224, 224)  # (height, width)
BASELINE = "whole frame, bilinear"  # resize_bgr before it shrank the frame first
CURRENT = "resize_bgr: Pillow reduce 1/2, bilinear"  # what classify_frame does


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
    CURRENT: lambda frame: resize_bgr(frame, SIZE),
    "Pillow reducing_gap=1": lambda frame: np.asarray(bgr_image(frame).resize(
        SIZE[::-1], Image.Resampling.BILINEAR, reducing_gap=1.0)),
    "NumPy box 1/2, bilinear": lambda frame: resize_rgb(bgr_image(numpy_box(frame)), SIZE),
    **_opencv_preparations(),
}


def main(repeats: int, model_path: str) -> dict[int, list[str]]:
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
