"""retrain-edge convert: every mode on one small trained model, the proof, metadata, atomicity, errors."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.cli import app as edge_app
from edge.image import load_rgb
from edge.model import load_model, read_metadata
from trainer import UserError
from trainer.cli import app
from trainer.convert import (
    FLOAT_COST_SHARE, INT8_INSTRUCTIONS_PER_MAC, MIN_LINEAR_SHARE, ConvertOptions, Layer, bias_corrected, biased_layers,
    calibration_paths, channel_statistics, convert, convert_model, float_layer_choice, model_layers, with_bias_shift,
)
from trainer.outputs import remove_stale_partials

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from make_sample_data import make_sample_dataset  # noqa: E402

from conftest import broken_counter  # noqa: E402

ARCHITECTURE = "mobilenet_v2_0.35_96"
# Real weights (the 224 px ones fit any input size): a random backbone's outputs are so close to
# ties that any quantisation flips some of them, which would prove nothing about the converter.
WEIGHTS = REPO.parent / "shared" / "data" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
IMAGES_PER_CLASS = 30
# What TensorFlow, absl and LiteRT print at start-up when nothing quiets them.
NOISE = re.compile(r"absl|oneDNN|cpu_feature_guard|XNNPACK|^[IWEF]\d{4} ", re.MULTILINE)
runner = CliRunner()


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def assert_standard_metadata(tflite_path: Path, labels: list[str], quantization: str) -> None:
    """Labels and normalisation from the standard metadata alone; labels.txt appended, uncompressed."""
    metadata = read_metadata(tflite_path)
    assert metadata["labels"] == labels  # read only from an associated file of type TENSOR_AXIS_LABELS
    assert (metadata["input_mean"], metadata["input_std"]) == ([127.5], [127.5])
    assert metadata["retrain_edge"] == {"format_version": 2, "architecture": ARCHITECTURE,
                                        "input_size": [96, 96], "quantization": quantization}
    with zipfile.ZipFile(tflite_path) as archive:
        [member] = archive.infolist()
        assert member.filename == "labels.txt" and member.compress_type == zipfile.ZIP_STORED
        assert archive.read(member).decode() == "".join(f"{label}\n" for label in labels)


def train_tiny_model(image_dir: Path, output_dir: Path) -> None:
    """The one place the tests' model is made: `retrain-edge train` on generated images."""
    from trainer.train import TrainOptions, train

    train(TrainOptions(image_dir=image_dir, output_dir=output_dir, architecture=ARCHITECTURE, weights=str(WEIGHTS),
                       bottleneck_dir=output_dir.parent / "bottlenecks", how_many_training_steps=100,
                       eval_step_interval=50))


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A read-only trained output_dir; tests copy it (see `output_dir`) before writing into it."""
    if not WEIGHTS.is_file():
        pytest.skip(f"needs the shared weights {WEIGHTS}")
    root = tmp_path_factory.mktemp("convert")
    image_dir = make_sample_dataset(root / "images", images_per_class=IMAGES_PER_CLASS, size=96)
    train_tiny_model(image_dir, root / "trained")
    return root / "trained"


@pytest.fixture()
def output_dir(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("logs"))
    return copy


def keras_scores(output_dir: Path, relpaths: list[str]) -> np.ndarray:
    import keras

    run = json.loads((output_dir / "run.json").read_text())
    model = keras.saving.load_model(output_dir / "model.keras", compile=False)
    pixels = np.stack([load_rgb(Path(run["image_dir"]) / path, tuple(run["input_size"])) for path in relpaths])
    return model.predict((pixels.astype(np.float32) - 127.5) / 127.5, verbose=0)


def test_calibration_paths_take_classes_in_turn_deterministically():
    training = {"b": [f"b/{i}.jpg" for i in range(10)], "a": [f"a/{i}.jpg" for i in range(3)]}
    picked = calibration_paths(training, 8)
    assert picked == calibration_paths(dict(reversed(training.items())), 8)
    assert len(picked) == len(set(picked)) == 8
    assert {path[0] for path in picked[:2]} == {"a", "b"}
    assert sum(path.startswith("a/") for path in picked) == 3  # all of the small class, then the rest
    everything = calibration_paths(training, 100)
    assert everything[:8] == picked and sorted(everything) == sorted(training["a"] + training["b"])


def test_a_failed_pi_count_leaves_no_model_beside_the_old_outputs(output_dir, tmp_path, monkeypatch):
    # The counter is found, then cannot be read: the count fails after the proof.
    monkeypatch.setenv("ARM64_CHECK_CACHE", str(tmp_path / "arm64"))
    broken_counter(tmp_path / "arm64" / "pi-cost", "echo 'not the guest'")
    result = runner.invoke(app, ["convert", "--output_dir", str(output_dir), "--pi_cost"])
    assert result.exit_code == 2 and "the Pi counter's output could not be read" in result.output
    assert "Traceback" not in result.output
    assert not (output_dir / "model.tflite").exists()
    assert "conversion" not in json.loads((output_dir / "run.json").read_text())
    assert not [path for path in output_dir.iterdir() if "tmp" in path.name or "partial" in path.name]


def test_float32_by_default_matches_keras_and_carries_labels(output_dir):
    result = runner.invoke(app, ["convert", "--output_dir", str(output_dir)])
    assert result.exit_code == 0, result.output
    assert "top-1 agreement" in result.output and "100.0%" in result.output

    tflite_path = output_dir / "model.tflite"
    run = json.loads((output_dir / "run.json").read_text())
    proof = run["conversion"]["float32"]
    assert proof["test_count"] == run["test_count"] > 0
    # XNNPACK sums in another order than TensorFlow; on trained backbones the difference stays
    # under 1e-5 (5e-6 on flowers), on this random one it can reach 1e-5 of the larger outputs.
    assert proof["top1_agreement"] == 1.0 and proof["max_probability_difference"] <= 2e-5
    assert proof["keras_accuracy"] == proof["tflite_accuracy"]
    assert proof["size_bytes"] == tflite_path.stat().st_size and proof["median_latency_ms"] > 0

    assert run["labels"] == (output_dir / "labels.txt").read_text().split("\n")[:-1]
    assert_standard_metadata(tflite_path, run["labels"], "float32")
    for path in (tflite_path, output_dir / "labels.txt", output_dir / "run.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    (output_dir / "labels.txt").unlink()  # the model file alone is enough for the edge runtime
    runtime = load_model(tflite_path)
    assert runtime.labels == run["labels"] and runtime.input_dtype == np.float32
    image = Path(run["image_dir"]) / run["split"]["files"]["testing"][run["labels"][0]][0]
    result = CliRunner().invoke(edge_app, ["--model", str(tflite_path), "--json", str(image)])
    assert result.exit_code == 0 and json.loads(result.stdout)["label"] in run["labels"], result.output

    # The installed command, as a user runs it, with TensorFlow's own log threshold at its loudest.
    result = subprocess.run([str(Path(sys.executable).parent / "retrain-edge"), "evaluate", "--output_dir",
                             str(output_dir), "--model", str(tflite_path), "--report_dir", str(output_dir / "report")],
                            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}, timeout=600)
    assert result.returncode == 0 and "accuracy" in result.stdout, result.stderr
    assert not NOISE.search(result.stderr), result.stderr

    testing = [path for label in run["labels"] for path in run["split"]["files"]["testing"][label]]
    expected = keras_scores(output_dir, testing)
    actual = np.stack([runtime.scores(load_rgb(Path(run["image_dir"]) / path, (96, 96))) for path in testing])
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_quantize_gives_uint8_in_and_out_agreeing_with_keras(output_dir):
    result = runner.invoke(app, ["convert", "--output-dir", str(output_dir), "--quantize", "--calibration_images", "40"])
    assert result.exit_code == 0, result.output
    runtime = load_model(output_dir / "model.tflite")
    assert runtime.input_dtype == np.uint8 and runtime.pixel_table is None  # fed raw pixels
    assert runtime.interpreter.get_output_details()[0]["dtype"] == np.uint8
    assert_standard_metadata(output_dir / "model.tflite", runtime.labels, "int8")
    proof = json.loads((output_dir / "run.json").read_text())["conversion"]["int8"]
    assert proof["calibration_count"] == 40 and proof["input_dtype"] == proof["output_dtype"] == "uint8"
    assert proof["top1_agreement"] == 1.0, proof["disagreements"]
    assert proof["tflite_accuracy"] == proof["keras_accuracy"]
    assert proof["validation_count"] > 0 and proof["validation_agreement"] is not None
    assert "top-1 agreement (validation" in result.output
    # The default leaves the worst layers that fit the Pi 5 budget in float, and corrects the biases.
    assert proof["float_layers"] > 0 and float_tensors(output_dir / "model.tflite") >= proof["float_layers"]
    assert proof["bias_correction"] is True
    assert re.search(rf"layers in float / bias correction +{proof['float_layers']} / on \(\d+ s\)\n", result.output)


def test_float_layer_choice_gives_an_expensive_bad_layer_up_by_default():
    layers = {  # 1000 M multiply-accumulates in all: the budget is 9.5% of 235 M instructions
        "stem": Layer("CONV_2D", weights=400, macs=800_000_000, elements=2_000_000),  # ~218 M in float
        "early depthwise": Layer("DEPTHWISE_CONV_2D", weights=900, macs=20_000_000, elements=200_000),  # ~4.96 M
        "late depthwise": Layer("DEPTHWISE_CONV_2D", weights=1_000, macs=10_000_000, elements=50_000),  # ~2.44 M
        "head": Layer("FULLY_CONNECTED", weights=100_000, macs=100_000, elements=1_000),  # above the 5% of weights
        "add": Layer("ADD", weights=0, macs=0, elements=1_000),  # not a measured kind: never by default
        "pointwise": Layer("CONV_2D", weights=2_000, macs=169_900_000, elements=10_000),  # ~45.9 M
    }
    errors = [("stem", 3.0), ("head", 2.5), ("add", 2.0), ("early depthwise", 1.5), ("late depthwise", 1.0),
              ("pointwise", 0.5), ("not in the model", 0.4)]
    # By error alone (an explicit count), the stem comes first, as it always did.
    assert float_layer_choice(errors, layers, 2) == ["stem", "add"]
    assert float_layer_choice(errors, layers, 0) == []
    # By default it costs far more than the budget, so the depthwise layers are left in float instead.
    assert FLOAT_COST_SHARE * INT8_INSTRUCTIONS_PER_MAC * 1_000_000_000 < layers["stem"].float_instructions()
    assert float_layer_choice(errors, layers, None) == ["early depthwise", "late depthwise"]
    # --help states the budget.
    assert f"{FLOAT_COST_SHARE:.1%}" in runner.invoke(app, ["convert", "--help"], terminal_width=200).output


def test_model_layers_count_multiply_accumulates():
    import keras

    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    features = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(features)
    outputs = keras.layers.Dense(2, name="dense")(keras.layers.GlobalAveragePooling2D()(features))
    layers = model_layers(convert_model(keras.Model(inputs, outputs), "float32"))
    by_kind = {layer.kind: layer for layer in layers.values()}
    assert by_kind["CONV_2D"].macs == 8 * 8 * 4 * (3 * 3 * 3)
    assert by_kind["DEPTHWISE_CONV_2D"].macs == 8 * 8 * 4 * (3 * 3)
    assert by_kind["FULLY_CONNECTED"].macs == 4 * 2 and by_kind["MEAN"].macs == 0
    assert by_kind["CONV_2D"].weights == 4 * 3 * 3 * 3 + 4 and by_kind["CONV_2D"].elements == 8 * 8 * 3 + 8 * 8 * 4


def float_tensors(path: Path) -> int:
    return sum(detail["dtype"] == np.float32 for detail in load_model(path).interpreter.get_tensor_details())


def test_selective_int8_keeps_the_worst_layers_in_float_and_uint8_input(output_dir):
    sizes = {}
    for float_layers in (0, 3):
        target = output_dir / f"int8-{float_layers}.tflite"
        result = runner.invoke(app, ["convert", "--output_dir", str(output_dir), "--quantize", "--calibration_images",
                                     "20", "--float_layers", str(float_layers), "--output_tflite", str(target)])
        assert result.exit_code == 0, result.output
        runtime = load_model(target)
        assert runtime.input_dtype == np.uint8 and runtime.interpreter.get_output_details()[0]["dtype"] == np.uint8
        proof = json.loads((output_dir / "run.json").read_text())["conversion"]["int8"]
        assert proof["float_layers"] == float_layers and proof["input_dtype"] == "uint8"
        sizes[float_layers] = target.stat().st_size
        if float_layers == 0:
            assert float_tensors(target) == 0
        else:
            # Each layer left in float computes in float32 between a dequantise and a quantise.
            assert float_tensors(target) >= float_layers
    # The layers left in float hold at most FLOAT_WEIGHTS_SHARE (5%) of the weights: 4 bytes each instead of 1.
    assert sizes[0] < sizes[3] < 1.2 * sizes[0]


def test_dynamic_and_float16_from_another_model_file(output_dir, tmp_path):
    model = tmp_path / "elsewhere" / "classifier.keras"
    model.parent.mkdir()
    shutil.move(output_dir / "model.keras", model)
    labels = tmp_path / "elsewhere" / "names.txt"
    labels.write_text((output_dir / "labels.txt").read_text())
    sizes = {}
    for mode in ("dynamic", "float16"):
        target = tmp_path / mode / "m.tflite"
        result = runner.invoke(app, ["convert", "--output_dir", str(output_dir), "--model", str(model),
                                     "--labels", str(labels), "--quantization", mode, "--output_tflite", str(target)])
        assert result.exit_code == 0, result.output
        assert (target.parent / "labels.txt").read_text() == labels.read_text()
        proof = json.loads((output_dir / "run.json").read_text())["conversion"][mode]
        assert proof["top1_agreement"] == 1.0 and proof["max_probability_difference"] < 0.05
        assert load_model(target).input_dtype == np.float32
        assert_standard_metadata(target, labels.read_text().splitlines(), mode)
        sizes[mode] = target.stat().st_size
    assert sizes["dynamic"] < sizes["float16"]


def test_interrupted_conversion_leaves_the_earlier_model(output_dir):
    earlier = b"an earlier model.tflite"
    (output_dir / "model.tflite").write_bytes(earlier)
    code = ("import sys; from pathlib import Path; from trainer.convert import ConvertOptions, convert; "
            "convert(ConvertOptions(output_dir=Path(sys.argv[1])))")
    process = subprocess.Popen([sys.executable, "-c", code, str(output_dir)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Interrupt once the new model is being written: the temporary file beside the old one exists.
    deadline = time.monotonic() + 300
    while not list(output_dir.glob(".model.*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "the conversion ended before it could be interrupted"
    # SIGKILL, like a crash or a power cut: no handler runs, only the atomic rename protects the file.
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=120) == -signal.SIGKILL
    assert (output_dir / "model.tflite").read_bytes() == earlier
    assert "conversion" not in json.loads((output_dir / "run.json").read_text())
    # The next run removes what the killed one left, as the first thing it writes into the folder.
    [stale] = output_dir.glob(".model.*.partial.tflite")
    assert remove_stale_partials(output_dir, started=time.time()) == [stale] and not stale.exists()


def test_a_umask_of_077_keeps_outputs_private(output_dir, tmp_path):
    target = tmp_path / "private" / "model.tflite"
    with umask(0o077):
        result = runner.invoke(app, ["convert", "--output_dir", str(output_dir), "--quantization", "float16",
                                     "--output_tflite", str(target)])
    assert result.exit_code == 0, result.output
    for path in (target, target.parent / "labels.txt", output_dir / "run.json"):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_missing_run_says_to_train_first(tmp_path):
    result = runner.invoke(app, ["convert", "--output_dir", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "run.json" in result.output and "retrain-edge train" in result.output
    assert "Traceback" not in result.output


def test_missing_model_says_to_train_first(output_dir):
    (output_dir / "model.keras").unlink()
    result = runner.invoke(app, ["convert", "--output_dir", str(output_dir)])
    assert result.exit_code == 2
    assert "no model at" in result.output and "retrain-edge train" in result.output


def test_unreadable_model(output_dir):
    (output_dir / "model.keras").write_bytes(b"not a zip archive")
    result = runner.invoke(app, ["convert", "--output_dir", str(output_dir)])
    assert result.exit_code == 2
    assert "is not a readable Keras model" in result.output


def test_unwritable_output_path(output_dir):
    blocker = output_dir / "a_file"
    blocker.write_text("")
    result = runner.invoke(app, ["convert", "--output_dir", str(output_dir), "--output_tflite", str(blocker / "m.tflite")])
    assert result.exit_code == 2
    assert f"cannot write {blocker / 'm.tflite'}" in result.output


def test_missing_calibration_images_name_image_dir(output_dir, tmp_path):
    result = runner.invoke(app, ["convert", "--output_dir", str(output_dir), "--quantize", "--image_dir", str(tmp_path / "moved")])
    assert result.exit_code == 2
    assert "missing" in result.output and "--image_dir" in result.output


def test_mode_errors(output_dir):
    with pytest.raises(UserError, match="unknown quantization 'int4'"):
        convert(ConvertOptions(output_dir=output_dir, quantization="int4"))
    result = runner.invoke(app, ["convert", "--output_dir", str(output_dir), "--quantize", "--quantization", "float16"])
    assert result.exit_code == 2 and "--quantize means int8" in result.output
    assert not (output_dir / "model.tflite").exists()


def mean_gaps(int8_bytes: bytes, float_bytes: bytes, pixels: np.ndarray) -> dict[str, float]:
    """Each int8 convolution's largest gap, over the channels its bias can move (see
    MIN_LINEAR_SHARE), between its mean output and the float model's."""
    names = [name for name, _, _ in biased_layers(int8_bytes)]
    quantised = channel_statistics(int8_bytes, pixels, names)
    reference = channel_statistics(float_bytes, pixels, names)
    return {name: float(np.abs(quantised[name][0] - reference[name][0])[
        quantised[name][1] >= MIN_LINEAR_SHARE].max()) for name in names}


