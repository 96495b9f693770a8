"""Benchmark what --motion saves: CPU seconds per hour of a mostly still scene, with and without it.

The scene is a generated 640x480 clip at 10 fps: a still textured background with a camera's
pixel noise, and an object crossing it for 1 s three times a minute (5% of the time moving).
edge-classify's library path (edge.classify.run, as the CLI calls it) classifies the clip in a
fresh process per run: every frame, and with --motion (its default threshold and interval). The
CPU time of the whole process (decoding, the motion check, preprocessing, inference) is scaled
to an hour of video. Medians over --rounds rounds, the conditions interleaved in each round so
a shared machine's load falls on both alike; the ratio is against every frame in the same run.
Target: --motion <= 0.3x.

    nice -n 10 .venv/bin/python scripts/bench_motion.py [--model ../shared/data/thirdparty/mobilenet_v2_1.0_224_quant.tflite]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "shared" / "data" / "thirdparty" / "mobilenet_v2_1.0_224_quant.tflite"
REPO = Path(__file__).resolve().parents[1]
FRAME_SIZE = (640, 480)  # (width, height), a typical camera
CLIP_FPS = 10.0
CLIP_SECONDS = 60
MOVING = ((10.0, 11.0), (30.0, 31.0), (50.0, 51.0))  # (start, end) seconds of the object crossing
NOISE_SIGMA = 3.0  # grey levels of pixel noise on every frame
TARGET_RATIO = 0.3

RUN = """
import json, sys, time
from pathlib import Path
from edge.classify import ClassifyOptions, run
clip, model, threads, motion = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "motion"
started = time.process_time()
results = []
summary = run(ClassifyOptions(camera=clip, model=Path(model), num_threads=threads, motion=motion), results.append)
print(json.dumps({"cpu_s": time.process_time() - started, "frames": summary.stream.frames, "classified": len(results)}))
"""


def moving_at(seconds: float) -> float | None:
    """How far (0 to 1) the object has crossed at this time, None when it is not in view."""
    for start, end in MOVING:
        if start <= seconds < end:
            return (seconds - start) / (end - start)
    return None


def write_clip(path: Path) -> Path:
    """The scene described in the module's docstring, as an MJPG .avi written by OpenCV."""
    import cv2

    width, height = FRAME_SIZE
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), np.uint8), (0, 0), 6)
    background = cv2.normalize(texture, None, 40, 220, cv2.NORM_MINMAX)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), CLIP_FPS, FRAME_SIZE)
    for index in range(int(CLIP_SECONDS * CLIP_FPS)):
        frame = background.copy()
        crossed = moving_at(index / CLIP_FPS)
        if crossed is not None:
            x = int(crossed * (width - 160))
            frame[160:400, x:x + 160] = (30, 60, 200)
        writer.write(np.clip(frame + rng.normal(0, NOISE_SIGMA, frame.shape), 0, 255).astype(np.uint8))
    writer.release()
    return path


def measure(clip: Path, model: Path, threads: int, condition: str) -> dict:
    completed = subprocess.run([sys.executable, "-c", RUN, str(clip), str(model), str(threads), condition],
                               capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--num_threads", type=int, default=1, help="interpreter threads (default 1: a core's CPU time)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.model.exists():
        sys.exit(f"error: {args.model} is absent: pass --model with any TFLite image classifier")
    moving_seconds = sum(end - start for start, end in MOVING)
    conditions = {"every frame (baseline)": "all", "--motion": "motion"}
    runs: dict[str, list[dict]] = {name: [] for name in conditions}
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "scene.avi")
        for _ in range(args.rounds):
            for name, condition in conditions.items():
                runs[name].append(measure(clip, args.model, args.num_threads, condition))
    per_hour = {name: statistics.median(run["cpu_s"] for run in measured) * 3600 / CLIP_SECONDS
                for name, measured in runs.items()}
    baseline = per_hour["every frame (baseline)"]
    print(f"{args.model.name}, {args.num_threads} thread(s); a {CLIP_SECONDS} s {FRAME_SIZE[0]}x{FRAME_SIZE[1]} clip at "
          f"{CLIP_FPS:g} fps, moving {moving_seconds / CLIP_SECONDS:.0%} of the time; median of {args.rounds} rounds\n")
    print(f"{'condition':<24} {'CPU s per hour':>15} {'frames classified':>18} {'ratio':>6}")
    for name, measured in runs.items():
        classified = f"{measured[0]['classified']} of {measured[0]['frames']}"
        print(f"{name:<24} {per_hour[name]:>15.0f} {classified:>18} {per_hour[name] / baseline:>5.2f}x")
    ratio = per_hour["--motion"] / baseline
    print(f"\n--motion / every frame: {ratio:.2f}x (target <= {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'missed'})")


if __name__ == "__main__":
    main()
