"""k-fold cross-validation on cached bottlenecks: every photo judged by a head that never saw it.

With a few hundred photos, a validation split of a few dozen cannot fit a temperature or rank
settings (on flowers the best validation loss came with the worst unseen accuracy). k heads, each
trained on the other folds, give every photo an out-of-fold prediction instead; a head costs
seconds on cached bottlenecks, so k of them are cheap.

A photo's fold is its split hash bucket (`trainer.dataset.hash_bucket`) modulo k: a burst
(`_nohash_` names) stays in one fold, so near-identical frames never sit on both sides, and a
photo's fold never depends on which others are there. Modulo rather than contiguous ranges of the
percentage the train/validation/test split cuts: with ranges, whatever --validation_percentage and
--testing_percentage carve out of the low percentages would shrink or empty the first folds.

Comparing settings or backbones, one fold assignment is one draw: on 600 flowers, which of two
close backbones comes first moved with it. Repeated k-fold (repeat_folds) cuts the photos again
with salted hashes, bursts still together, and averages. And two backbones judged on the same
photos are compared by their per-photo difference (paired_difference): the standard error of that
difference, not of either accuracy, says whether one is better. It is smaller only as far as the two
agree photo by photo (the flowers' two MobileNetV2s disagree on ~10%: 1.3 points against 1.4, `retrain-edge compare`
on the 600 flowers, docs/choose-a-backbone.md).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import numpy as np

from trainer.calibration import (
    expected_calibration_error, fit_temperature, negative_log_likelihood, perfect_calibration_ece, softmax,
)
from trainer.dataset import burst_key, hash_bucket

DEFAULT_FOLDS = 5
# Fold assignments of repeated k-fold when backbones are compared. One: on 12 held-out thirds of the
# flowers (scripts/bench_compare.py) 3 or 5 assignments agreed with the held-out ranking in 5 and 4
# of 12 splits, one in 4 (within a split), recommended the held-out leader in 5 and 3 against 6,
# and each costs k more heads per backbone.
DEFAULT_REPEATS = 1


def hash_folds(file_names: Sequence[str], folds: int) -> np.ndarray:
    """(n,) fold index in [0, folds) per base file name: its split hash bucket modulo folds."""
    return np.array([hash_bucket(name) % folds for name in file_names], np.int64)


def salted_hash(file_name: str, salt: str) -> int:
    """A stable integer from a file's burst key and a salt: the frames of a burst share it."""
    key = f"{salt}:{burst_key(file_name)}".encode("utf-8", "surrogateescape")
    return int(hashlib.sha1(key).hexdigest(), 16)


def repeat_folds(file_names: Sequence[str], folds: int, repeat: int) -> np.ndarray:
    """(n,) fold index per base file name in fold assignment `repeat` of repeated k-fold.

    Repeat 0 is hash_folds, `train`'s folds; repeat r > 0 is the burst key's hash salted with r,
    modulo folds: each repeat cuts the photos differently, a burst stays in one fold, and a photo's
    fold still depends on its name alone.
    """
    if repeat == 0:
        return hash_folds(file_names, folds)
    return np.array([salted_hash(name, f"fold-repeat-{repeat}") % folds for name in file_names], np.int64)


def mean_and_clustered_standard_error(values: np.ndarray, file_names: Sequence[str]) -> tuple[float, float]:
    """Mean of per-photo values (n,) and its standard error, the frames of a burst counted as one draw.

    A cluster-robust (sandwich) estimate: sqrt(G / (G - 1) * sum over bursts of (sum of value - mean)^2) / n
    over G bursts; with no bursts it is the sample standard deviation / sqrt(n). 0 for one burst.
    """
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    _, burst = np.unique([burst_key(name) for name in file_names], return_inverse=True)
    sums = np.bincount(burst, weights=values - mean)
    if len(sums) < 2:
        return mean, 0.0
    return mean, float(math.sqrt(len(sums) / (len(sums) - 1) * np.sum(sums ** 2)) / len(values))


def paired_difference(correct: np.ndarray, other: np.ndarray, file_names: Sequence[str]) -> tuple[float, float]:
    """Accuracy of `correct` minus that of `other` and the standard error of that difference.

    Both are per-photo correctness out of fold, (n,) or (repeats, n) over the same photos in the same
    order; each photo's correctness is averaged over the repeats first, so a photo counts once.
    """
    return mean_and_clustered_standard_error(
        np.mean(np.atleast_2d(correct), axis=0) - np.mean(np.atleast_2d(other), axis=0), file_names)


def out_of_fold_logits(fit: Callable[[np.ndarray, np.ndarray], Sequence], bottlenecks: np.ndarray, labels: np.ndarray,
                       fold_of: np.ndarray, class_count: int) -> np.ndarray | None:
    """(settings, n, classes): each image's logits from the heads `fit` trained without its fold.

    fit(bottlenecks (m, d), labels (m,)) returns one head per setting (anything with
    `.logits((k, d)) -> (k, classes)`), the same settings in the same order for every fold.
    None when fewer than two folds hold images: no head could be judged on photos it never saw.
    """
    folds = np.unique(fold_of)
    if len(folds) < 2:
        return None
    logits = None
    for fold in folds:
        held_out = fold_of == fold
        heads = fit(bottlenecks[~held_out], labels[~held_out])
        if logits is None:
            logits = np.zeros((len(heads), len(labels), class_count), np.float32)
        for index, head in enumerate(heads):
            logits[index, held_out] = head.logits(bottlenecks[held_out])
    return logits


def fold_accuracies(logits: np.ndarray, labels: np.ndarray, fold_of: np.ndarray) -> list[float]:
    """Top-1 accuracy of out-of-fold logits (n, classes) within each fold, in fold order."""
    correct = logits.argmax(axis=1) == labels
    return [float(correct[fold_of == fold].mean()) for fold in np.unique(fold_of)]


def mean_and_standard_error(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(count); 0 for one value)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, 0.0
    return mean, float(np.std(values, ddof=1) / math.sqrt(len(values)))


def out_of_fold_calibration(logits: np.ndarray, labels: np.ndarray, fold_of: np.ndarray) -> dict:
    """The temperature of lowest out-of-fold NLL and what it does, as run.json records it.

    logits: (n, classes) out-of-fold. NLL and ECE are those of the out-of-fold predictions
    before and after dividing by the temperature; the top-1 answers do not change. Beside the ECE
    after, what a perfectly calibrated model with those scores would show on as many images.
    """
    temperature = fit_temperature(logits, labels)
    calibrated = softmax(logits / temperature)
    return {
        "temperature": temperature, "fitted_on": "out_of_fold", "folds": len(np.unique(fold_of)),
        "image_count": len(labels),
        "out_of_fold_accuracy": float(np.mean(logits.argmax(axis=1) == labels)),
        "fold_accuracies": fold_accuracies(logits, labels, fold_of),
        "out_of_fold_nll": {"before": negative_log_likelihood(logits, labels),
                            "after": negative_log_likelihood(logits, labels, temperature)},
        "out_of_fold_ece": {"before": expected_calibration_error(softmax(logits), labels),
                            "after": expected_calibration_error(calibrated, labels),
                            "perfectly_calibrated": perfect_calibration_ece(calibrated)},
    }
