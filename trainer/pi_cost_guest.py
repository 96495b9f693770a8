"""The program `trainer.pi_cost` runs inside the emulated arm64 Python: it marks what is counted.

Run by the arm64 root's own python3 under qemu-user with the counting plugin
(scripts/pi_cost_plugin.c); it imports only the edge runtime and numpy, never `trainer`, because
the root has only the device's packages. Each counted region is bracketed by two system calls
that fail harmlessly (lseek on fd -1) and whose offset the plugin recognises; the third argument
is the region's label. stdout gets one JSON line: label -> [model path, what was counted].

usage: python3 pi_cost_guest.py REPEATS MODEL.tflite...
"""

import gc
import json
import os
import sys
from collections import deque

import numpy as np

from edge.classify import classify_frame
from edge.model import load_model

PI_COST_START = 0x5049434F  # the offsets scripts/pi_cost_plugin.c recognises
PI_COST_STOP = 0x50494350
FRAME_SHAPE = (480, 640, 3)  # a 640x480 BGR camera frame, as OpenCV and picamera2 deliver it
TOP_K = 3  # edge-classify's default
# Runs before counting: the first invocations pack XNNPACK's weights and plan its buffers, the
# first frames settle the allocator's free lists (their counts fall for about three frames).
WARMUP_INVOCATIONS = 4


def _mark(offset: int, label: int) -> None:
    try:
        os.lseek(-1, offset, label)
    except OSError:
        pass


class Regions:
    """Counted regions: label -> [model path, what]; the plugin writes each label's count."""

    def __init__(self, repeats: int):
        self.repeats = repeats
        self.table: dict[int, list[str]] = {}
        self.count("", "empty", lambda: None)  # the markers' own cost, subtracted by the caller

    def count(self, model_path: str, what: str, run) -> None:
        """Count `run()` `repeats` times, each run its own region."""
        for _ in range(self.repeats):
            label = len(self.table)
            self.table[label] = [model_path, what]
            _mark(PI_COST_START, label)
            run()
            _mark(PI_COST_STOP, label)


def camera_frame() -> np.ndarray:
    """Fixed, varied pixels: no kernel that runs here branches on the values, but a fixed input
    keeps even a data-dependent one repeatable."""
    return np.random.default_rng(0).integers(0, 256, FRAME_SHAPE, dtype=np.uint8)


def main(repeats: int, model_paths: list[str]) -> dict[int, list[str]]:
    # A collection landing inside one counted frame and not in the others would make it unrepeatable.
    gc.disable()
    regions = Regions(repeats)
    frame = camera_frame()
    recent_scores = deque(maxlen=1)  # what edge-classify's stream loop passes without --smooth
    for model_path in model_paths:
        model = load_model(model_path, num_threads=1)
        model.interpreter.set_tensor(model.input_index, model.preprocess(
            np.random.default_rng(1).integers(0, 256, (*model.input_size, 3), dtype=np.uint8)))
        for _ in range(WARMUP_INVOCATIONS):
            model.interpreter.invoke()
        regions.count(model_path, "invoke", model.interpreter.invoke)
        for _ in range(WARMUP_INVOCATIONS):
            classify_frame(model, frame, TOP_K, recent_scores=recent_scores)
        regions.count(model_path, "frame", lambda: classify_frame(model, frame, TOP_K, recent_scores=recent_scores))
    return regions.table


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2:])))
