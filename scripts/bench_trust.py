"""Benchmark trust, by k-fold cross-validation: accuracy, calibration, regularisation, distortions, int8.

    python scripts/bench_trust.py [--image_dir ../shared/data/flowers] [--folds 5] [--seeds 0,1,2]
        [--architecture mobilenet_v2_0.5_224] [--weights ../shared/data/weights/...0.5_224_no_top.h5]
        [--steps 4000] [--float_layers default,10,15] [--no_distortions] [--no_tflite]

With no photos held back beyond the dataset, each image is measured once, by the model that did
not see it. Fold f holds the images whose classic split hash (trainer.dataset.hash_percentage)
falls in [100 f / k, 100 (f + 1) / k); the next 10% of the hash range is that fold's validation
split (early stopping, the old validation temperature) and the rest its training split (the head,
int8 calibration). The head is trained as `retrain-edge train` trains it (train_head; the
temperature and --choose_regularisation by cross_validate on training + validation, in train's own
inner folds; an early-stopped head's temperature by calibration_for_kept_step, from fold heads
trained for its kept step) on the cached bottlenecks, once per seed; with seed 0 it is put on the
backbone (build_classifier) and converted (convert_model) to each TFLite mode, which runs the
held-out fold through the edge runtime (edge.model.load_model). Figures are medians over folds
(and seeds); latency and size ratios are taken within a fold against its full-int8 model.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

import numpy as np  # noqa: E402

from edge.image import load_rgb  # noqa: E402
from edge.model import load_model  # noqa: E402
from trainer.backbones import INPUT_MEAN, INPUT_STD, build_backbone, get_backbone, weights_id  # noqa: E402
from trainer.bottlenecks import BottleneckCache, file_keys, image_bottlenecks, make_forward  # noqa: E402
from trainer.calibration import (  # noqa: E402
    THRESHOLDS, expected_calibration_error, fit_temperature, negative_log_likelihood, precision_coverage, softmax,
)
from trainer.convert import (  # noqa: E402
    DEFAULT_CALIBRATION_IMAGES, calibration_paths, convert_model, selectively_quantized, tflite_converter,
)
from trainer.dataset import hash_percentage, list_images  # noqa: E402
from trainer.distortions import DistortionOptions, distorted_training_inputs  # noqa: E402
from trainer.train import (  # noqa: E402
    TrainOptions, build_classifier, calibration_for_kept_step, cross_validate, train_head,
)

VALIDATION_PERCENTAGE = 10  # of the hash range, after the held-out fold: the classic default
# The classic distortion flags the issue measured (crop, scale, brightness 10%, flip).
DISTORTIONS = dict(random_crop=10, random_scale=10, random_brightness=10, flip_left_right=True)
LATENCY_THREADS = 1  # one interpreter thread: latency ratios least disturbed by a shared machine
FLOAT_MODES = ("float32", "dynamic", "float16")


class NoSummaries:
    """train_head's TensorBoard writer, discarded."""

    def scalars(self, *_, **__):
        pass

    def histograms(self, *_):
        pass


