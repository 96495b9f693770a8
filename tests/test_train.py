"""The train stage: backbones registry, bottleneck cache, the head, outputs, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import REPO, TINY_ARCHITECTURE, load_script, shared_path
from edge.image import load_rgb
from trainer import UserError
from trainer.backbones import architecture_names, get_backbone, weights_id
from trainer.bottlenecks import BottleneckCache, compute_cached, file_key
from trainer.cli import app
from trainer.train import ClassBalancedSampler

runner = CliRunner()


# --- backbones -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, canonical, size, bottleneck", [
    ("inception_v3", "inception_v3", 299, 2048),
    ("mobilenet_0.25_128", "mobilenet_v1_0.25_128", 128, 256),
    ("mobilenet_v1_1.0_224", "mobilenet_v1_1.0_224", 224, 1024),
    ("mobilenet_v2_0.35_96", "mobilenet_v2_0.35_96", 96, 1280),
    ("mobilenet_v2_1.4_224", "mobilenet_v2_1.4_224", 224, 1792),
    ("mobilenet_v2_1_224", "mobilenet_v2_1.0_224", 224, 1280),
    ("mobilenet_v3_small", "mobilenet_v3_small", 224, 576),
])
def test_registry_names(name, canonical, size, bottleneck):
    backbone = get_backbone(name)
    assert (backbone.name, backbone.input_size, backbone.bottleneck_size) == (canonical, (size, size), bottleneck)
    assert canonical in architecture_names()


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2_0.3_224", "mobilenet_v1_0.35_128", "mobilenet_v4_1.0_224"])
def test_unknown_architecture_is_a_user_error(name):
    with pytest.raises(UserError, match="unknown architecture"):
        get_backbone(name)


def test_weights_id_names_a_file_by_its_content(tmp_path):
    first, second = tmp_path / "a.h5", tmp_path / "b.h5"
    first.write_bytes(b"one")
    second.write_bytes(b"one")
    assert weights_id(str(first), 0) == weights_id(str(second), 0)
    second.write_bytes(b"two")
    assert weights_id(str(first), 0) != weights_id(str(second), 0)
    assert weights_id("none", 1) != weights_id("none", 2)
    with pytest.raises(UserError, match="no such file"):
        weights_id(str(tmp_path / "missing.h5"), 0)


@pytest.mark.parametrize("architecture", ["mobilenet_v2_0.35_96", "mobilenet_v1_0.25_128", "mobilenet_v3_small", "inception_v3"])
def test_every_family_builds_with_random_weights(architecture):
    from trainer.backbones import build_backbone

    backbone = get_backbone(architecture)
    model = build_backbone(backbone, "none", seed=0)
    pixels = np.random.default_rng(0).uniform(-1, 1, (1, *backbone.input_size, 3)).astype(np.float32)
    features = model.predict(pixels, verbose=0)
    assert features.shape == (1, backbone.bottleneck_size)
    # He-scaled random weights: features far from Keras' default ~1e-11, which nothing can learn from.
    assert 1e-4 < np.abs(features).mean() < 1e3


def test_imagenet_weights_at_an_unsupported_size_are_refused():
    from trainer.backbones import build_backbone

    with pytest.raises(UserError, match="no ImageNet weights for mobilenet_v1_0.25_96"):
        build_backbone(get_backbone("mobilenet_v1_0.25_96"), "imagenet", 0)


def test_offline_imagenet_download_says_to_pass_weights(sample_dir, tmp_path):
    # A proxy on a closed local port makes the download fail here as it does on an offline machine.
    environment = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "https_proxy": "http://127.0.0.1:9",
                   "HTTPS_PROXY": "http://127.0.0.1:9"}
    command = [sys.executable, "-m", "trainer.cli", "train", "--image_dir", str(sample_dir),
               "--architecture", "mobilenet_v2_0.35_96", "--output_dir", str(tmp_path / "out"),
               "--bottleneck_dir", str(tmp_path / "cache")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=environment)
    assert result.returncode == 2, result.stderr
    assert "error: could not download the ImageNet weights for mobilenet_v2_0.35_96" in result.stderr
    assert "--weights PATH" in result.stderr and "Traceback" not in result.stderr


def test_a_weights_file_for_another_architecture_is_a_user_error():
    from trainer.backbones import build_backbone

    weights = shared_path("weights", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
    with pytest.raises(UserError, match="does not fit mobilenet_v2_0.5_224"):
        build_backbone(get_backbone("mobilenet_v2_0.5_224"), str(weights), 0)


# --- bottleneck cache ------------------------------------------------------------------------

def test_cache_round_trip_and_corruption_is_detected(tmp_path, caplog):
    cache = BottleneckCache(tmp_path, 8)
    vector = np.arange(8, dtype=np.float32)
    cache.write("key", vector)
    np.testing.assert_array_equal(cache.read("key"), vector)
    assert cache.read("other") is None

    entry = cache.path("key")
    data = bytearray(entry.read_bytes())
    data[3] ^= 0xFF
    entry.write_bytes(bytes(data))
    assert cache.read("key") is None
    entry.write_bytes(entry.read_bytes()[:10])
    assert cache.read("key") is None
    assert "corrupt" in caplog.text


def test_compute_resumes_after_an_interruption(tmp_path):
    cache = BottleneckCache(tmp_path, 3)
    keys = [f"image{i}" for i in range(100)]
    loaded = []

    def load_pixels(index):
        if index == 70 and not loaded.count("interrupted"):
            loaded.append("interrupted")
            raise KeyboardInterrupt
        loaded.append(index)
        return np.full((2, 2, 3), index, np.uint8)

    def forward(pixels):
        return pixels.reshape(len(pixels), -1)[:, :3].astype(np.float32)

    with pytest.raises(KeyboardInterrupt):
        compute_cached(keys, load_pixels, forward, cache)
    done_before = len(list(tmp_path.glob("*.f32")))
    assert 0 < done_before < 100
    assert not list(tmp_path.glob("**/.*.partial*"))

    loaded.clear()
    loaded.append("interrupted")
    vectors = compute_cached(keys, load_pixels, forward, cache)
    assert len(loaded) - 1 == 100 - done_before  # only what was missing is decoded again
    np.testing.assert_array_equal(vectors[:, 0], np.arange(100))


def test_sampler_is_class_balanced():
    labels = np.array([0] * 90 + [1] * 10)
    batch = ClassBalancedSampler(labels, np.random.default_rng(0)).batch(10_000)
    assert abs(np.mean(labels[batch] == 1) - 0.5) < 0.03
    assert set(batch[labels[batch] == 1]) == set(range(90, 100))


# --- train end to end ------------------------------------------------------------------------

def test_outputs_are_complete(trained_dir, sample_dir):
    import keras

    run = json.loads((trained_dir / "run.json").read_text())
    labels = (trained_dir / "labels.txt").read_text().splitlines()
    assert labels == run["labels"] == ["checkers", "circles", "stripes", "triangles"]
    assert run["architecture"] == TINY_ARCHITECTURE and run["input_size"] == [96, 96]
    assert (run["input_mean"], run["input_std"]) == (127.5, 127.5)
    assert run["image_dir"] == str(sample_dir.resolve())
    files = run["split"]["files"]
    every_file = sorted(path for set_name in files for paths in files[set_name].values() for path in paths)
    assert every_file == sorted(str(p.relative_to(sample_dir)) for p in sample_dir.rglob("*.jpg"))
    assert 0 <= run["accuracy"]["test"] <= 1 and run["test_count"] == sum(map(len, files["testing"].values()))
    assert run["history"][-1]["step"] == 60 and "validation_accuracy" in run["history"][-1]
    model = keras.models.load_model(trained_dir / "model.keras")
    assert model.input_shape == (None, 96, 96, 3) and model.output_shape == (None, 4)
    assert model.get_layer("final_result").activation.__name__ == "softmax"


def test_tensorboard_event_files_are_written(trained_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = json.loads((trained_dir / "run.json").read_text())
    summaries = Path(run["summaries_dir"])
    train_events = EventAccumulator(str(summaries / "train")).Reload()
    assert {"accuracy", "cross_entropy"} <= set(train_events.Tags()["scalars"])
    # Histogram-plugin summaries are stored as tensors; TensorBoard draws them as histograms.
    histograms = " ".join(train_events.Tags()["tensors"])
    assert "final_layer/weights" in histograms and "final_layer/biases" in histograms
    assert [event.step for event in train_events.Scalars("accuracy")] == [record["step"] for record in run["history"]]
    validation_events = EventAccumulator(str(summaries / "validation")).Reload()
    accuracies = [event.value for event in validation_events.Scalars("accuracy")]
    assert accuracies == pytest.approx([record["validation_accuracy"] for record in run["history"]])


def test_the_saved_model_agrees_with_the_cached_bottlenecks(trained_dir, tiny_train_args):
    """The head was trained on cached vectors; the full model must compute the same thing."""
    import keras

    run = json.loads((trained_dir / "run.json").read_text())
    model = keras.models.load_model(trained_dir / "model.keras")
    image_dir = Path(run["image_dir"])
    paths = [image_dir / p for paths in run["split"]["files"]["testing"].values() for p in paths][:8]
    pixels = np.stack([load_rgb(path, (96, 96)) for path in paths]).astype(np.float32) / 127.5 - 1
    probabilities = model.predict(pixels, verbose=0)

    bottleneck_dir = Path(tiny_train_args[tiny_train_args.index("--bottleneck_dir") + 1])
    cache = BottleneckCache(next(bottleneck_dir.iterdir()), run["bottleneck_size"])
    bottlenecks = np.stack([cache.read(file_key(path)) for path in paths])
    weights, biases = model.get_layer("final_result").get_weights()
    logits = bottlenecks @ weights + biases
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


def test_second_run_reuses_the_cache_and_a_changed_image_is_recomputed(tiny_train_args, trained_dir, tmp_path):
    bottleneck_dir = Path(tiny_train_args[tiny_train_args.index("--bottleneck_dir") + 1])
    entries = {path: path.stat().st_mtime_ns for path in bottleneck_dir.rglob("*.f32")}
    result = runner.invoke(app, [*tiny_train_args, "--output_dir", str(tmp_path / "again"), "--verbose"])
    assert result.exit_code == 0, result.output
    assert "all 160 cached" in result.output
    assert {path: path.stat().st_mtime_ns for path in bottleneck_dir.rglob("*.f32")} == entries


def test_changed_image_is_recomputed(sample_dir, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(sample_dir, images)
    arguments = ["train", "--image_dir", str(images), "--architecture", TINY_ARCHITECTURE, "--weights", "none",
                 "--how_many_training_steps", "10", "--bottleneck_dir", str(tmp_path / "cache"),
                 "--output_dir", str(tmp_path / "out")]
    assert runner.invoke(app, arguments).exit_code == 0
    changed = next(images.glob("circles/*.jpg"))
    from PIL import Image

    Image.open(changed).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(changed)
    result = runner.invoke(app, [*arguments, "--output_graph", str(tmp_path / "graph.keras"),
                                 "--output_labels", str(tmp_path / "labels.txt")])
    assert result.exit_code == 0, result.output
    assert "(159 cached)" in result.output
    assert len(list((tmp_path / "cache").rglob("*.f32"))) == 161
    assert (tmp_path / "labels.txt").read_text() == (tmp_path / "out" / "labels.txt").read_text()
    assert (tmp_path / "graph.keras").read_bytes() == (tmp_path / "out" / "model.keras").read_bytes()


def test_retraining_after_adding_images_computes_only_theirs(sample_dir, tmp_path):
    """scripts/bench_incremental.py's procedure, at test size: hold 10% back, train, add them, train again."""
    bench = load_script("bench_incremental")
    images, cache = tmp_path / "images", tmp_path / "cache"
    cache.mkdir()
    added = bench.link_dataset(sample_dir, images, 10)
    arguments = ["train", "--image_dir", str(images), "--architecture", TINY_ARCHITECTURE, "--weights", "none",
                 "--how_many_training_steps", "10", "--bottleneck_dir", str(cache), "--output_dir", str(tmp_path / "out")]
    assert runner.invoke(app, arguments).exit_code == 0
    before = bench.cache_entries(cache)
    for link, target in added:
        link.symlink_to(target)
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    after = bench.cache_entries(cache)
    written = {Path(path).stem for path in after if after[path] != before.get(path)}
    assert len(added) == 16 and written == {file_key(target) for _, target in added}
    assert f"({160 - len(added)} cached)" in result.output