def test_biased_layers_are_the_int8_convolutions_in_graph_order(tiny_int8):
    _, float_bytes, int8_bytes, _ = tiny_int8
    names = [name for name, _, _ in biased_layers(int8_bytes)]
    assert [name.split("/")[1].removesuffix("_1") for name in names] == ["conv", "depthwise", "project", "dense"]
    assert [depth for _, _, depth in biased_layers(int8_bytes)] == [1, 2, 3, 4]  # a chain
    assert biased_layers(float_bytes) == []  # float biases are not int32


def test_parallel_convolutions_share_a_depth():
    import keras

    inputs = keras.Input((8, 8, 3))
    left = keras.layers.Conv2D(4, 1, name="left")(inputs)
    right = keras.layers.Conv2D(4, 3, padding="same", name="right")(keras.layers.ReLU(name="relu")(inputs))
    deeper = keras.layers.Conv2D(4, 1, name="deeper")(right)
    joined = keras.layers.Conv2D(2, 1, name="joined")(keras.layers.Concatenate()([left, deeper]))
    calibration = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32)
    layers = biased_layers(convert_model(keras.Model(inputs, joined), "int8", calibration))
    assert [(name.split("/")[-2], depth) for name, _, depth in layers[:3]] == [("left_1", 1), ("right_1", 1),
                                                                             ("deeper_1", 2)]
    assert layers[3][2] == 3  # the model's output, after the concatenation