def fold_sets(names: list[str], fold: int, folds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks (training, validation, held out) over `names`, by the classic hash."""
    percentage = np.array([hash_percentage(name) for name in names])
    start = 100 * fold / folds
    held_out = (percentage >= start) & (percentage < 100 * (fold + 1) / folds)
    if fold == folds - 1:
        held_out |= percentage >= 100  # the hash reaches 100.0 exactly for one key in 2^27
    validation_start = 100 * (fold + 1) / folds % 100
    validation = ~held_out & (percentage >= validation_start) & (percentage < validation_start + VALIDATION_PERCENTAGE)
    return ~held_out & ~validation, validation, held_out


def trained_head(options: TrainOptions, train_x, train_y, validation_x, validation_y, class_count,
                 training_inputs=None):
    with contextlib.redirect_stderr(io.StringIO()):
        head, history = train_head(options, train_x, train_y, validation_x, validation_y, class_count, NoSummaries(),
                                   training_inputs=training_inputs)
    kept = next((record["step"] for record in history if record.get("kept")), history[-1]["step"])
    return head, kept


def tflite_scores(tflite_bytes: bytes, labels: list[str], pixels: np.ndarray, folder: Path) -> tuple[np.ndarray, float]:
    """(n, classes) scores of the held-out pixels through the edge runtime, and median ms per image."""
    path = folder / "model.tflite"
    path.write_bytes(tflite_bytes)
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    model = load_model(path, labels_path=folder / "labels.txt", num_threads=LATENCY_THREADS)
    scores, latencies = [], []
    model.scores(pixels[0])
    for image in pixels:
        started = time.perf_counter()
        scores.append(model.scores(image))
        latencies.append(time.perf_counter() - started)
    return np.stack(scores), float(np.median(latencies)) * 1000


def head_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags bench_trust shares with bench_calibration and bench_int8: photos, backbone, folds, steps, seeds, cache."""
    parser.add_argument("--image_dir", type=Path, default=SHARED / "flowers")
    parser.add_argument("--architecture", default="mobilenet_v2_0.5_224")
    parser.add_argument("--weights", default=str(SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4000, help="training steps per head")
    parser.add_argument("--seeds", default="0,1,2", help="head seeds: each fold is trained once per seed")
    parser.add_argument("--bottleneck_dir", type=Path, default=None, help="cache to reuse (default: a temporary one)")


def print_rows(rows: dict[str, list[float]]) -> None:
    """One line per row: its median (min..max); a paired row also says in how many pairs it is better and worse."""
    width = max(map(len, rows)) + 2
    for name, values in rows.items():
        if name.endswith("(paired)"):
            better = sum(value > 0 for value in values) if "accuracy" in name else sum(value < 0 for value in values)
            worse = sum(value < 0 for value in values) if "accuracy" in name else sum(value > 0 for value in values)
            text = (f"{statistics.median(values):+.3g}  ({min(values):+.3g}..{max(values):+.3g}); better in {better}, "
                    f"worse in {worse} of {len(values)}")
        elif name.endswith(("accuracy", "agreement with Keras", "changed")) or "ECE" in name:
            text = f"{statistics.median(values):.1%}  ({min(values):.1%}..{max(values):.1%})"
        else:
            text = f"{statistics.median(values):.3g}  ({min(values):.3g}..{max(values):.3g})"
        print(f"{name:<{width}}{text}")


def photos(image_dir: Path):
    """(the ImageList, every photo's path, its label index): all of them, since the folds hold out."""
    images = list_images(image_dir, 0, 0)
    examples = images.examples("training")
    return images, [images.image_dir / path for path, _ in examples], np.array([label for _, label in examples])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    head_arguments(parser)
    parser.add_argument("--float_layers", default="default,10,15",
                        help="selective int8 variants: layers kept in float, or default (convert's choice by Pi 5 cost)")
    parser.add_argument("--no_distortions", action="store_true", help="skip the distortion comparison")
    parser.add_argument("--no_tflite", action="store_true", help="skip the TFLite conversions (head figures only)")
    arguments = parser.parse_args()
    if not arguments.image_dir.is_dir():
        sys.exit(f"{arguments.image_dir} not found: pass --image_dir and --weights")
    float_layer_counts = [None if count == "default" else int(count) for count in arguments.float_layers.split(",")]
    seeds = [int(seed) for seed in arguments.seeds.split(",")]
    started = time.perf_counter()

    images, paths, labels = photos(arguments.image_dir)
    class_count = len(images.labels)
    backbone = get_backbone(arguments.architecture)
    backbone_model = build_backbone(backbone, arguments.weights, 0)
    with tempfile.TemporaryDirectory() as work:
        cache = BottleneckCache.for_backbone(arguments.bottleneck_dir or Path(work) / "cache", backbone,
                                             weights_id(arguments.weights, 0))
        keys = file_keys(paths)
        bottlenecks = image_bottlenecks(paths, keys, backbone.input_size, make_forward(backbone_model), cache)
        pixels = np.stack([load_rgb(path, backbone.input_size) for path in paths])
        variants = None
        if not arguments.no_distortions:
            variants, _ = distorted_training_inputs(DistortionOptions(**DISTORTIONS), paths, keys, backbone_model,
                                                    cache, seed=0)

        rows: dict[str, list[float]] = {}

        def record(name: str, value: float) -> None:
            rows.setdefault(name, []).append(value)

        def record_paired(name: str, changed: tuple[float, float], baseline: tuple[float, float]) -> None:
            """(accuracy, NLL) of a change and its baseline on the same fold and seed."""
            record(f"{name}, accuracy points (paired)", 100 * (changed[0] - baseline[0]))
            record(f"{name}, NLL (paired)", changed[1] - baseline[1])

        thresholds = {threshold: [] for threshold in THRESHOLDS}
        for fold in range(arguments.folds):
            train_mask, validation_mask, held_out = fold_sets([path.name for path in paths], fold, arguments.folds)
            train_x, train_y = bottlenecks[train_mask], labels[train_mask]
            validation_x, validation_y = bottlenecks[validation_mask], labels[validation_mask]
            test_x, test_y = bottlenecks[held_out], labels[held_out]
            print(f"fold {fold + 1}/{arguments.folds}: training {len(train_y)}, validation {len(validation_y)}, "
                  f"held out {len(test_y)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

            def held_out_accuracy(head) -> float:
                return float(np.mean(head.probabilities(test_x).argmax(1) == test_y))

            names = [path.name for path, keep in zip(paths, train_mask | validation_mask) if keep]
            folded_x = bottlenecks[train_mask | validation_mask]
            folded_y = labels[train_mask | validation_mask]
            for seed in seeds:
                options = TrainOptions(image_dir=Path("."), how_many_training_steps=arguments.steps, seed=seed)
                _, calibration = cross_validate(options, folded_x, folded_y, names, class_count)
                heads = {}
                for name, early_stopping in (("last step", False), ("lowest validation CE", True)):
                    stopped_options = replace(options, early_stopping=early_stopping)
                    head, kept_step = trained_head(stopped_options, train_x, train_y, validation_x, validation_y,
                                                   class_count)
                    # As `train` does: an early-stopped head gets the temperature of fold heads
                    # trained for as many steps as it was.
                    kept_calibration = calibration_for_kept_step(stopped_options, calibration, kept_step, folded_x,
                                                                 folded_y, names, class_count)
                    record(f"head: {name}, accuracy", held_out_accuracy(head))
                    record(f"head: {name}, step", kept_step)
                    logits = head.logits(test_x)
                    for temperature_name, temperature in (
                            ("no temperature", 1.0),
                            ("validation temperature", fit_temperature(head.logits(validation_x), validation_y)),
                            ("out-of-fold temperature", kept_calibration["temperature"])):
                        record(f"head: {name}, ECE, {temperature_name}",
                               expected_calibration_error(softmax(logits / temperature), test_y))
                        record(f"head: {name}, NLL, {temperature_name}",
                               negative_log_likelihood(logits, test_y, temperature))
                    record(f"head: {name}, largest weight", float(np.abs(head.weights).max()))
                    heads[name] = head
                record("out-of-fold ECE at training (training + validation)", calibration["out_of_fold_ece"]["after"])
                record("out-of-fold temperature", calibration["temperature"])
                default_head = heads["last step"]
                chosen, chosen_calibration = cross_validate(replace(options, choose_regularisation=True), folded_x,
                                                            folded_y, names, class_count)
                regularised = trained_head(replace(options, **chosen), train_x, train_y, validation_x, validation_y,
                                           class_count)[0]
                figures = {}
                for name, head, temperature in (("default", default_head, calibration["temperature"]),
                                                ("--choose_regularisation", regularised,
                                                 chosen_calibration["temperature"])):
                    figures[name] = (held_out_accuracy(head),
                                     negative_log_likelihood(head.logits(test_x), test_y, temperature))
                    record(f"regularisation: {name}, accuracy", figures[name][0])
                    record(f"regularisation: {name}, NLL (calibrated)", figures[name][1])
                record_paired("regularisation: chosen - default", figures["--choose_regularisation"], figures["default"])
                for key in chosen:
                    record(f"regularisation: chosen {key}", chosen[key])
                if variants is not None:
                    train_indices = np.flatnonzero(train_mask)
                    distorted_head, _ = trained_head(options, train_x, train_y, validation_x, validation_y, class_count,
                                                     training_inputs=lambda batch: variants(train_indices[batch]))
                    record("distortions: off, accuracy", held_out_accuracy(default_head))
                    record("distortions: on (10 cached variants), accuracy", held_out_accuracy(distorted_head))
                    off = (held_out_accuracy(default_head),
                           negative_log_likelihood(default_head.logits(test_x), test_y, calibration["temperature"]))
                    on = (held_out_accuracy(distorted_head),
                          negative_log_likelihood(distorted_head.logits(test_x), test_y, calibration["temperature"]))
                    record("distortions: off, NLL (out-of-fold temperature)", off[1])
                    record("distortions: on, NLL (out-of-fold temperature)", on[1])
                    record_paired("distortions: on - off", on, off)
                if seed == seeds[0]:
                    # The rest measures what `train` delivers by default, once per fold.
                    head = default_head.with_temperature(calibration["temperature"])
                    keras_scores = head.probabilities(test_x)
                    for row in precision_coverage(keras_scores, test_y):
                        thresholds[row.threshold].append((row.precision, row.coverage))
            if arguments.no_tflite:
                continue

            keras_top1 = keras_scores.argmax(1)
            record("Keras, accuracy", float(np.mean(keras_top1 == test_y)))
            model = build_classifier(backbone_model, head)
            training_files = {label: [path.name for path, keep, y in zip(paths, train_mask, labels) if keep and y == index]
                              for index, label in enumerate(images.labels)}
            name_to_index = {path.name: index for index, path in enumerate(paths)}
            calibration_indices = [name_to_index[name] for name in
                                   calibration_paths(training_files, DEFAULT_CALIBRATION_IMAGES)]
            calibration = (pixels[calibration_indices].astype(np.float32) - INPUT_MEAN) / INPUT_STD
            sizes, latencies = {}, {}
            models = {mode: convert_model(model, mode) for mode in FLOAT_MODES}
            models["int8"] = convert_model(model, "int8", calibration)
            selective_counts = [count for count in float_layer_counts if count != 0]
            with tflite_converter(model, "int8", calibration) as converter:
                selective = selectively_quantized(converter, calibration, selective_counts)
            models.update((f"int8, {count} layers float" if count else "int8, default (Pi 5 cost budget)", tflite_bytes)
                          for count, (tflite_bytes, _) in zip(selective_counts, selective))
            for name, tflite_bytes in models.items():
                scores, latencies[name] = tflite_scores(tflite_bytes, images.labels, pixels[held_out], Path(work))
                sizes[name] = len(tflite_bytes)
                record(f"{name}, accuracy", float(np.mean(scores.argmax(1) == test_y)))
                record(f"{name}, top-1 agreement with Keras", float(np.mean(scores.argmax(1) == keras_top1)))
            for name in sizes:
                record(f"{name}, size / float32", sizes[name] / sizes["float32"])
                if "int8" in sizes:
                    record(f"{name}, latency / int8", latencies[name] / latencies["int8"])
                record(f"{name}, latency ms ({LATENCY_THREADS} thread)", latencies[name])

    print(f"\ntrust: {arguments.architecture} on {arguments.image_dir} ({len(paths)} images), {arguments.folds}-fold "
          f"cross-validation by the classic hash, {arguments.steps} steps, seeds {arguments.seeds}; medians over folds "
          f"and seeds (min..max); {time.perf_counter() - started:.0f} s")
    print_rows(rows)
    print("\nprecision/coverage of the calibrated Keras head on held-out folds (medians over folds):")
    print("--threshold  answers kept that are right  images kept")
    for threshold, pairs in thresholds.items():
        precisions = [precision for precision, _ in pairs if not np.isnan(precision)]
        precision = f"{statistics.median(precisions):.1%}" if precisions else "n/a"
        print(f"{threshold:>11g}  {precision:>27}  {statistics.median(c for _, c in pairs):>11.1%}")


if __name__ == "__main__":
    main()
