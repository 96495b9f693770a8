"""Benchmark distortions: cost per distorted sample, 4000-step wall time, and test accuracy.

Measures in one run, against the bare batched forward pass (uint8 pixels at the input size, as
the plain bottleneck pass runs it): the cost per sample of the cached-variant pass (decode once,
distort and forward in batches, write the cache) and of the classic per-step mode (a fresh
distorted batch through the backbone at every step); then the wall time of whole `train` runs
without distortions, with cached variants (cold and warm cache) and per step, whose 4000-step
time is extrapolated from --per_step_steps steps; and each run's test accuracy.

    python scripts/bench_distortions.py [--image_dir ../shared/data/flowers] [--per_step_steps 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from edge.image import load_rgb  # noqa: E402
from trainer.backbones import build_backbone, get_backbone, weights_id  # noqa: E402
from trainer.bottlenecks import FORWARD_BATCH_SIZE, BottleneckCache, file_keys, make_forward  # noqa: E402
from trainer.dataset import list_images  # noqa: E402
from trainer.distortions import (  # noqa: E402
    DistortionOptions, distorted_training_inputs, make_distorted_forward, variant_bottlenecks, variant_cache,
    working_size,
)
from trainer.train import TrainOptions, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ARCHITECTURE = "mobilenet_v2_0.5_224"
WEIGHTS = SHARED_DATA / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
SETTINGS = dict(random_crop=10, random_scale=10, random_brightness=10, flip_left_right=True)
STEPS = 4000
TRAIN_BATCH_SIZE = 100  # the classic default: images per training step
VARIANT_PASS_IMAGES = 16  # images per timed variant pass (x variants samples)


def seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def sample_costs(model, training_paths, bottleneck_dir, seed, variants, repeats) -> list[tuple[str, float, float]]:
    """(name, median ms per sample, median ratio to its bare forward pass) rows.

    Each round times every measurement once, back to back, and a ratio is taken within a round,
    so load from other processes on a shared machine shifts both sides of a ratio alike.
    """
    backbone = get_backbone(ARCHITECTURE)
    options = DistortionOptions(**SETTINGS, distortion_variants=variants)
    pixels = np.stack([load_rgb(path, backbone.input_size) for path in training_paths[:TRAIN_BATCH_SIZE]])
    forward = make_forward(model)
    distorted_forward = make_distorted_forward(model, working_size(backbone.input_size, options))
    plain_cache = BottleneckCache(Path(bottleneck_dir) / "bench-variant-pass", backbone.bottleneck_size)
    subset = training_paths[:VARIANT_PASS_IMAGES]
    sample, _ = distorted_training_inputs(DistortionOptions(**SETTINGS, distortion_variants=0), training_paths,
                                          file_keys(training_paths), model, plain_cache, seed)
    rng = np.random.default_rng(seed)

    def variant_pass(pass_seed):
        # A fresh seed per pass: a cold cache each time, as a first run sees it.
        cache = variant_cache(plain_cache, options, pass_seed)
        variant_bottlenecks(subset, file_keys(subset), options, pass_seed, backbone.input_size, distorted_forward, cache)

    measurements = {
        "bare small": (lambda _: forward(pixels[:FORWARD_BATCH_SIZE]), FORWARD_BATCH_SIZE),
        "variant pass": (variant_pass, len(subset) * variants),
        "bare large": (lambda _: forward(pixels), TRAIN_BATCH_SIZE),
        "per step": (lambda _: sample(rng.integers(len(training_paths), size=TRAIN_BATCH_SIZE)), TRAIN_BATCH_SIZE),
    }
    per_sample = {name: [] for name in measurements}
    for round_number in range(repeats + 1):
        for name, (function, samples) in measurements.items():
            elapsed = seconds(lambda: function(round_number)) / samples
            if round_number:  # round 0 warms up: graph tracing, first allocations
                per_sample[name].append(elapsed)
    ratio = {name: statistics.median(np.divide(per_sample[name], per_sample[base]))
             for name, base in (("variant pass", "bare small"), ("per step", "bare large"))}
    median_ms = {name: statistics.median(times) * 1e3 for name, times in per_sample.items()}
    return [
        (f"bare forward, batch {FORWARD_BATCH_SIZE}", median_ms["bare small"], 1.0),
        (f"cached-variant pass ({variants} variants, decode+distort+forward+cache)", median_ms["variant pass"],
         ratio["variant pass"]),
        (f"bare forward, batch {TRAIN_BATCH_SIZE}", median_ms["bare large"], 1.0),
        (f"per-step distort+forward, batch {TRAIN_BATCH_SIZE}", median_ms["per step"], ratio["per step"]),
    ]


def timed_train(options: TrainOptions) -> tuple[float, dict]:
    started = time.perf_counter()
    result = train(options)
    return time.perf_counter() - started, result.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", type=Path, default=SHARED_DATA / "flowers")
    parser.add_argument("--weights", default=str(WEIGHTS))
    parser.add_argument("--per_step_steps", type=int, default=300, help="steps actually run in per-step mode")
    parser.add_argument("--distortion_variants", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per cost measurement")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_distortions_"))
    bottleneck_dir = work / "bottlenecks"  # cold: every cache starts empty
    images = list_images(arguments.image_dir)
    training_paths = [images.image_dir / path for path, _ in images.examples("training")]
    backbone = get_backbone(ARCHITECTURE)
    weights_id(arguments.weights, arguments.seed)  # a missing weights file fails here, before any work
    model = build_backbone(backbone, arguments.weights, arguments.seed)
    costs = sample_costs(model, training_paths, bottleneck_dir, arguments.seed, arguments.distortion_variants,
                         arguments.repeats)

    def options(name, steps, variants=None):
        distortions = DistortionOptions() if variants is None else DistortionOptions(
            **SETTINGS, distortion_variants=variants)
        return TrainOptions(image_dir=arguments.image_dir, output_dir=work / name, architecture=ARCHITECTURE,
                            weights=arguments.weights, bottleneck_dir=bottleneck_dir, how_many_training_steps=steps,
                            train_batch_size=TRAIN_BATCH_SIZE, seed=arguments.seed, distortions=distortions)

    short = arguments.per_step_steps
    variants = arguments.distortion_variants
    runs = {
        "no distortions (cold plain cache)": timed_train(options("plain", STEPS)),
        "cached variants (cold variant cache)": timed_train(options("variants", STEPS, variants)),
        "cached variants (warm, second run)": timed_train(options("variants-warm", STEPS, variants)),
        f"no distortions, {short} steps": timed_train(options("plain-short", short)),
        f"cached variants, {short} steps": timed_train(options("variants-short", short, variants)),
        f"per step, {short} steps": timed_train(options("per-step", short, 0)),
    }
    per_step_wall, per_step_run = runs[f"per step, {short} steps"]
    training_seconds = per_step_run["timings"]["training_s"]
    extrapolated = per_step_wall - training_seconds + training_seconds * STEPS / short

    print(f"\n{ARCHITECTURE}, {len(training_paths)} training images of {arguments.image_dir}, "
          f"crop/scale/brightness 10, flip, {variants} variants, median of {arguments.repeats}")
    print(f"{'cost per distorted sample (ratio: median of per-round ratios)':<66} {'ms/sample':>10} {'x bare':>7}")
    for name, milliseconds, ratio in costs:
        print(f"{name:<66} {milliseconds:>10.1f} {ratio:>7.2f}")

    variants_wall = runs["cached variants (cold variant cache)"][0]
    print(f"\n{'train run (wall time includes backbone build and model save)':<66} {'wall s':>10} {'test acc':>9}")
    for name, (wall, run) in runs.items():
        accuracy = run["accuracy"]["test"]
        print(f"{name:<66} {wall:>10.1f} {accuracy:>9.1%}")
    print(f"{f'per step, {STEPS} steps (extrapolated from {short})':<66} {extrapolated:>10.1f} {'':>9}")
    print(f"\nper-step / cached-variant wall time for {STEPS} steps: {extrapolated / variants_wall:.1f}x")
    print(f"outputs and caches in {work}")


if __name__ == "__main__":
    main()
