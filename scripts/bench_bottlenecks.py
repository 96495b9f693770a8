"""Benchmark: bottleneck throughput, and a cold against a warm `retrain-edge train`.

Measured in one run, on the same images and backbone:
  (a) naive Keras: one image at a time, decode then model.predict on that one image
  (b) this project's pipeline, cold cache (batched compiled forward, decoding overlapped)
  (c) the bare backbone on random tensors in batches through the compiled forward (the ceiling)
then two `retrain-edge train` runs on the same data, cold and warm cache.

    python scripts/bench_bottlenecks.py [--image_dir ../shared/data/flowers] [--architecture inception_v3]

Random weights by default (speed does not depend on them). Medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from edge.image import load_rgb  # noqa: E402
from trainer.backbones import build_backbone, get_backbone  # noqa: E402
from trainer.bottlenecks import FORWARD_BATCH_SIZE, BottleneckCache, file_keys, image_bottlenecks, make_forward  # noqa: E402


def median_rate(measure, count: int, repeats: int) -> float:
    """Median images per second over `repeats` runs of measure(), which handles `count` images."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        measure()
        times.append(time.perf_counter() - started)
    return count / statistics.median(times)


def train_wall_time(arguments: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trainer.cli", "train", *arguments], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    output_dir = Path(arguments[arguments.index("--output_dir") + 1])
    return wall, json.loads((output_dir / "run.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", type=Path, default=REPO.parent / "shared" / "data" / "flowers")
    parser.add_argument("--architecture", default="inception_v3")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--images", type=int, default=96, help="images for the throughput part")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip_train", action="store_true", help="only the throughput part")
    arguments = parser.parse_args()
    if not arguments.image_dir.is_dir():
        sys.exit(f"{arguments.image_dir} not found: pass --image_dir (e.g. a folder from scripts/make_sample_data.py)")

    backbone = get_backbone(arguments.architecture)
    model = build_backbone(backbone, arguments.weights, seed=0)
    forward = make_forward(model)
    paths = sorted(arguments.image_dir.rglob("*.jpg"))[: arguments.images]
    size = backbone.input_size
    forward(np.zeros((FORWARD_BATCH_SIZE, *size, 3), np.uint8))  # trace once, outside the timings
    model.predict(np.zeros((1, *size, 3), np.float32), verbose=0)

    def naive():
        for path in paths:
            pixels = load_rgb(path, size).astype(np.float32)[None] / 127.5 - 1
            model.predict(pixels, verbose=0)

    def pipeline():
        with tempfile.TemporaryDirectory() as cache_dir:
            image_bottlenecks(paths, file_keys(paths), size, forward, BottleneckCache(Path(cache_dir), backbone.bottleneck_size))

    batches = [np.random.default_rng(i).integers(0, 256, (FORWARD_BATCH_SIZE, *size, 3), dtype=np.uint8)
               for i in range((len(paths) + FORWARD_BATCH_SIZE - 1) // FORWARD_BATCH_SIZE)]

    def ceiling():
        for batch in batches:
            forward(batch)

    naive_rate = median_rate(naive, len(paths), arguments.repeats)
    pipeline_rate = median_rate(pipeline, len(paths), arguments.repeats)
    ceiling_rate = median_rate(ceiling, len(batches) * FORWARD_BATCH_SIZE, arguments.repeats)
    print(f"\nbottlenecks: {arguments.architecture}, {len(paths)} images from {arguments.image_dir}, "
          f"{os.cpu_count()} cores, median of {arguments.repeats}")
    print(f"{'path':<48}{'images/s':>10}")
    print(f"{'(a) naive: decode + predict, one image at a time':<48}{naive_rate:>10.1f}")
    print(f"{'(b) pipeline, cold cache':<48}{pipeline_rate:>10.1f}")
    print(f"{'(c) bare batched forward on random tensors':<48}{ceiling_rate:>10.1f}")
    print(f"ratio b/a = {pipeline_rate / naive_rate:.2f}   ratio b/c = {pipeline_rate / ceiling_rate:.2f}")
    if arguments.skip_train:
        return

    with tempfile.TemporaryDirectory() as work:
        train = ["--image_dir", str(arguments.image_dir), "--architecture", arguments.architecture,
                 "--weights", arguments.weights, "--bottleneck_dir", f"{work}/cache", "--output_dir", f"{work}/out"]
        cold, cold_run = train_wall_time(train)
        warm, warm_run = train_wall_time(train)
    steps = warm_run["hyperparameters"]["how_many_training_steps"]
    print(f"\ntrain: {arguments.architecture} on {arguments.image_dir}, {steps} steps")
    print(f"{'run':<12}{'wall s':>8}{'bottlenecks s':>15}{'training s':>12}")
    for name, wall, run in (("cold cache", cold, cold_run), ("warm cache", warm, warm_run)):
        print(f"{name:<12}{wall:>8.1f}{run['timings']['bottlenecks_s']:>15.1f}{run['timings']['training_s']:>12.2f}")
    print(f"warm / cold wall time = {warm / cold:.0%}")


if __name__ == "__main__":
    main()
