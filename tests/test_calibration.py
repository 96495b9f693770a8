"""Calibration: the temperature, the expected calibration error and the precision/coverage table."""

from __future__ import annotations

import math
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import load_script
from trainer.calibration import (
    binned_calibration_error, calibration_error_floor, expected_calibration_error, fit_temperature,
    format_precision_coverage, negative_log_likelihood, perfect_calibration_ece, photo_log_losses, precision_coverage,
    softmax,
)
from trainer.crossval import hash_folds, out_of_fold_logits
from trainer.dataset import set_for_file
from trainer.train import (
    LABEL_SMOOTHING_GRID, STEP_SHARE_GRID, WEIGHT_DECAY_GRID, SoftmaxHead, TrainOptions, calibration_for_kept_step,
    cross_validate, train_head,
)


def overconfident_fixture(seed: int = 0, count: int = 400, classes: int = 4):
    """Bottlenecks, labels and a head whose logits are 5 times too large: 20% of labels are noise,
    which a head trained to zero training loss never admits."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=count)
    centres = rng.normal(0, 1, (classes, 8))
    bottlenecks = (centres[labels] + rng.normal(0, 0.6, (count, 8))).astype(np.float32)
    noisy = rng.random(count) < 0.2
    labels = np.where(noisy, rng.integers(classes, size=count), labels)
    head = SoftmaxHead((5 * centres.T).astype(np.float32), np.zeros(classes, np.float32))
    return bottlenecks, labels, head


def noisy_bottlenecks(count: int = 200, dimensions: int = 32, classes: int = 4):
    """Overlapping classes in more dimensions than a few hundred images pin down, 20% of labels noise:
    a head trained on them fits the noise and is overconfident on images it did not see."""
    rng = np.random.default_rng(0)
    labels = rng.integers(classes, size=count)
    centres = rng.normal(0, 1, (classes, dimensions))
    bottlenecks = (centres[labels] + rng.normal(0, 1, (count, dimensions))).astype(np.float32)
    labels = np.where(rng.random(count) < 0.2, rng.integers(classes, size=count), labels)
    return bottlenecks, labels, [f"image{index}.jpg" for index in range(count)]


def test_out_of_fold_calibration_lowers_nll_and_changes_no_answer():
    bottlenecks, labels, names = noisy_bottlenecks()
    options = TrainOptions(image_dir=Path("."), how_many_training_steps=400, learning_rate=0.5)
    settings, record = cross_validate(options, bottlenecks, labels, names, 4)
    assert settings == {"weight_decay": 0.0, "label_smoothing": 0.0, "how_many_training_steps": 400}
    assert record["fitted_on"] == "out_of_fold" and record["folds"] == 5 and record["image_count"] == 200
    assert len(record["fold_accuracies"]) == 5
    # The heads are overconfident on photos they never saw: the temperature spreads their scores.
    assert record["temperature"] > 1.5
    assert record["out_of_fold_nll"]["after"] < record["out_of_fold_nll"]["before"] - 0.2
    assert record["out_of_fold_ece"]["after"] < record["out_of_fold_ece"]["before"]
    # Folded into the final head, it changes none of its answers.
    empty_x, empty_y = np.zeros((0, bottlenecks.shape[1]), np.float32), np.zeros(0, np.int64)
    head, _ = train_head(options, bottlenecks, labels, empty_x, empty_y, 4, None)
    calibrated = head.with_temperature(record["temperature"])
    assert np.array_equal(calibrated.probabilities(bottlenecks).argmax(1), head.probabilities(bottlenecks).argmax(1))


def test_out_of_fold_logits_come_from_heads_that_never_saw_the_image():
    bottlenecks = np.arange(10, dtype=np.float32)[:, None]
    fold_of = np.array([0, 1] * 5)
    seen = []

    class Memory:
        """A 'head' whose logit is 1 for images it was trained on."""

        def __init__(self, trained):
            self.trained = set(trained.ravel().tolist())

        def logits(self, inputs):
            return np.array([[float(value in self.trained)] for value in inputs.ravel()])

    def fit(x, y):
        seen.append(len(y))
        return [Memory(x)]

    logits = out_of_fold_logits(fit, bottlenecks, np.zeros(10, np.int64), fold_of, 1)
    assert seen == [5, 5] and logits.shape == (1, 10, 1) and not logits.any()
    assert out_of_fold_logits(fit, bottlenecks, np.zeros(10, np.int64), np.zeros(10, np.int64), 1) is None


def test_hash_folds_keep_a_burst_together_and_cover_every_fold():
    names = [f"photo{index}.jpg" for index in range(500)] + ["cat_nohash_1.jpg", "cat_nohash_2.jpg"]
    fold_of = hash_folds(names, 5)
    assert fold_of[-1] == fold_of[-2]
    assert np.bincount(fold_of, minlength=5).min() > 60  # about a fifth each
    assert np.array_equal(fold_of[:10], hash_folds(names[:10], 5))  # a photo's fold depends on its name alone


@pytest.mark.parametrize("validation_percentage, testing_percentage", [(10, 10), (0, 20)])
def test_hash_folds_are_balanced_whatever_the_split_holds_back(validation_percentage, testing_percentage):
    # Folds are cut from training + validation: the split's ranges must not shrink or empty a fold.
    names = [f"photo{index}.jpg" for index in range(2000)]
    kept = [name for name in names if set_for_file(name, validation_percentage, testing_percentage) != "testing"]
    counts = np.bincount(hash_folds(kept, 5), minlength=5)
    assert counts.min() > 0.8 * len(kept) / 5 and counts.max() < 1.2 * len(kept) / 5


def test_choose_regularisation_tries_the_grid_and_keeps_the_lowest_out_of_fold_nll():
    bottlenecks, labels, names = noisy_bottlenecks()
    options = TrainOptions(image_dir=Path("."), how_many_training_steps=80, learning_rate=0.5,
                           choose_regularisation=True)
    settings, record = cross_validate(options, bottlenecks, labels, names, 4)
    grid = record["grid"]
    assert len(grid) == len(WEIGHT_DECAY_GRID) * len(LABEL_SMOOTHING_GRID) * len(STEP_SHARE_GRID)
    best = min(grid, key=lambda entry: entry["out_of_fold_nll"])
    assert settings == {key: best[key] for key in ("weight_decay", "label_smoothing", "how_many_training_steps")}
    assert record["out_of_fold_nll"]["after"] == best["out_of_fold_nll"]
    # A step count read off a longer run is the head that run had then: the same as a run of that length.
    assert {entry["how_many_training_steps"] for entry in grid} == {10, 20, 40, 80}


def test_weight_decay_and_label_smoothing_shrink_the_weights():
    bottlenecks, labels, _ = noisy_bottlenecks()
    empty_x, empty_y = np.zeros((0, bottlenecks.shape[1]), np.float32), np.zeros(0, np.int64)

    def largest_weight(**settings):
        options = TrainOptions(image_dir=Path("."), how_many_training_steps=300, learning_rate=0.5, **settings)
        head, _ = train_head(options, bottlenecks, labels, empty_x, empty_y, 4, None)
        return float(np.abs(head.weights).max())

    plain = largest_weight()
    assert largest_weight(weight_decay=0.5) < 0.8 * plain
    assert largest_weight(label_smoothing=0.3) < 0.9 * plain


def test_snapshots_are_the_heads_of_shorter_runs():
    bottlenecks, labels, _ = overconfident_fixture(count=100)
    empty_x, empty_y = np.zeros((0, 8), np.float32), np.zeros(0, np.int64)
    snapshots = {20: None}
    train_head(TrainOptions(image_dir=Path("."), how_many_training_steps=50), bottlenecks, labels, empty_x, empty_y, 4,
               None, snapshots=snapshots)
    short, _ = train_head(TrainOptions(image_dir=Path("."), how_many_training_steps=20), bottlenecks, labels,
                          empty_x, empty_y, 4, None)
    np.testing.assert_allclose(snapshots[20].weights, short.weights, rtol=1e-5, atol=1e-7)


def test_fit_temperature_finds_the_minimum():
    bottlenecks, labels, head = overconfident_fixture(seed=1)
    logits = head.logits(bottlenecks)
    best = fit_temperature(logits, labels)
    grid = np.exp(np.linspace(-3, 3, 601))
    grid_best = grid[np.argmin([negative_log_likelihood(logits, labels, t) for t in grid])]
    assert best == pytest.approx(grid_best, rel=0.02)
    # Scores already calibrated (labels drawn from the softmax itself) need no temperature.
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (4000, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    drawn = np.array([rng.choice(3, p=row) for row in probabilities])
    assert fit_temperature(logits, drawn) == pytest.approx(1.0, abs=0.1)
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, np.int64)) == 1.0


def test_photo_log_losses_by_hand():
    """Each photo's NLL of its label; their mean is negative_log_likelihood."""
    logits = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    labels = np.array([1, 0, 0])
    expected = [math.log(3), math.log(1 + 2 * math.exp(-2)), math.log(2 + math.exp(4))]
    assert np.allclose(photo_log_losses(logits, labels), expected)
    assert np.allclose(photo_log_losses(logits, labels, 2.0), photo_log_losses(logits / 2, labels))
    assert negative_log_likelihood(logits, labels, 2.0) == pytest.approx(photo_log_losses(logits, labels, 2.0).mean())


