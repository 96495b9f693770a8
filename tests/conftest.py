"""Shared fixtures: one generated dataset and one tiny trained model for the whole session."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import shutil
import signal
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Property tests (tests/test_properties.py): `make test` runs the "bounded" profile, a fixed,
# derandomised set of examples with no failure database, so CI's time and results never vary;
# `make fuzz` runs "fuzz": FUZZ_FACTOR times the examples, random, remembered in .hypothesis/.
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "bounded")
FUZZ_FACTOR = 25
_SLOW_EXAMPLES = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile("bounded", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=_SLOW_EXAMPLES)
settings.register_profile("fuzz", deadline=None, print_blob=True, suppress_health_check=_SLOW_EXAMPLES)
settings.load_profile(HYPOTHESIS_PROFILE)


def examples(count: int) -> int:
    """A property test's number of examples: `count` in `make test`, FUZZ_FACTOR times more in `make fuzz`."""
    return count * FUZZ_FACTOR if HYPOTHESIS_PROFILE == "fuzz" else count

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_ARCHITECTURE = "mobilenet_v2_0.35_96"
COLORS = ("red", "green", "blue")
COLOR_BGR = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}
TINY_SIZE = (8, 8)  # (height, width) of the test models' input
TEST_TIMEOUT_S = 60  # a run that has not ended by then is stopped with SIGTERM, and the test fails
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # the system's, from apt; never a download
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def broken_counter(folder: Path, script: str) -> Path:
    """A Pi counter (trainer.pi_cost) in folder whose qemu is a shell script: its stdout and the
    counts file it writes ("$counts"), as a broken or mismatched counter would. Returns folder.

    The plugin argument qemu gets is "<plugin>,out=<counts file>"; the script writes there as the plugin would.
    """
    import json

    qemu, plugin = folder / "qemu-aarch64", folder / "plugin.so"
    folder.mkdir(parents=True, exist_ok=True)
    plugin.touch()
    qemu.write_text(f'#!/bin/sh\ncounts=$(printf "%s" "$4" | sed "s/.*,out=//")\n{script}\n')
    qemu.chmod(0o755)
    roots = {cpu: folder / "roots" / cpu for cpu in ("cortex-a72", "cortex-a76")}
    for root in roots.values():
        (root / "opt" / "deps").mkdir(parents=True, exist_ok=True)
    (folder / "counter.json").write_text(json.dumps({
        "qemu": str(qemu), "library_path": str(folder), "plugin": str(plugin), "site_path": "/opt/deps",
        "roots": {cpu: str(root) for cpu, root in roots.items()}}))
    return folder


def load_script(name: str):
    """Import a script from scripts/ (they are not a package), registered as scripts import each
    other (a dataclass looks its module up in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test when the shared folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not beside the repo)")
    return path


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """4 classes x 40 generated images: every class has validation and test images."""
    return load_script("make_sample_data").make_sample_dataset(
        tmp_path_factory.mktemp("data") / "images", images_per_class=40, size=128)


@pytest.fixture(scope="session")
def tiny_train_args(sample_dir, tmp_path_factory) -> list[str]:
    """`retrain-edge train` arguments for a fast run on the sample data (random weights)."""
    return ["train", "--image_dir", str(sample_dir), "--architecture", TINY_ARCHITECTURE, "--weights", "none",
            "--how_many_training_steps", "60", "--bottleneck_dir", str(tmp_path_factory.mktemp("bottlenecks"))]


@pytest.fixture(scope="session")
def trained_dir(tiny_train_args, tmp_path_factory) -> Path:
    """An output folder from a real `retrain-edge train` on the sample data: do not modify it."""
    from typer.testing import CliRunner

    from trainer.cli import app

    output_dir = tmp_path_factory.mktemp("trained")
    result = CliRunner().invoke(app, [*tiny_train_args, "--output_dir", str(output_dir)])
    assert result.exit_code == 0, result.output
    return output_dir


@pytest.fixture(scope="session")
def color_models(pytestconfig) -> dict[str, Path]:
    """Tiny classifiers of an image's dominant colour (red, green, blue), float32 and int8, built with TF.

    Input (1, 8, 8, 3) in [-1, 1]; mean over pixels, then Dense(3, softmax) with weights 10 * I.
    float.tflite carries standard metadata (labels, normalisation); int8.tflite (int8 in and out) has none.
    Kept in pytest's cache, keyed by this fixture's code, since importing TF takes most of this file's time.
    """
    import trainer.metadata

    key = hashlib.sha256(inspect.getsource(color_models).encode() + inspect.getsource(trainer.metadata).encode())
    folder = pytestconfig.cache.mkdir(f"edge_color_models_{key.hexdigest()[:12]}")
    models = {"float": folder / "float.tflite", "int8": folder / "int8.tflite"}
    if all(path.is_file() for path in models.values()):
        return models

    import keras
    import tensorflow as tf

    inputs = keras.Input((*TINY_SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="final_result")(pooled)
    model = keras.Model(inputs, outputs)
    model.get_layer("final_result").set_weights([10 * np.eye(3, dtype=np.float32), np.zeros(3, np.float32)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    float_model = trainer.metadata.add_metadata(converter.convert(), list(COLORS), 127.5, 127.5, {"architecture": "colour mean"})

    def calibration():
        rng = np.random.default_rng(0)
        for _ in range(20):
            yield [rng.uniform(-1, 1, (1, *TINY_SIZE, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings():  # TF asks for input statistics that full-integer conversion does not need
        warnings.simplefilter("ignore", UserWarning)
        int8_model = converter.convert()
    for path, content in ((models["float"], float_model), (models["int8"], int8_model)):
        path.with_suffix(".tmp").write_bytes(content)
        path.with_suffix(".tmp").replace(path)
    return models


@pytest.fixture(scope="session")
def tiny_int8():
    """(Keras model, its float32 and full-int8 .tflite, uint8 calibration pixels): a convolution
    with ReLU6, a depthwise one, a linear one, a fully connected layer and softmax, as in a
    classifier; random weights, seeded."""
    import keras

    from trainer.backbones import INPUT_MEAN, INPUT_STD
    from trainer.convert import convert_model

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu6", name="conv")(inputs)
    features = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="depthwise")(features)
    features = keras.layers.Conv2D(6, 1, name="project")(features)
    outputs = keras.layers.Dense(3, activation="softmax", bias_initializer="ones", name="dense")(
        keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    # Pixels unlike zero-mean noise, so that quantised weights shift the convolutions' means.
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(170, 40, (40, 16, 16, 3)), 0, 255).astype(np.uint8)
    calibration = (pixels.astype(np.float32) - INPUT_MEAN) / INPUT_STD
    return model, convert_model(model, "float32"), convert_model(model, "int8", calibration), pixels


@pytest.fixture
def deadline():
    """SIGTERM to this process after TEST_TIMEOUT_S: run() stops on it, so no test hangs."""
    timer = threading.Timer(TEST_TIMEOUT_S, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    yield
    timer.cancel()


@pytest.fixture
def chromium_page():
    """A page of a real headless Chromium."""
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()
