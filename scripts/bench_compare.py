"""Does `retrain-edge compare` rank backbones as photos it never saw do, and what does a warm rerun cost?

    python scripts/bench_compare.py [--image_dir ../shared/data/flowers] [--splits 5] [--repeats 3]
        [--bottleneck_dir DIR]

Split s of `splits` holds back the photos whose classic split hash falls in
[100 s / splits, 100 (s + 1) / splits). `compare` sees only the others (a folder of symbolic links
to them); then each backbone's head is trained on those same photos as `train` trains it and
scored on the held-back ones. Over all splits every photo is held back once, so the held-back
accuracy of a backbone is measured on every photo by heads that never saw it, and compare's
choices were made without it. Printed: per split, compare's ranking and recommendation; per
backbone, compare's accuracy (mean over splits) and the pooled held-back accuracy; both rankings.
Then the whole `retrain-edge compare` command runs on every photo, once to fill the caches and
`repeats` times warm; the median warm wall time is printed beside its target (3 min on 2 cores).
The backbones are the three whose weights ship with the shared data.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

import numpy as np  # noqa: E402

from trainer.backbones import get_backbone, weights_id  # noqa: E402
from trainer.bottlenecks import BottleneckCache, file_keys  # noqa: E402
from trainer.compare import CompareOptions, compare  # noqa: E402
from trainer.dataset import hash_percentage, list_images  # noqa: E402
from trainer.train import TrainOptions, train_head  # noqa: E402

WEIGHTS = SHARED / "weights"
BACKBONES = {
    "mobilenet_v1_0.25_224": WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5",
    "mobilenet_v2_0.35_224": WEIGHTS / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
    "mobilenet_v2_0.5_224": WEIGHTS / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5",
}
WARM_TARGET_S = 180


def seen_folder(image_dir: Path, split: int, splits: int, folder: Path) -> list[tuple[str, int]]:
    """Symbolic links to the photos compare may see under folder; returns the held-back (path, label)."""
    images = list_images(image_dir, 0, 0)
    held_back = []
    for path, label in images.examples("training"):
        percentage = hash_percentage(Path(path).name)
        if 100 * split / splits <= percentage < 100 * (split + 1) / splits or (split == splits - 1 and percentage >= 100):
            held_back.append((path, label))
        else:
            link = folder / path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(images.image_dir / path)
    return held_back


def cached_bottlenecks(bottleneck_dir: Path, architecture: str, weights: Path, paths: list[Path]) -> np.ndarray:
    """The vectors compare computed: every photo is in the cache after its first run."""
    cache = BottleneckCache.for_backbone(bottleneck_dir, get_backbone(architecture), weights_id(str(weights), 0))
    vectors = [cache.read(key) for key in file_keys(paths)]
    if any(vector is None for vector in vectors):
        sys.exit(f"{architecture}: some bottlenecks are not cached; run compare on every photo first")
    return np.stack(vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", type=Path, default=SHARED / "flowers")
    parser.add_argument("--splits", type=int, default=5, help="held-back splits: each photo is held back once")
    parser.add_argument("--repeats", type=int, default=3, help="warm runs of the whole command")
    parser.add_argument("--bottleneck_dir", type=Path, default=None, help="cache to reuse (default: a temporary one)")
    arguments = parser.parse_args()
    if not arguments.image_dir.is_dir():
        sys.exit(f"{arguments.image_dir} not found: pass --image_dir")
    names, weights = list(BACKBONES), [str(path) for path in BACKBONES.values()]
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        bottleneck_dir = arguments.bottleneck_dir or work / "cache"
        command = [sys.executable, "-m", "trainer.cli", "compare", "--image_dir", str(arguments.image_dir),
                   "--architectures", ",".join(names), "--weights", ",".join(weights),
                   "--bottleneck_dir", str(bottleneck_dir), "--report_dir", str(work / "all")]
        started = time.perf_counter()
        first = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        first_s = time.perf_counter() - started
        if first.returncode:
            sys.exit(first.stderr)
        warm = []
        for _ in range(arguments.repeats):
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
            warm.append(time.perf_counter() - started)

        image_dir = list_images(arguments.image_dir, 0, 0).image_dir
        compare_accuracy = {name: [] for name in names}
        held_back_correct = {name: 0 for name in names}
        held_back_count = 0
        split_lines = []
        for split in range(arguments.splits):
            seen_dir = work / f"seen{split}"
            held_back = seen_folder(arguments.image_dir, split, arguments.splits, seen_dir)
            with contextlib.redirect_stderr(io.StringIO()):
                result = compare(CompareOptions(seen_dir, names, weights, bottleneck_dir, work / f"report{split}"))
            images = list_images(seen_dir, 0, 0)
            seen = images.examples("training")
            held_labels = np.array([label for _, label in held_back])
            held_back_count += len(held_back)
            for name, weight in zip(names, weights):
                seen_x = cached_bottlenecks(bottleneck_dir, name, Path(weight), [seen_dir / path for path, _ in seen])
                held_x = cached_bottlenecks(bottleneck_dir, name, Path(weight), [image_dir / path for path, _ in held_back])
                empty = np.zeros((0, seen_x.shape[1]), np.float32)
                head, _ = train_head(TrainOptions(image_dir=image_dir), seen_x, np.array([label for _, label in seen]),
                                     empty, np.zeros(0, np.int64), len(images.labels), None)
                held_back_correct[name] += int(np.sum(head.logits(held_x).argmax(1) == held_labels))
            for row in result.figures:
                compare_accuracy[row.architecture].append(row.accuracy)
            ranking = [row.architecture for row in sorted(result.figures, key=lambda row: -row.accuracy)]
            split_lines.append(f"split {split + 1}: {len(seen)} seen, {len(held_back)} held back; compare ranks "
                               f"{' > '.join(ranking)}; recommends {result.recommended.architecture}")

    print(f"compare on {arguments.image_dir}, {arguments.splits} held-back splits (each photo held back once):")
    print("\n".join(split_lines))
    held_back_accuracy = {name: held_back_correct[name] / held_back_count for name in names}
    print(f"{'backbone':<24}{'compare: k-fold accuracy':>26}{'held-back accuracy':>20}")
    for name in names:
        print(f"{name:<24}{statistics.mean(compare_accuracy[name]):>26.1%}{held_back_accuracy[name]:>20.1%}")
    by_compare = sorted(names, key=lambda name: -statistics.mean(compare_accuracy[name]))
    by_held_back = sorted(names, key=lambda name: -held_back_accuracy[name])
    print(f"ranking by compare:   {' > '.join(by_compare)}")
    print(f"ranking on held back: {' > '.join(by_held_back)}  ({'same' if by_compare == by_held_back else 'DIFFERENT'})")
    print(f"`retrain-edge compare`, all {held_back_count} photos, {len(names)} backbones: first run {first_s:.1f} s; "
          f"warm median {statistics.median(warm):.1f} s (min {min(warm):.1f}, {len(warm)} runs; target "
          f"<= {WARM_TARGET_S} s); cost column: {result.device_cost.name}")


if __name__ == "__main__":
    main()