def test_misclassified_images_are_listed(tiny_train_args, tmp_path):
    result = runner.invoke(app, [*tiny_train_args, "--output_dir", str(tmp_path),
                                 "--print_misclassified_test_images", "--how-many-training-steps", "1"])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run.json").read_text())
    wrong = round((1 - run["accuracy"]["test"]) * run["test_count"])
    assert result.output.count("misclassified: ") == wrong > 0


# --- errors and help -------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, message", [
    (["--image_dir", "/nonexistent/photos"], "does not exist"),
    (["--architecture", "resnet50"], "unknown architecture"),
    (["--weights", "/nonexistent/weights.h5"], "no such file"),
    (["--learning_rate", "0"], "--learning_rate must be a positive number"),
])
def test_errors_are_one_plain_line(tiny_train_args, tmp_path, arguments, message):
    result = runner.invoke(app, [*tiny_train_args, "--output_dir", str(tmp_path), *arguments])
    assert result.exit_code == 2
    error_lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run.json").exists()


def test_help_documents_every_flag():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for flag in ("--image_dir", "--output_dir", "--architecture", "--weights", "--bottleneck_dir", "--summaries_dir",
                 "--how_many_training_steps", "--learning_rate", "--train_batch_size", "--eval_step_interval",
                 "--validation_batch_size", "--test_batch_size", "--validation_percentage", "--testing_percentage",
                 "--print_misclassified_test_images", "--output_graph", "--output_labels", "--seed", "--no_early_stopping",
                 "--early-stopping"):
        assert flag in result.output