def test_expected_calibration_error_by_hand():
    # Bin 0.9-1.0: scores 0.95 and 0.95, one right -> |0.5 - 0.95| = 0.45, weight 2/4.
    # Bin 0.6-0.7: scores 0.6 and 0.6 (the second as the top of [0.4, 0.6]), both right -> 0.4, weight 2/4.
    scores = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(scores, labels) == pytest.approx(0.5 * 0.45 + 0.5 * 0.4)
    # Perfectly calibrated: every image with top score 1.0 is right (1.0 falls in the last bin).
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_no_images_have_no_calibration_error():
    # As before the per-row rewrite: 0, not a NaN from dividing by no images.
    assert expected_calibration_error(np.zeros((0, 3)), np.zeros(0, np.int64)) == 0.0
    assert calibration_error_floor(np.zeros((0, 3)), draws=5).tolist() == [0.0] * 5


def test_calibration_error_floor_of_one_bin_is_the_binomial_mean_deviation():
    # 20 images scored [0.75, 0.25] all fall in the 0.7-0.8 bin; labels drawn from those scores make
    # K of them right, K ~ Binomial(20, 0.75), so each draw's ECE is |K / 20 - 0.75| exactly.
    count, top = 20, 0.75
    expected = sum(math.comb(count, right) * top ** right * (1 - top) ** (count - right) * abs(right / count - top)
                   for right in range(count + 1))
    scores = np.tile([top, 1 - top], (count, 1))
    floor = calibration_error_floor(scores, draws=4000)
    assert np.mean(floor) == pytest.approx(expected, abs=0.006)  # 4 standard errors of the mean of 4000 draws
    assert set(np.round(floor * count * 4).astype(int)) <= {abs(4 * right - 3 * count) for right in range(count + 1)}
    # Scores of 1 are always right: a perfectly calibrated model then shows exactly 0.
    assert not calibration_error_floor(np.eye(3)[[0, 1, 2, 0]], draws=50).any()
    perfect = perfect_calibration_ece(scores)
    assert perfect["median"] <= perfect["percentile_95"] and perfect["median"] == pytest.approx(expected, abs=0.05)


