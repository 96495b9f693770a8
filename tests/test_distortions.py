"""Distortions: each one alone, deterministic variants, the variant cache, and distorted `train`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY_ARCHITECTURE, load_script
from edge.image import load_rgb
from trainer import UserError
from trainer.backbones import build_backbone, get_backbone
from trainer.bottlenecks import BottleneckCache, file_keys
from trainer.cli import app
from trainer.distortions import (
    BRIGHTNESS, FLIP, OFFSET_X, OFFSET_Y, PARAMETER_COUNT, SCALE, DistortionOptions, distort, make_distorted_forward,
    parameters_from_uniform, variant_bottlenecks, variant_cache, variant_parameters, working_size,
)

SIZE = (48, 64)  # (height, width): not square, so a transposed axis would show
DRAWS = 64


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    """4 classes x 12 small images: enough for every split, few forward passes."""
    return load_script("make_sample_data").make_sample_dataset(
        tmp_path_factory.mktemp("distortions") / "images", images_per_class=12, size=64)


def images_and_working(sample_dir, options, count=4):
    """uint8 (count, *SIZE, 3) plain images and the same files at the working size."""
    paths = sorted(sample_dir.rglob("*.jpg"))[:count]
    return (np.stack([load_rgb(path, SIZE) for path in paths]),
            np.stack([load_rgb(path, working_size(SIZE, options)) for path in paths]))


def draws(options, count=DRAWS, seed=0):
    return parameters_from_uniform(np.random.default_rng(seed).random((count, PARAMETER_COUNT)), options)


def test_zero_settings_change_nothing(sample_dir):
    options = DistortionOptions()
    plain, working = images_and_working(sample_dir, options)
    assert not options.enabled and working_size(SIZE, options) == SIZE
    assert np.array_equal(distort(working, draws(options, len(plain)), SIZE), plain)


def test_flip_alone_mirrors_half(sample_dir):
    options = DistortionOptions(flip_left_right=True)
    plain, working = images_and_working(sample_dir, options, count=1)
    parameters = draws(options)
    out = distort(np.repeat(working, DRAWS, axis=0), parameters, SIZE)
    flipped = parameters[:, FLIP] == 1
    assert np.array_equal(out[flipped], np.repeat(plain[:, :, ::-1], flipped.sum(), axis=0))
    assert np.array_equal(out[~flipped], np.repeat(plain, (~flipped).sum(), axis=0))
    assert 0.25 < flipped.mean() < 0.75


@pytest.mark.parametrize("options", [DistortionOptions(random_crop=25), DistortionOptions(random_scale=25)])
def test_crop_and_scale_keep_the_output_size_and_move_the_window(sample_dir, options):
    plain, working = images_and_working(sample_dir, options, count=1)
    assert working.shape[1:3] == (60, 80)  # 1.25 * (48, 64)
    parameters = draws(options, 8)
    assert np.all((parameters[:, SCALE] >= 1) & (parameters[:, SCALE] <= 1.25 + 1e-6))
    if options.random_crop:
        assert np.allclose(parameters[:, SCALE], 1.25)
    assert np.all(parameters[:, FLIP] == 0) and np.all(parameters[:, BRIGHTNESS] == 1)
    out = distort(np.repeat(working, len(parameters), axis=0), parameters, SIZE)
    assert out.shape == (len(parameters), *SIZE, 3)
    assert len({sample.tobytes() for sample in out}) == len(out)  # every window differs

    # At the largest scale the window is an unresampled input-size crop of the working image,
    # from its top-left to its bottom-right corner.
    corners = parameters[:2].copy()
    corners[:, [SCALE, OFFSET_Y, OFFSET_X]] = [[1.25, 0, 0], [1.25, 1, 1]]
    top_left, bottom_right = distort(np.repeat(working, 2, axis=0), corners, SIZE)
    assert np.abs(top_left.astype(int) - working[0, :48, :64]).max() <= 1
    assert np.abs(bottom_right.astype(int) - working[0, 12:, 16:]).max() <= 1


def test_brightness_alone_multiplies_within_its_range(sample_dir):
    options = DistortionOptions(random_brightness=30)
    plain, working = images_and_working(sample_dir, options, count=1)
    parameters = draws(options)
    factors = parameters[:, BRIGHTNESS]
    assert np.all((factors >= 0.7) & (factors <= 1.3)) and factors.min() < 0.9 and factors.max() > 1.1
    out = distort(np.repeat(working, DRAWS, axis=0), parameters, SIZE)
    expected = np.clip(np.round(plain.astype(np.float32) * factors[:, None, None, None]), 0, 255)
    assert np.abs(out - expected).max() <= 1  # float rounding at .5 only
    assert out.dtype == np.uint8


def test_variants_are_deterministic_and_differ():
    options = DistortionOptions(10, 10, 10, True)
    first = variant_parameters(7, "abc", options, 10)
    assert np.array_equal(first, variant_parameters(7, "abc", options, 10))
    assert np.array_equal(first[:4], variant_parameters(7, "abc", options, 4))  # more variants extend, not redraw
    assert len({row.tobytes() for row in first}) == 10
    for other in (variant_parameters(8, "abc", options, 10), variant_parameters(7, "abd", options, 10),
                  variant_parameters(7, "abc", DistortionOptions(10, 10, 20, True), 10)):
        assert not np.array_equal(first, other)


def test_invalid_settings_are_user_errors():
    with pytest.raises(UserError, match="random_crop"):
        DistortionOptions(random_crop=-1).validate()
    with pytest.raises(UserError, match="distortion_variants"):
        DistortionOptions(flip_left_right=True, distortion_variants=-1).validate()


def test_variant_cache_is_reused_and_keyed_by_settings(small_dir, tmp_path):
    backbone = get_backbone(TINY_ARCHITECTURE)
    model = build_backbone(backbone, "none", 0)
    plain_cache = BottleneckCache(tmp_path / "plain", backbone.bottleneck_size)
    paths = sorted(small_dir.rglob("*.jpg"))[:5]
    computed = []
    # Every setting below has the same working size, so one compiled forward pass serves them all.
    forward = make_distorted_forward(model, working_size(backbone.input_size, DistortionOptions(10, 10)))

    def run(options):
        counting = lambda working, parameters: computed.append(len(parameters)) or forward(working, parameters)
        cache = variant_cache(plain_cache, options, seed=0)
        vectors = variant_bottlenecks(paths, file_keys(paths), options, 0, backbone.input_size, counting, cache)
        return vectors, sum(computed), len(list(cache.folder.glob("*.f32")))

    options = DistortionOptions(10, 10, 0, True, distortion_variants=2)
    vectors, computed_count, files = run(options)
    assert vectors.shape == (5, 2, backbone.bottleneck_size) and computed_count == files == 10
    assert not np.array_equal(vectors[:, 0], vectors[:, 1])

    computed.clear()
    again, computed_count, files = run(options)
    assert computed_count == 0 and files == 10 and np.array_equal(again, vectors)

    more, computed_count, files = run(DistortionOptions(10, 10, 0, True, distortion_variants=3))
    assert computed_count == 5 and files == 15 and np.array_equal(more[:, :2], vectors)

    computed.clear()
    changed, computed_count, files = run(DistortionOptions(10, 10, 5, True, distortion_variants=2))
    assert computed_count == files == 10 and not np.array_equal(changed, vectors)


DISTORTION_FLAGS = ["--random_crop", "10", "--random-scale", "10", "--random_brightness", "10", "--flip_left_right"]


def test_distorted_train_through_the_cli(small_dir, tmp_path):
    runner = CliRunner()
    arguments = ["train", "--image_dir", str(small_dir), "--architecture", TINY_ARCHITECTURE, "--weights", "none",
                 "--bottleneck_dir", str(tmp_path / "bottlenecks"), "--how_many_training_steps", "20",
                 *DISTORTION_FLAGS]
    result = runner.invoke(app, [*arguments, "--distortion_variants", "2", "--output_dir", str(tmp_path / "cached")])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "cached" / "run.json").read_text())
    assert run["distortions"] | {"working_size": None, "variant_cache_dir": None} == {
        "random_crop": 10, "random_scale": 10, "random_brightness": 10, "flip_left_right": True,
        "distortion_variants": 2, "mode": "cached variants", "working_size": None, "variant_cache_dir": None}
    training_count = sum(len(files) for files in run["split"]["files"]["training"].values())
    assert len(list((tmp_path / "bottlenecks").glob("*-distorted-*/*.f32"))) == 2 * training_count
    assert run["accuracy"]["test"] is not None  # from the plain, undistorted bottlenecks

    result = runner.invoke(app, [*arguments, "--distortion-variants", "0", "--train_batch_size", "16",
                                 "--output_dir", str(tmp_path / "fresh")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "fresh" / "run.json").read_text())["distortions"]["mode"] == "fresh at every step"

    result = runner.invoke(app, [*arguments, "--random_crop", "101"])
    assert result.exit_code == 2