def test_without_tensorflow_the_cli_says_how_to_install_it(sample_dir, tmp_path):
    code = ("import sys; sys.modules['tensorflow'] = None; from trainer.cli import main; "
            f"sys.argv = ['retrain-edge', 'train', '--image_dir', {str(sample_dir)!r}, '--output_dir', {str(tmp_path)!r}]; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert "pip install 'retrain-edge[train]'" in result.stderr and "Traceback" not in result.stderr


def test_a_run_killed_while_writing_leaves_the_previous_outputs(trained_dir, tiny_train_args, tmp_path):
    output_dir = tmp_path / "out"
    shutil.copytree(trained_dir, output_dir)
    before = {name: (output_dir / name).read_bytes() for name in ("model.keras", "labels.txt", "run.json")}
    command = [sys.executable, "-m", "trainer.cli", *tiny_train_args, "--output_dir", str(output_dir), "--seed", "7"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(output_dir.glob(".model.*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed mid-write"
    for name, content in before.items():
        assert (output_dir / name).read_bytes() == content


# --- early stopping --------------------------------------------------------------------------

class DiscardedSummaries:
    """train_head's TensorBoard writer, when a test only looks at the head and its history."""

    def scalars(self, *_, **__):
        pass

    def histograms(self, *_):
        pass


def overfitting_run(early_stopping: bool):
    """A synthetic run that overfits: 40 training vectors in 200 dimensions, a quarter of them
    mislabelled, so the validation cross entropy falls, then climbs as the head learns the noise."""
    from trainer.train import TrainOptions, train_head

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 200))

    def vectors(count, noise_share):
        labels = rng.integers(3, size=count)
        x = centres[labels] * 0.3 + rng.normal(0, 1, (count, 200))
        noisy = rng.random(count) < noise_share
        return x.astype(np.float32), np.where(noisy, rng.integers(3, size=count), labels)

    (train_x, train_y), (validation_x, validation_y) = vectors(40, 0.25), vectors(300, 0.0)
    options = TrainOptions(image_dir=Path("."), how_many_training_steps=1500, learning_rate=0.5, train_batch_size=20,
                           validation_batch_size=-1, early_stopping=early_stopping)
    head, history = train_head(options, train_x, train_y, validation_x, validation_y, 3, DiscardedSummaries())
    return head, history, validation_x, validation_y


def test_early_stopping_keeps_the_step_of_lowest_validation_cross_entropy():
    from trainer.train import accuracy_and_cross_entropy

    head, history, validation_x, validation_y = overfitting_run(early_stopping=True)
    entropies = [record["validation_cross_entropy"] for record in history]
    lowest = int(np.argmin(entropies))
    assert [index for index, record in enumerate(history) if record.get("kept")] == [lowest]
    assert history[lowest]["step"] < history[-1]["step"] // 2  # the run did overfit: the test means something
    assert entropies[-1] > entropies[lowest] + 0.1
    _, entropy = accuracy_and_cross_entropy(head, validation_x, validation_y)
    assert entropy == pytest.approx(entropies[lowest], rel=1e-5)

    last_head, last_history, _, _ = overfitting_run(early_stopping=False)
    assert not any(record.get("kept") for record in last_history)
    _, last_entropy = accuracy_and_cross_entropy(last_head, validation_x, validation_y)
    assert last_entropy == pytest.approx(entropies[-1], rel=1e-5)


def test_run_json_records_the_kept_step_and_the_temperature(trained_dir):
    run = json.loads((trained_dir / "run.json").read_text())
    # Off by default: the last step's head is kept.
    assert run["hyperparameters"]["early_stopping"] is False
    assert run["kept_step"] == run["hyperparameters"]["how_many_training_steps"] == run["history"][-1]["step"]
    calibration = run["calibration"]
    assert calibration["fitted_on"] == "out_of_fold" and calibration["temperature"] > 0
    assert calibration["fold_steps"] == run["kept_step"]
    assert calibration["folds"] == run["hyperparameters"]["folds"] == 5
    # Every training and validation image has an out-of-fold prediction.
    files = run["split"]["files"]
    assert calibration["image_count"] == sum(len(files[name][label]) for name in ("training", "validation")
                                             for label in files[name])
    assert calibration["out_of_fold_nll"]["after"] <= calibration["out_of_fold_nll"]["before"] + 1e-9
    perfect = calibration["out_of_fold_ece"]["perfectly_calibrated"]
    assert 0 <= perfect["median"] <= perfect["percentile_95"] <= 1
    assert run["hyperparameters"]["weight_decay"] == run["hyperparameters"]["label_smoothing"] == 0



def test_with_early_stopping_the_temperature_is_fitted_for_the_kept_step(tiny_train_args, tmp_path):
    # A large learning rate over many steps overfits the sample data: an earlier step is kept.
    result = runner.invoke(app, [*tiny_train_args, "--output_dir", str(tmp_path), "--early_stopping",
                                 "--learning_rate", "3", "--how_many_training_steps", "400", "--eval_step_interval", "10"])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["kept_step"] < run["hyperparameters"]["how_many_training_steps"]  # the test means something
    calibration = run["calibration"]
    assert calibration["fitted_on"] == "out_of_fold" and calibration["fold_steps"] == run["kept_step"]


def test_choose_regularisation_records_the_chosen_values(tiny_train_args, tmp_path):
    result = runner.invoke(app, [*tiny_train_args, "--output_dir", str(tmp_path), "--choose-regularisation"])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run.json").read_text())
    hyperparameters, grid = run["hyperparameters"], run["calibration"]["grid"]
    best = min(grid, key=lambda entry: entry["out_of_fold_nll"])
    assert [hyperparameters[key] for key in ("weight_decay", "label_smoothing", "how_many_training_steps")] == \
        [best["weight_decay"], best["label_smoothing"], best["how_many_training_steps"]]
    assert run["history"][-1]["step"] == hyperparameters["how_many_training_steps"]  # the final head took them
    assert (f"chosen by out-of-fold NLL: --weight_decay {best['weight_decay']:g} --label_smoothing "
            f"{best['label_smoothing']:g} --how_many_training_steps {best['how_many_training_steps']}") in result.output
