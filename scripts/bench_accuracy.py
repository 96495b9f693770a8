"""Benchmark: test accuracy of the default training against the classic recipe, same bottlenecks.

    python scripts/bench_accuracy.py [--image_dir ../shared/data/flowers]
        [--architecture mobilenet_v2_0.5_224] [--weights ../shared/data/weights/...0.5_224_no_top.h5]

Runs `retrain-edge train` once (which caches the bottlenecks), then trains both heads on the
same cached training vectors for several seeds: the default (centred, scaled bottlenecks) and the
classic recipe (raw bottlenecks; plain SGD at 0.01, 4000 steps of 100, class-balanced sampling
with replacement). Nothing is chosen on the test split; it is only reported.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

import numpy as np  # noqa: E402

from trainer.bottlenecks import BottleneckCache, file_key  # noqa: E402
from trainer.train import TrainOptions, train, train_head  # noqa: E402


class NoSummaries:
    """train_head's TensorBoard writer, discarded: only the accuracies matter here."""

    def scalars(self, *_, **__):
        pass

    def histograms(self, *_):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", type=Path, default=SHARED / "flowers")
    parser.add_argument("--architecture", default="mobilenet_v2_0.5_224")
    parser.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"))
    parser.add_argument("--seeds", type=int, default=5)
    arguments = parser.parse_args()
    if not arguments.image_dir.is_dir():
        sys.exit(f"{arguments.image_dir} not found: pass --image_dir and --weights")

    with tempfile.TemporaryDirectory() as work:
        options = TrainOptions(image_dir=arguments.image_dir, output_dir=Path(work) / "out",
                               architecture=arguments.architecture, weights=arguments.weights,
                               bottleneck_dir=Path(work) / "cache")
        run = train(options).run
        cache = BottleneckCache(next(Path(work, "cache").iterdir()), run["bottleneck_size"])
        image_dir = Path(run["image_dir"])

        def arrays(set_name: str) -> tuple[np.ndarray, np.ndarray]:
            files = run["split"]["files"][set_name]
            pairs = [(path, index) for index, label in enumerate(run["labels"]) for path in files[label]]
            vectors = np.stack([cache.read(file_key(image_dir / path)) for path, _ in pairs])
            return vectors, np.array([index for _, index in pairs])

        (train_x, train_y), (validation_x, validation_y), (test_x, test_y) = map(arrays, ("training", "validation", "testing"))
        results = {"default (centred)": [], "classic (raw SGD)": []}
        for seed in range(arguments.seeds):
            for name, centre in (("default (centred)", True), ("classic (raw SGD)", False)):
                seeded = TrainOptions(image_dir=arguments.image_dir, seed=seed)
                with contextlib.redirect_stderr(io.StringIO()):
                    head, _ = train_head(seeded, train_x, train_y, validation_x, validation_y, len(run["labels"]),
                                         NoSummaries(), centre=centre)
                validation = float(np.mean(head.probabilities(validation_x).argmax(1) == validation_y))
                test = float(np.mean(head.probabilities(test_x).argmax(1) == test_y))
                results[name].append((validation, test))

    print(f"\naccuracy: {arguments.architecture} on {arguments.image_dir} (train {len(train_y)}, "
          f"validation {len(validation_y)}, test {len(test_y)}); 4000 steps of 100; {arguments.seeds} seeds")
    print(f"{'head':<20}{'validation (median)':>21}{'test (median)':>15}{'test min..max':>16}")
    for name, pairs in results.items():
        tests = [test for _, test in pairs]
        print(f"{name:<20}{statistics.median(v for v, _ in pairs):>21.1%}{statistics.median(tests):>15.1%}"
              f"{f'{min(tests):.1%}..{max(tests):.1%}':>16}")


if __name__ == "__main__":
    main()