def test_a_bias_shift_moves_the_int32_bias_by_whole_steps_and_nothing_else(tiny_int8):
    from ai_edge_litert import schema_py_generated as schema

    _, _, int8_bytes, _ = tiny_int8
    _, bias_index, _ = biased_layers(int8_bytes)[0]
    model = schema.Model.GetRootAsModel(int8_bytes, 0)
    tensor = model.Subgraphs(0).Tensors(bias_index)
    scales = tensor.Quantization().ScaleAsNumpy()
    before = model.Buffers(tensor.Buffer()).DataAsNumpy().view("<i4").copy()
    steps = np.arange(len(before)) - 3
    shifted = with_bias_shift(int8_bytes, bias_index, steps * scales)
    changed = schema.Model.GetRootAsModel(shifted, 0)
    np.testing.assert_array_equal(changed.Buffers(tensor.Buffer()).DataAsNumpy().view("<i4"), before + steps)
    assert len(shifted) == len(int8_bytes)
    assert sum(a != b for a, b in zip(shifted, int8_bytes)) <= 4 * np.count_nonzero(steps)


def test_bias_correction_takes_out_a_bias_error_put_into_the_int8_model(tiny_int8):
    from ai_edge_litert.interpreter import Interpreter

    _, float_bytes, int8_bytes, pixels = tiny_int8
    steps = {detail["name"]: detail["quantization"][0] for detail in
             Interpreter(model_content=int8_bytes).get_tensor_details()}  # each tensor's quantisation step
    natural = mean_gaps(int8_bytes, float_bytes, pixels)
    broken = int8_bytes
    for name, bias_index, _ in biased_layers(int8_bytes)[:3:2]:  # the first convolution and the linear one
        channels = len(channel_statistics(int8_bytes, pixels[:1], [name])[name][0])
        broken = with_bias_shift(broken, bias_index, np.where(np.arange(channels) % 2, 8, -6) * steps[name])
    before = mean_gaps(broken, float_bytes, pixels)
    after = mean_gaps(bias_corrected(broken, float_bytes, pixels), float_bytes, pixels)
    for name in before:
        assert before[name] > 2 * steps[name], name  # the error reaches every layer after the first
        assert after[name] < max(2 * natural[name], 0.2 * steps[name]), name
    # Corrected straight away, the int8 model's means come closer to the float model's too.
    assert sum(mean_gaps(bias_corrected(int8_bytes, float_bytes, pixels), float_bytes, pixels).values()) < \
        sum(natural.values())


