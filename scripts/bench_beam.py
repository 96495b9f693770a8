"""Benchmark: bottlenecks on Beam's DirectRunner against the local pipeline, and a cluster estimate.

Measured in one run, on the same images and backbone, each with a fresh cache:
  (a) the local pipeline (what `train` does: build the backbone, hash the files, batched forward)
  (b) `retrain-edge bottlenecks` on DirectRunner, multi_processing, --workers processes
  (c) (b) again on its full cache: Beam's fixed cost (start-up, listing, reading, hashing, model load)
Medians of --repeats. From (b) - (c), the steady rate of one worker process, and from it the time
a cluster would take, stated as an estimate.

    python scripts/bench_beam.py [--image_dir ../shared/data/flowers] [--architecture inception_v3]

Random weights by default (speed does not depend on them); skips cleanly when ../shared is absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.backbones import build_backbone, get_backbone, weights_id  # noqa: E402
from trainer.beam_bottlenecks import BeamBottleneckOptions, compute_bottlenecks_on_beam  # noqa: E402
from trainer.bottlenecks import BottleneckCache, file_keys, image_bottlenecks, make_forward  # noqa: E402
from trainer.dataset import list_images  # noqa: E402

DEFAULT_IMAGE_DIR = REPO.parent / "shared" / "data" / "flowers"
DATASET_SIZES = (100_000, 1_000_000)  # images, for the cluster estimate
CLUSTER_WORKERS = (1, 16, 64, 256)  # single-core worker processes (a 4-vCPU Dataflow VM runs 4)


def local_pipeline(paths: list[Path], architecture: str, weights: str, bottleneck_dir: Path) -> None:
    backbone = get_backbone(architecture)
    cache = BottleneckCache.for_backbone(bottleneck_dir, backbone, weights_id(weights, 0))
    forward = make_forward(build_backbone(backbone, weights, 0))
    image_bottlenecks(paths, file_keys(paths), backbone.input_size, forward, cache)


def beam_pipeline(image_dir: Path, architecture: str, weights: str, bottleneck_dir: Path, workers: int) -> int:
    result = compute_bottlenecks_on_beam(BeamBottleneckOptions(
        image_dir=str(image_dir), bottleneck_dir=str(bottleneck_dir), architecture=architecture, weights=weights,
        pipeline_args=("--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers))))
    return result.computed


def timed(function, *arguments) -> float:
    started = time.perf_counter()
    function(*arguments)
    return time.perf_counter() - started


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", type=Path, default=DEFAULT_IMAGE_DIR)
    parser.add_argument("--architecture", default="inception_v3")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--workers", type=int, default=2, help="DirectRunner worker processes")
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    if not arguments.image_dir.is_dir():
        print(f"skipped: {arguments.image_dir} is absent (../shared is not beside the repo); pass --image_dir")
        return

    images = list_images(arguments.image_dir)
    paths = sorted({images.image_dir / path for set_name in images.files for label in images.labels
                    for path in images.files[set_name][label]})
    times = {"local": [], "beam": [], "beam_warm": []}
    for _ in range(arguments.repeats):
        with tempfile.TemporaryDirectory() as work:
            times["local"].append(timed(local_pipeline, paths, arguments.architecture, arguments.weights, Path(work, "local")))
            beam_cache = Path(work, "beam")
            started = time.perf_counter()
            computed = beam_pipeline(arguments.image_dir, arguments.architecture, arguments.weights, beam_cache,
                                     arguments.workers)
            times["beam"].append(time.perf_counter() - started)
            assert computed == len(paths), f"Beam computed {computed} of {len(paths)} images"
            times["beam_warm"].append(timed(beam_pipeline, arguments.image_dir, arguments.architecture,
                                            arguments.weights, beam_cache, arguments.workers))
    local, beam, beam_warm = (statistics.median(times[name]) for name in ("local", "beam", "beam_warm"))
    count = len(paths)

    print(f"\nbottlenecks: {arguments.architecture} (weights: {arguments.weights}), {count} images from "
          f"{arguments.image_dir}, {os.cpu_count()} cores, median of {arguments.repeats}")
    print(f"{'path':<62}{'wall s':>8}{'images/s':>10}")
    print(f"{'(a) local pipeline, fresh cache (baseline)':<62}{local:>8.1f}{count / local:>10.1f}")
    print(f"{f'(b) DirectRunner multi_processing x{arguments.workers}, fresh cache':<62}{beam:>8.1f}{count / beam:>10.1f}")
    print(f"{'(c) DirectRunner, full cache (fixed cost: nothing computed)':<62}{beam_warm:>8.1f}")
    print(f"ratio b/a = {local / beam:.2f} (images/s, DirectRunner over local)")

    if beam - beam_warm < beam_warm:
        print("\ntoo few images for a steady-state rate (b is mostly the fixed cost c): no cluster estimate")
        return
    steady = count / (beam - beam_warm) / arguments.workers
    print(f"\nper worker process, steady state: {count} / (b - c) / {arguments.workers} = {steady:.1f} images/s")
    print("ESTIMATE, not a measurement: time = images / (workers x that rate) + the fixed cost (c),")
    print("assuming workers as fast as this machine's cores and storage that keeps up:")
    print(f"{'workers':>8}" + "".join(f"{f'{size:,} images':>18}" for size in DATASET_SIZES))
    print(f"{'local':>8}" + "".join(f"{hours(size / (count / local)):>18}" for size in DATASET_SIZES))
    for workers in CLUSTER_WORKERS:
        print(f"{workers:>8}" + "".join(f"{hours(size / (workers * steady) + beam_warm):>18}" for size in DATASET_SIZES))


if __name__ == "__main__":
    main()