def test_the_calibration_error_floor_of_many_photos_holds_few_draws_in_memory():
    # train and evaluate compute it for every run: on a large dataset all 1,000 label draws of
    # every photo at once would take gigabytes (here 10,000 photos: over 200 MB).
    scores = softmax(np.random.default_rng(4).normal(0, 2, (10_000, 3)))
    tracemalloc.start()
    try:
        floor = calibration_error_floor(scores, draws=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40e6
    # The same draws as all at once: one stream of uniforms, row by row.
    top_scores = scores[:100].max(axis=1)
    all_at_once = binned_calibration_error(top_scores, np.random.default_rng(0).random((1000, 100)) < top_scores)
    np.testing.assert_array_equal(calibration_error_floor(scores[:100], draws=1000), all_at_once)
    assert floor.shape == (1000,) and 0 < np.median(floor) < 0.05


def test_binned_calibration_error_per_row_is_the_expected_calibration_error():
    rng = np.random.default_rng(1)
    scores = softmax(rng.normal(0, 2, (50, 4)))
    labels = rng.integers(4, size=(3, 50))
    correct = scores.argmax(1) == labels
    assert binned_calibration_error(scores.max(1), correct) == pytest.approx(
        [expected_calibration_error(scores, row) for row in labels])


def test_an_early_stopped_head_gets_the_temperature_of_folds_trained_as_long():
    bottlenecks, labels, names = noisy_bottlenecks()
    options = TrainOptions(image_dir=Path("."), how_many_training_steps=400, learning_rate=0.5)
    _, full_length = cross_validate(options, bottlenecks, labels, names, 4)
    kept = calibration_for_kept_step(options, full_length, 20, bottlenecks, labels, names, 4)
    _, twenty_steps = cross_validate(replace(options, how_many_training_steps=20), bottlenecks, labels, names, 4)
    assert kept["fold_steps"] == 20 and kept["temperature"] == twenty_steps["temperature"]
    # The heads of 20 steps are less sure of themselves than those of 400: a smaller temperature.
    assert kept["temperature"] < full_length["temperature"] - 0.3
    unchanged = calibration_for_kept_step(options, full_length, 400, bottlenecks, labels, names, 4)
    assert unchanged == {**full_length, "fold_steps": 400}
    assert calibration_for_kept_step(options, {"temperature": 1.0, "fitted_on": None}, 20, bottlenecks, labels,
                                     names, 4) == {"temperature": 1.0, "fitted_on": None, "fold_steps": None}


def test_precision_coverage_table_by_hand():
    # Top scores 0.99 (right), 0.95 (wrong), 0.9 (right), 0.7 (right), 0.55 (wrong), 0.4 (wrong).
    scores = np.array([[0.99, 0.01, 0.0], [0.95, 0.05, 0.0], [0.05, 0.9, 0.05],
                       [0.1, 0.2, 0.7], [0.55, 0.45, 0.0], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 1, 2, 1, 0])
    rows = {row.threshold: row for row in precision_coverage(scores, labels, thresholds=(0.0, 0.5, 0.9, 0.96, 0.999))}
    assert (rows[0.0].kept, rows[0.0].correct, rows[0.0].total) == (6, 3, 6)
    assert (rows[0.5].kept, rows[0.5].correct) == (5, 3)
    # A score equal to the threshold is kept, as edge-classify --threshold keeps it.
    assert (rows[0.9].kept, rows[0.9].correct) == (3, 2)
    assert rows[0.9].precision == pytest.approx(2 / 3) and rows[0.9].coverage == pytest.approx(0.5)
    assert (rows[0.96].kept, rows[0.96].precision, rows[0.96].coverage) == (1, 1.0, pytest.approx(1 / 6))
    assert rows[0.999].kept == 0 and math.isnan(rows[0.999].precision) and rows[0.999].coverage == 0.0
    table = format_precision_coverage(list(rows.values()))
    assert table.splitlines()[3].split() == ["0.9", "66.7%", "50.0%"]
    assert table.splitlines()[5].split() == ["0.999", "n/a", "0.0%"]


def test_bench_calibration_recovers_a_known_temperature_and_per_class_bias():
    """The per-class bias calibrator scripts/bench_calibration.py measured (and `train` rejected)."""
    fit_temperature_and_biases = load_script("bench_calibration").fit_temperature_and_biases
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (4000, 4))
    true_biases = np.array([0.6, 0.0, -0.6, 0.0])
    labels = np.array([rng.choice(4, p=row) for row in softmax(logits / 2 + true_biases)])
    temperature, biases = fit_temperature_and_biases(logits, labels, 0.0)
    assert temperature == pytest.approx(2.0, abs=0.15)
    assert biases == pytest.approx(true_biases - true_biases.mean(), abs=0.15)
    assert negative_log_likelihood(logits / temperature + biases, labels) < negative_log_likelihood(
        logits, labels, fit_temperature(logits, labels)) - 0.01
    # A heavy penalty leaves the temperature alone.
    temperature, biases = fit_temperature_and_biases(logits, labels, 1000.0)
    assert np.abs(biases).max() < 0.01 and temperature == pytest.approx(fit_temperature(logits, labels), rel=0.01)