def test_convert_corrects_the_int8_biases_unless_told_not_to(output_dir):
    import keras

    run = json.loads((output_dir / "run.json").read_text())
    relpaths = calibration_paths(run["split"]["files"]["training"], 20)
    pixels = np.stack([load_rgb(Path(run["image_dir"]) / path, (96, 96)) for path in relpaths])
    float_bytes = convert_model(keras.saving.load_model(output_dir / "model.keras", compile=False), "float32")
    models, gaps = {}, {}
    for flag in ("--bias_correction", "--no-bias-correction"):
        target = output_dir / f"{flag}.tflite"
        result = runner.invoke(app, ["convert", "--output_dir", str(output_dir), "--quantize", "--calibration_images",
                                     "20", "--float_layers", "0", flag, "--output_tflite", str(target)])
        assert result.exit_code == 0, result.output
        proof = json.loads((output_dir / "run.json").read_text())["conversion"]["int8"]
        assert proof["bias_correction"] is (flag == "--bias_correction")
        assert (proof["bias_correction_seconds"] > 0) is proof["bias_correction"]
        assert proof["bias_correction_seconds"] < proof["conversion_seconds"]
        assert re.search(r"layers in float / bias correction +0 / (on|off)", result.output).group(1) == \
            ("on" if flag == "--bias_correction" else "off")
        models[flag] = target.read_bytes()
        gaps[flag] = mean_gaps(models[flag], float_bytes, pixels)
    # Only the biases differ, and they bring the int8 model's channel means closer to the float model's.
    assert len(models["--bias_correction"]) == len(models["--no-bias-correction"])
    assert models["--bias_correction"] != models["--no-bias-correction"]
    assert sum(gaps["--bias_correction"].values()) < 0.7 * sum(gaps["--no-bias-correction"].values()), gaps
    assert "bias" in runner.invoke(app, ["convert", "--help"], terminal_width=200).output
