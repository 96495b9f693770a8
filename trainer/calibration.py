"""Calibration: scores that mean what they say, and what each --threshold keeps.

A softmax head trained to 100% training accuracy is overconfident: its top scores run higher
than the share of its answers that are right. Dividing the logits by one temperature T > 1,
fitted by the lowest negative log likelihood (on out-of-fold logits, trainer.crossval), fixes
most of that and changes no top-1 answer (dividing every logit by the same positive number keeps
their order). Folded into the final layer (weights / T, biases / T) it costs the device nothing.

The expected calibration error measures what is left, but on a few hundred images even a
perfectly calibrated model shows one well above 0 (each bin's share of right answers is a noisy
count): calibration_error_floor gives that floor, to read an observed figure against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The temperature is searched in [1 / MAX_TEMPERATURE, MAX_TEMPERATURE] (unitless logit divisor).
MAX_TEMPERATURE = 100.0
# Golden-section steps of the search; each narrows the interval of log T by 0.618, so 60 steps
# reach float precision from a width of 2 * ln(100).
TEMPERATURE_SEARCH_STEPS = 60
# Equal-width bins of the top score for the expected calibration error (the usual 10).
CALIBRATION_BINS = 10
# Label draws of the noise floor of the expected calibration error (calibration_error_floor).
NOISE_FLOOR_DRAWS = 1000
# Draws x images computed at once for that floor: a few tens of MB of temporaries, where all the
# draws of a large dataset's photos at once would take gigabytes.
NOISE_FLOOR_CHUNK_ELEMENTS = 2 ** 20
# The --threshold values of the precision/coverage table.
THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def softmax(logits: np.ndarray) -> np.ndarray:
    """(n, classes) -> (n, classes), rows summing to 1"""
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def photo_log_losses(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(n,) cross entropy of each image's softmax(logits / temperature) against its label, nats."""
    scaled = np.asarray(logits, np.float64) / temperature
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    log_normaliser = np.log(np.exp(shifted).sum(axis=1))
    return log_normaliser - shifted[np.arange(len(labels)), labels]


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross entropy of softmax(logits / temperature) against labels: (n, classes), (n,) -> nats."""
    return float(np.mean(photo_log_losses(logits, labels, temperature)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature of lowest negative log likelihood on (logits (n, classes), labels (n,)).

    The likelihood is convex in 1 / T, hence unimodal in log T: a golden-section search finds it.
    With no images, or all of them right with ever larger margins rewarded, the answer is
    clipped to the search range; with none, 1 (no change).
    """
    if not len(labels):
        return 1.0
    low, high = -math.log(MAX_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(TEMPERATURE_SEARCH_STEPS):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if negative_log_likelihood(logits, labels, math.exp(left)) <= negative_log_likelihood(logits, labels, math.exp(right)):
            high = right
        else:
            low = left
    return math.exp((low + high) / 2)


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """How far the top score is from the share of right answers, averaged over images.

    scores: (n, classes) probabilities; labels: (n,). Images are binned by top score into `bins`
    equal-width bins; each bin adds |accuracy - mean top score| weighted by its share of images.
    """
    return float(binned_calibration_error(scores.max(axis=1), scores.argmax(axis=1) == labels, bins)[0])


def binned_calibration_error(top_scores: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> np.ndarray:
    """The expected calibration error of each row: top_scores (..., n) in [0, 1], correct (..., n) -> (...)."""
    # A score of exactly 1.0 belongs in the last bin, not in one of its own.
    bin_index = np.minimum((top_scores * bins).astype(np.int64), bins - 1)
    top_scores, correct = np.atleast_2d(top_scores), np.atleast_2d(correct)
    bin_index = np.broadcast_to(np.atleast_2d(bin_index), correct.shape)
    error = np.zeros(correct.shape[0])
    for index in range(bins):
        members = bin_index == index
        # Per row: |sum of (correct - top score) over the bin| / n, which is the bin's share of
        # images times |accuracy - mean top score| (0 for no images).
        error += np.abs(np.where(members, correct - top_scores, 0.0).sum(axis=1)) / max(correct.shape[1], 1)
    return error


def calibration_error_floor(scores: np.ndarray, draws: int = NOISE_FLOOR_DRAWS, bins: int = CALIBRATION_BINS,
                            seed: int = 0) -> np.ndarray:
    """(draws,) expected calibration errors of a perfectly calibrated model on these scores.

    scores: (n, classes) probabilities. Each draw takes every image's label from its own scores,
    so each top-1 answer is right with probability its top score, and measures the ECE. With a
    few hundred images the binned ECE of such a model is not 0: its distribution is the floor an
    observed ECE on as many images with these scores should be read against.
    """
    top_scores = scores.max(axis=1)
    rng = np.random.default_rng(seed)
    rows = max(1, NOISE_FLOOR_CHUNK_ELEMENTS // max(len(top_scores), 1))
    # Chunk by chunk from one generator: the same uniforms, row by row, as drawing them all at once.
    return np.concatenate([np.zeros(0)] + [
        binned_calibration_error(top_scores, rng.random((min(rows, draws - start), len(top_scores))) < top_scores, bins)
        for start in range(0, draws, rows)])


def perfect_calibration_ece(scores: np.ndarray) -> dict[str, float]:
    """{"median", "percentile_95"} of calibration_error_floor(scores): the ECE to read an observed one against."""
    floor = calibration_error_floor(scores)
    return {"median": float(np.median(floor)), "percentile_95": float(np.percentile(floor, 95))}


def format_perfect_calibration(perfect: dict[str, float], percent: bool = True) -> str:
    """perfect_calibration_ece's figures as one clause, in percent or (percent=False) as fractions."""
    def value(number: float) -> str:
        return f"{number:.1%}" if percent else f"{number:.3f}"
    return (f"a perfectly calibrated model with these scores would show {value(perfect['median'])} on as many images "
            f"(at most {value(perfect['percentile_95'])} in 95% of label draws)")


@dataclass(frozen=True)
class ThresholdRow:
    """What `edge-classify --threshold` would do on a labelled set: answers with a top score of
    at least `threshold` are kept, the others reported as unknown."""

    threshold: float
    kept: int  # images whose top score is at least the threshold
    correct: int  # of those, answered right
    total: int  # images in the set

    @property
    def precision(self) -> float:
        """Share of the kept answers that are right (NaN when nothing is kept)."""
        return self.correct / self.kept if self.kept else math.nan

    @property
    def coverage(self) -> float:
        """Share of the images kept."""
        return self.kept / self.total if self.total else math.nan


def precision_coverage(scores: np.ndarray, labels: np.ndarray, thresholds=THRESHOLDS) -> list[ThresholdRow]:
    """One ThresholdRow per threshold; scores (n, classes), labels (n,)."""
    top_scores = scores.max(axis=1)
    correct = scores.argmax(axis=1) == labels
    rows = []
    for threshold in thresholds:
        kept = top_scores >= threshold
        rows.append(ThresholdRow(float(threshold), int(kept.sum()), int((kept & correct).sum()), len(labels)))
    return rows


def format_precision_coverage(rows: list[ThresholdRow]) -> str:
    """The table as `evaluate` prints it, one line per threshold."""
    def percent(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.1%}"
    lines = ["--threshold  answers kept that are right  images kept"]
    lines += [f"{row.threshold:>11g}  {percent(row.precision):>27}  {percent(row.coverage):>11}" for row in rows]
    return "\n".join(lines)
