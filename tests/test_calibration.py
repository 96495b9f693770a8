"""Calibration: the temperature, the expected calibration error and the precision/coverage table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.calibration import (
    expected_calibration_error, fit_temperature, format_precision_coverage, negative_log_likelihood, precision_coverage,
)
from trainer.train import SoftmaxHead, calibrate


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


def test_the_folded_temperature_keeps_every_answer_and_lowers_validation_nll():
    bottlenecks, labels, head = overconfident_fixture()
    validation, held_out = slice(0, 200), slice(200, None)
    calibrated, record = calibrate(head, bottlenecks[validation], labels[validation])
    assert record["temperature"] > 1.5  # the head was overconfident, so the temperature spreads its scores
    for part in (validation, held_out):
        assert np.array_equal(calibrated.probabilities(bottlenecks[part]).argmax(1),
                              head.probabilities(bottlenecks[part]).argmax(1))
    before, after = record["validation_nll"]["before"], record["validation_nll"]["after"]
    assert after < before - 0.1
    assert after == pytest.approx(negative_log_likelihood(calibrated.logits(bottlenecks[validation]), labels[validation]),
                                  rel=1e-4)
    assert record["validation_ece"]["after"] < record["validation_ece"]["before"]
    # Fitted on validation, it helps images it never saw as well.
    assert (negative_log_likelihood(calibrated.logits(bottlenecks[held_out]), labels[held_out])
            < negative_log_likelihood(head.logits(bottlenecks[held_out]), labels[held_out]))


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


def test_without_validation_images_the_head_is_unchanged():
    _, _, head = overconfident_fixture()
    calibrated, record = calibrate(head, np.zeros((0, 8), np.float32), np.zeros(0, np.int64))
    assert calibrated is head and record["temperature"] == 1.0


def test_expected_calibration_error_by_hand():
    # Bin 0.9-1.0: scores 0.95 and 0.95, one right -> |0.5 - 0.95| = 0.45, weight 2/4.
    # Bin 0.6-0.7: scores 0.6 and 0.6 (the second as the top of [0.4, 0.6]), both right -> 0.4, weight 2/4.
    scores = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(scores, labels) == pytest.approx(0.5 * 0.45 + 0.5 * 0.4)
    # Perfectly calibrated: every image with top score 1.0 is right (1.0 falls in the last bin).
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


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
