"""Benchmark calibration: the noise floor of the ECE, and which calibrator to fold into the final layer.

    python scripts/bench_calibration.py [--image_dir ../shared/data/flowers] [--folds 5] [--seeds 0,1,2]
        [--architecture mobilenet_v2_0.5_224] [--weights ../shared/data/weights/...0.5_224_no_top.h5]
        [--steps 4000] [--repeats 3] [--draws 2000] [--no_held_out] [--bottleneck_dir DIR]

Part 1, every photo (as `retrain-edge compare` measures): out-of-fold logits of k heads, the
temperature fitted on them, and their ECE against its noise floor, the ECE of a perfectly
calibrated model with the same scores on as many photos (labels drawn from the calibrated scores
themselves, --draws times; trainer.calibration.calibration_error_floor).

Part 2, photos neither the heads nor the calibrator saw (bench_trust's held-out folds: fold f holds
the images whose classic split hash falls in [100 f / k, 100 (f + 1) / k), the next 10% of the
hash range is its validation split, the rest its training split). The final head trains on the
training split as `train` trains it; each calibrator is fitted on the out-of-fold logits of the
training + validation images (inner folds: the split hash bucket modulo k, as `train`), then
judged on the held-out fold: temperature alone (today), temperature plus a per-class bias at a
few penalties, and either with the inner folds repeated under --repeats salted assignments (the
out-of-fold logits of all of them pooled for the fit). Figures are medians over folds and seeds;
the paired rows are the change against today's temperature on the same fold and seed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np  # noqa: E402

from bench_trust import fold_sets, head_arguments, print_rows, trained_head  # noqa: E402
from trainer.backbones import build_backbone, get_backbone, weights_id  # noqa: E402
from trainer.bottlenecks import BottleneckCache, file_keys, image_bottlenecks, make_forward  # noqa: E402
from trainer.calibration import (  # noqa: E402
    CALIBRATION_BINS, MAX_TEMPERATURE, calibration_error_floor, expected_calibration_error, fit_temperature,
    negative_log_likelihood, softmax,
)
from trainer.crossval import hash_folds, out_of_fold_logits  # noqa: E402
from trainer.dataset import hash_bucket, list_images  # noqa: E402
from trainer.train import TrainOptions, grid_heads, regularisation_grid  # noqa: E402

# L2 penalties on the per-class offsets of fit_temperature_and_biases, in nats per unit squared offset.
BIAS_PENALTIES = (0.0, 0.01, 0.1)
BIAS_NEWTON_STEPS = 50  # it converges in under 10 from the temperature's answer
TARGET = 0.03  # issue 18's out-of-fold ECE after calibration


def fit_temperature_and_biases(logits: np.ndarray, labels: np.ndarray, bias_penalty: float) -> tuple[float, np.ndarray]:
    """The temperature T and per-class offsets b of lowest penalised NLL of softmax(logits / T + b).

    logits (n, classes), labels (n,) -> (T, b (classes,)). Folded into the final layer as
    (weights / T, biases / T + b). Unlike T alone, b can change top-1 answers. The NLL plus
    bias_penalty / 2 * |b|^2 is convex in (1 / T, b): Newton's method with a backtracking line
    search finds its minimum. b is returned with mean 0: softmax ignores a constant added to every logit.
    """
    logits = np.asarray(logits, np.float64)
    count, classes = logits.shape
    if not count:
        return 1.0, np.zeros(classes)
    one_hot = np.eye(classes)[labels]
    # features[i, c] = d(logit i, c) / d(1 / T, b): (n, classes, 1 + classes)
    features = np.concatenate([logits[:, :, None], np.broadcast_to(np.eye(classes), (count, classes, classes))], axis=2)
    penalty = np.diag([0.0] + [bias_penalty] * classes)

    def objective(parameters: np.ndarray) -> float:
        scaled = features @ parameters
        shifted = scaled - scaled.max(axis=1, keepdims=True)
        nll = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(count), labels])
        return float(nll + parameters @ penalty @ parameters / 2)

    parameters = np.zeros(1 + classes)
    parameters[0] = 1 / fit_temperature(logits, labels)
    value = objective(parameters)
    for _ in range(BIAS_NEWTON_STEPS):
        probabilities = softmax(features @ parameters)
        mean_feature = np.einsum("nc,nck->nk", probabilities, features)
        gradient = np.einsum("nc,nck->k", probabilities - one_hot, features) / count + penalty @ parameters
        hessian = (np.einsum("nc,nck,ncl->kl", probabilities, features, features)
                   - mean_feature.T @ mean_feature) / count + penalty
        # b's constant is free without a penalty: lstsq takes the step of least norm.
        step = np.linalg.lstsq(hessian, -gradient, rcond=None)[0]
        shrink = 1.0
        while shrink > 1e-6 and objective(parameters + shrink * step) > value:
            shrink /= 2
        if shrink <= 1e-6:
            break
        parameters += shrink * step
        previous, value = value, objective(parameters)
        if previous - value < 1e-12:
            break
    inverse_temperature = float(np.clip(parameters[0], 1 / MAX_TEMPERATURE, MAX_TEMPERATURE))
    biases = parameters[1:] - parameters[1:].mean()
    return 1 / inverse_temperature, biases


def salted_folds(names: list[str], folds: int, salt: int) -> np.ndarray:
    """Fold per name: `train`'s own (hash_folds) for salt 0, else the split hash of "salt/name" modulo
    folds, which keeps a burst (`_nohash_` names) in one fold as hash_folds does."""
    if salt == 0:
        return hash_folds(names, folds)
    return np.array([hash_bucket(f"{salt}/{name}") % folds for name in names], np.int64)


def pooled_out_of_fold(options: TrainOptions, bottlenecks, labels, names, class_count, repeats):
    """(repeats, n, classes) out-of-fold logits, one fold assignment per repeat."""
    fit = grid_heads(options, regularisation_grid(options), class_count)
    return np.stack([out_of_fold_logits(fit, bottlenecks, labels, salted_folds(names, options.folds, salt),
                                        class_count)[0] for salt in range(repeats)])


def calibrators(pooled: np.ndarray, labels: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
    """name -> (temperature, per-class offsets), each fitted on one or all of the pooled assignments."""
    class_count = pooled.shape[2]
    zero = np.zeros(class_count)
    fitted = {"none": (1.0, zero)}
    for name, logits, fit_labels in (("", pooled[0], labels),
                                     (f", {len(pooled)} assignments", pooled.reshape(-1, class_count),
                                      np.tile(labels, len(pooled)))):
        fitted[f"temperature{name}"] = (fit_temperature(logits, fit_labels), zero)
        for penalty in BIAS_PENALTIES:
            fitted[f"temperature + bias (penalty {penalty:g}){name}"] = fit_temperature_and_biases(
                logits, fit_labels, penalty)
    return fitted


def equal_mass_error(top_scores: np.ndarray, correct: np.ndarray, bins: int) -> np.ndarray:
    """ECE with `bins` bins of equal image counts (by sorted top score): top_scores (n,), correct
    (draws, n) or (n,) -> (draws,)."""
    correct = np.atleast_2d(correct)
    error = np.zeros(len(correct))
    for members in np.array_split(np.argsort(top_scores, kind="stable"), bins):
        error += np.abs((correct[:, members] - top_scores[members]).sum(axis=1)) / len(top_scores)
    return error


def report_floor(name: str, observed: float, floor: np.ndarray) -> None:
    low, median, high = np.percentile(floor, [5, 50, 95])
    print(f"{name}: ECE {observed:.1%}; a perfectly calibrated model: median {median:.1%} (5%..95%: {low:.1%}..{high:.1%}), "
          f"above {TARGET:.0%} in {np.mean(floor > TARGET):.0%} of the draws, at least {observed:.1%} in "
          f"{np.mean(floor >= observed):.0%}")


def percent_range(values) -> str:
    return f"{statistics.median(values):.1%}  ({min(values):.1%}..{max(values):.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    head_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3, help="salted fold assignments pooled for the fit")
    parser.add_argument("--draws", type=int, default=2000, help="label draws of the noise floor")
    parser.add_argument("--no_held_out", action="store_true", help="part 1 only")
    arguments = parser.parse_args()
    if not arguments.image_dir.is_dir():
        sys.exit(f"{arguments.image_dir} not found: pass --image_dir and --weights")
    seeds = [int(seed) for seed in arguments.seeds.split(",")]
    started = time.perf_counter()

    images = list_images(arguments.image_dir, 0, 0)
    examples = images.examples("training")
    paths = [images.image_dir / path for path, _ in examples]
    names = [path.name for path in paths]
    labels = np.array([label for _, label in examples])
    class_count = len(images.labels)
    backbone = get_backbone(arguments.architecture)
    with tempfile.TemporaryDirectory() as work:
        cache = BottleneckCache.for_backbone(arguments.bottleneck_dir or Path(work) / "cache", backbone,
                                             weights_id(arguments.weights, 0))
        bottlenecks = image_bottlenecks(paths, file_keys(paths), backbone.input_size,
                                        lambda pixels: make_forward(build_backbone(backbone, arguments.weights, 0))(pixels),
                                        cache)

    print(f"calibration: {arguments.architecture} on {arguments.image_dir} ({len(labels)} images), "
          f"{arguments.folds}-fold, {arguments.steps} steps")
    print(f"\npart 1: out-of-fold ECE on every photo ({CALIBRATION_BINS} equal-width bins unless said) against the "
          f"ECE of a perfectly calibrated model with the same scores ({arguments.draws} label draws)")
    options = TrainOptions(image_dir=Path("."), how_many_training_steps=arguments.steps, folds=arguments.folds)
    observed_all, floor_medians = [], []
    for seed in seeds:
        seeded = TrainOptions(**{**options.__dict__, "seed": seed})
        pooled = pooled_out_of_fold(seeded, bottlenecks, labels, names, class_count, arguments.repeats)
        for salt, logits in enumerate(pooled):
            temperature = fit_temperature(logits, labels)
            scores = softmax(logits / temperature)
            for bins in (CALIBRATION_BINS, 15):
                observed = expected_calibration_error(scores, labels, bins)
                floor = calibration_error_floor(scores, arguments.draws, bins, seed=seed)
                report_floor(f"seed {seed}, fold assignment {salt}, {bins} bins: temperature {temperature:.2f} "
                             f"(ECE before it {expected_calibration_error(softmax(logits), labels, bins):.1%})",
                             observed, floor)
                if bins == CALIBRATION_BINS:
                    observed_all.append(observed)
                    floor_medians.append(float(np.median(floor)))
            top_scores = scores.max(axis=1)
            draws = np.random.default_rng(seed).random((arguments.draws, len(labels))) < top_scores
            report_floor(f"seed {seed}, fold assignment {salt}, {CALIBRATION_BINS} equal-mass bins",
                         equal_mass_error(top_scores, scores.argmax(1) == labels, CALIBRATION_BINS)[0],
                         equal_mass_error(top_scores, draws, CALIBRATION_BINS))
        print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    print(f"over seeds and fold assignments, {CALIBRATION_BINS} bins: ECE {percent_range(observed_all)}, above "
          f"{TARGET:.0%} in {sum(value > TARGET for value in observed_all)} of {len(observed_all)}; a perfectly "
          f"calibrated model's median {percent_range(floor_medians)}")
    if arguments.no_held_out:
        return

    print(f"\npart 2: held-out folds, calibrators fitted on the out-of-fold logits of the rest; seeds {arguments.seeds}")
    rows: dict[str, list[float]] = {}
    for fold in range(arguments.folds):
        train_mask, validation_mask, held_out = fold_sets(names, fold, arguments.folds)
        folded = train_mask | validation_mask
        folded_names = [name for name, keep in zip(names, folded) if keep]
        test_x, test_y = bottlenecks[held_out], labels[held_out]
        for seed in seeds:
            seeded = TrainOptions(**{**options.__dict__, "seed": seed})
            head, _ = trained_head(seeded, bottlenecks[train_mask], labels[train_mask], bottlenecks[validation_mask],
                                   labels[validation_mask], class_count)
            pooled = pooled_out_of_fold(seeded, bottlenecks[folded], labels[folded], folded_names, class_count,
                                        arguments.repeats)
            logits = head.logits(test_x).astype(np.float64)
            figures = {}
            for name, (temperature, biases) in calibrators(pooled, labels[folded]).items():
                calibrated = logits / temperature + biases
                figures[name] = (float(np.mean(calibrated.argmax(1) == test_y)),
                                 expected_calibration_error(softmax(calibrated), test_y),
                                 negative_log_likelihood(calibrated, test_y))
                rows.setdefault(f"{name}: accuracy", []).append(figures[name][0])
                rows.setdefault(f"{name}: ECE", []).append(figures[name][1])
                rows.setdefault(f"{name}: NLL", []).append(figures[name][2])
                rows.setdefault(f"{name}: top-1 answers changed", []).append(
                    float(np.mean(calibrated.argmax(1) != logits.argmax(1))))
                if name == "temperature":
                    rows.setdefault(f"{name}: ECE of a perfectly calibrated model (median of draws)", []).append(
                        float(np.median(calibration_error_floor(softmax(calibrated), arguments.draws, seed=seed))))
            for name, values in figures.items():
                if name in ("none", "temperature"):
                    continue
                baseline = figures["temperature"]
                rows.setdefault(f"{name} - temperature: accuracy points (paired)", []).append(100 * (values[0] - baseline[0]))
                rows.setdefault(f"{name} - temperature: ECE points (paired)", []).append(100 * (values[1] - baseline[1]))
                rows.setdefault(f"{name} - temperature: NLL (paired)", []).append(values[2] - baseline[2])
            print(f"fold {fold + 1}/{arguments.folds}, seed {seed} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)

    print_rows(rows)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
