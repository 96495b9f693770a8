"""Benchmark: retraining after adding photos computes only the new bottlenecks.

Measured in one run, on one dataset and backbone, with a fresh bottleneck cache each repeat:
  (a) `retrain-edge train` on the dataset with --new_percentage of each class held back (cold cache)
  (b) the held-back photos added, `retrain-edge train` again (the baseline is (a), same run)
It prints both wall times (the whole command, as a user waits for it, interpreter start included),
and how many bottlenecks each run computed: the cache entries the run wrote, counted on disk.

    python scripts/bench_incremental.py [--image_dir ../shared/data/flowers] [--architecture inception_v3]

Random weights by default (speed does not depend on them; no Inception weights are offline here).
The dataset is linked into a temporary folder, never copied or modified. Medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.image import IMAGE_SUFFIXES  # noqa: E402

TARGET_RATIO = 0.15  # the target: the second run's wall time at most this share of the first's


def held_back(names: list[str], percentage: float) -> set[str]:
    """The `percentage` of names to add later: the first by SHA-1 of the name, so the choice is fixed."""
    count = math.ceil(len(names) * percentage / 100)
    return set(sorted(names, key=lambda name: hashlib.sha1(name.encode()).hexdigest())[:count])


def link_dataset(source: Path, destination: Path, percentage: float) -> list[tuple[Path, Path]]:
    """Link source's class folders into destination, less each class's held-back images.

    Returns the (link, target) pairs held back, to add for the second run.
    """
    later = []
    for class_dir in sorted(path for path in source.iterdir() if path.is_dir() and not path.name.startswith(".")):
        names = sorted(path.name for path in class_dir.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
        add_later = held_back(names, percentage)
        (destination / class_dir.name).mkdir(parents=True)
        for name in names:
            link = destination / class_dir.name / name
            if name in add_later:
                later.append((link, (class_dir / name).resolve()))
            else:
                link.symlink_to((class_dir / name).resolve())
    return later


def cache_entries(bottleneck_dir: Path) -> dict[str, int]:
    """Cache entry path -> modification time (ns); an entry written by a run is new or newer."""
    return {str(path): path.stat().st_mtime_ns for path in bottleneck_dir.rglob("*.f32")}


def timed_train(arguments: list[str], bottleneck_dir: Path) -> dict:
    """One `retrain-edge train`: wall time, the run's timings and the cache entries it wrote."""
    before = cache_entries(bottleneck_dir)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trainer.cli", "train", *arguments], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = cache_entries(bottleneck_dir)
    output_dir = Path(arguments[arguments.index("--output_dir") + 1])
    run = json.loads((output_dir / "run.json").read_text())
    images = sum(len(paths) for by_label in run["split"]["files"].values() for paths in by_label.values())
    return {"wall_s": wall, "images": images, "computed": sum(after[path] != before.get(path) for path in after),
            **run["timings"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", type=Path, default=REPO.parent / "shared" / "data" / "flowers")
    parser.add_argument("--architecture", default="inception_v3")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--new_percentage", type=float, default=5.0, help="share of each class added for the second run")
    parser.add_argument("--repeats", type=int, default=1)
    arguments = parser.parse_args()
    if not arguments.image_dir.is_dir():
        sys.exit(f"{arguments.image_dir} not found: pass --image_dir (e.g. a folder from scripts/make_sample_data.py)")

    runs = {"first": [], "second": []}
    for _ in range(arguments.repeats):
        with tempfile.TemporaryDirectory() as work:
            image_dir, bottleneck_dir = Path(work) / "images", Path(work) / "cache"
            bottleneck_dir.mkdir()
            later = link_dataset(arguments.image_dir, image_dir, arguments.new_percentage)
            train = ["--image_dir", str(image_dir), "--architecture", arguments.architecture, "--weights",
                     arguments.weights, "--bottleneck_dir", str(bottleneck_dir), "--output_dir", f"{work}/out"]
            runs["first"].append(timed_train(train, bottleneck_dir))
            for link, target in later:
                link.symlink_to(target)
            runs["second"].append(timed_train(train, bottleneck_dir))

    def median(run: str, key: str) -> float:
        return statistics.median(record[key] for record in runs[run])

    first, second = runs["first"][0], runs["second"][0]
    print(f"\nincremental retraining: {arguments.architecture} (--weights {arguments.weights}), {arguments.image_dir}: "
          f"{first['images']} images, then {second['images'] - first['images']} added ({arguments.new_percentage:g}%); "
          f"{os.cpu_count()} cores, median of {arguments.repeats}")
    columns = ("images", "computed", "wall_s", "list_images_s", "build_backbone_s", "bottlenecks_s", "training_s")
    print(f"{'run':<22}" + "".join(f"{column:>18}" for column in columns))
    for run, name in (("first", "(a) first, cold cache"), ("second", "(b) after adding")):
        print(f"{name:<22}" + "".join(
            f"{median(run, column):>18.0f}" if column in ("images", "computed") else f"{median(run, column):>18.1f}"
            for column in columns))
    ratio = median("second", "wall_s") / median("first", "wall_s")
    print(f"bottlenecks computed by (b): {median('second', 'computed'):.0f} "
          f"(new images: {second['images'] - first['images']})")
    print(f"wall time b/a = {ratio:.1%} (target <= {TARGET_RATIO:.0%})")


if __name__ == "__main__":
    main()
