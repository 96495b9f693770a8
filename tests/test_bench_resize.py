"""scripts/bench_resize.py: its baseline preprocessing, its pixel comparison and its table, without a backbone."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_script
from edge.image import load_rgb, open_rgb

bench = load_script("bench_resize")
SIZE = (224, 224)  # (height, width) of the shared backbones


def stripes(width: int, height: int) -> Image.Image:
    """Black and white columns one pixel wide: what a resize without antialiasing aliases."""
    row = np.where(np.arange(width) % 2, 255, 0).astype(np.uint8)
    return Image.fromarray(np.repeat(np.broadcast_to(row[None, :, None], (height, width, 1)), 3, axis=2))


def test_the_baseline_is_pillows_bilinear_resize_after_the_jpeg_draft(tmp_path):
    path = tmp_path / "large.jpg"
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(smooth).resize((960, 720), Image.Resampling.BICUBIC).save(path, quality=90)
    drafted = open_rgb(path, draft_size=(224, 224))
    assert drafted.size == (480, 360)  # decoded at half scale: both sides stay above 224
    expected = np.asarray(drafted.resize((224, 224), Image.Resampling.BILINEAR))
    fully_decoded = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
    baseline = bench.pillow_rgb(path, SIZE)
    assert baseline.dtype == np.uint8 and baseline.shape == (224, 224, 3)
    np.testing.assert_array_equal(baseline, expected)
    assert not np.array_equal(baseline, fully_decoded)


def test_the_two_preprocessings_differ_where_the_baseline_antialiases_and_agree_at_the_models_size(tmp_path):
    striped, exact_size = tmp_path / "striped.png", tmp_path / "exact_size.png"
    stripes(300, 224).save(striped)  # 1.34x: no box average today, antialiased by Pillow before
    stripes(224, 224).save(exact_size)
    baseline = bench.pillow_rgb(striped, SIZE)
    assert np.ptp(baseline) < 110  # Pillow's widened filter greys the stripes
    assert np.ptp(load_rgb(striped, SIZE)) > 240  # bilinear alone keeps some of them nearly whole
    differences = bench.pixel_differences([striped, exact_size], SIZE)
    gap = np.abs(load_rgb(striped, SIZE).astype(int) - baseline)
    np.testing.assert_allclose(differences[0], [gap.mean(), gap.max()])
    np.testing.assert_array_equal(differences[1], [0, 0])


def test_the_table_pairs_the_new_preprocessing_against_the_old_photo_by_photo():
    photos, classes, repeats = 100, 3, 3
    names = [f"photo{index}.jpg" for index in range(photos)]
    labels = np.arange(photos) % classes
    pillow = np.ones((repeats, photos), bool)
    exact = pillow.copy()
    exact[:, :4] = False  # 4 photos wrong under every fold assignment
    exact[0, 4] = False  # one wrong under one assignment: a third of a photo
    right = np.eye(classes)[labels] * 5
    wrong = np.eye(classes)[(labels + 1) % classes] * 5
    on_exact, reseeded = right.copy(), right.copy()
    on_exact[:2] = wrong[:2]
    reseeded[-5:] = wrong[-5:]
    figures = bench.resize_figures({"pillow": pillow, "exact": exact}, {"pillow": 0.40, "exact": 0.35},
                                   {"pillow": right, "exact": on_exact}, reseeded, labels, names)
    assert figures["accuracy pillow"] == 1.0
    assert figures["accuracy exact"] == pytest.approx(1 - (4 * 3 + 1) / 300)
    assert figures["difference"] == pytest.approx(-(4 + 1 / 3) / photos)  # exact - pillow, negative when worse
    per_photo = np.r_[-np.ones(4), -1 / 3, np.zeros(photos - 5)]
    expected_error = np.sqrt(photos / (photos - 1) * np.sum((per_photo - per_photo.mean()) ** 2)) / photos
    assert figures["standard error"] == pytest.approx(expected_error)
    assert figures["old heads agree"] == pytest.approx(0.98)
    assert figures["old heads difference"] == pytest.approx(-0.02)
    assert figures["old heads standard error"] > 0
    assert figures["another seed agrees"] == pytest.approx(0.95)
    row = bench.format_row("v2 0.5", figures)
    assert row.split()[:5] == ["v2", "0.5", "100.0%", "95.7%", "-4.3%"]
    assert "0.4000" in row and "0.3500" in row and "98.0%" in row and "-2.0%" in row and row.endswith("95.0%")
    assert len(row) <= len(bench.HEADER) + 2


def test_without_the_photos_it_says_so_in_one_error_line(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_resize.py"), "--image-dir",
                           str(tmp_path / "absent")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: {tmp_path / 'absent'} not found: pass --image_dir"]
