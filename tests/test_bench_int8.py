"""scripts/bench_int8.py's candidates on a tiny Keras model: bias correction, int8 features, its table."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_script
from trainer.backbones import INPUT_MEAN, INPUT_STD
from trainer.convert import convert_model

bench = load_script("bench_int8")
SIDE = 16


@pytest.fixture(scope="module")
def tiny():
    """(Keras model, its float32 and full-int8 .tflite, uint8 calibration pixels): a convolution
    with ReLU6, a depthwise one, a linear one, a fully connected layer and softmax, as in a
    classifier; random weights, seeded."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIDE, SIDE, 3))
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu6", name="conv")(inputs)
    features = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="depthwise")(features)
    features = keras.layers.Conv2D(6, 1, name="project")(features)
    outputs = keras.layers.Dense(3, activation="softmax", bias_initializer="ones", name="dense")(
        keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    # Pixels unlike zero-mean noise, so that quantised weights shift the convolutions' means.
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(170, 40, (40, SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
    calibration = (pixels.astype(np.float32) - INPUT_MEAN) / INPUT_STD
    return model, convert_model(model, "float32"), convert_model(model, "int8", calibration), pixels


def mean_gaps(int8_bytes: bytes, float_bytes: bytes, pixels: np.ndarray) -> dict[str, float]:
    """Each int8 convolution's largest gap, over the channels its bias can move (see
    MIN_LINEAR_SHARE), between its mean output and the float model's."""
    names = [name for name, _ in bench.biased_layers(int8_bytes)]
    quantised = bench.channel_statistics(int8_bytes, pixels, names)
    reference = bench.channel_statistics(float_bytes, pixels, names)
    return {name: float(np.abs(quantised[name][0] - reference[name][0])[
        quantised[name][1] >= bench.MIN_LINEAR_SHARE].max()) for name in names}


def test_biased_layers_are_the_int8_convolutions_in_graph_order(tiny):
    _, float_bytes, int8_bytes, _ = tiny
    names = [name for name, _ in bench.biased_layers(int8_bytes)]
    assert [name.split("/")[1].removesuffix("_1") for name in names] == ["conv", "depthwise", "project", "dense"]
    assert bench.biased_layers(float_bytes) == []  # float biases are not int32


def test_a_bias_shift_moves_the_int32_bias_by_whole_steps_and_nothing_else(tiny):
    from ai_edge_litert import schema_py_generated as schema

    _, _, int8_bytes, _ = tiny
    _, bias_index = bench.biased_layers(int8_bytes)[0]
    model = schema.Model.GetRootAsModel(int8_bytes, 0)
    tensor = model.Subgraphs(0).Tensors(bias_index)
    scales = tensor.Quantization().ScaleAsNumpy()
    before = model.Buffers(tensor.Buffer()).DataAsNumpy().view("<i4").copy()
    steps = np.arange(len(before)) - 3
    shifted = bench.with_bias_shift(int8_bytes, bias_index, steps * scales)
    changed = schema.Model.GetRootAsModel(shifted, 0)
    np.testing.assert_array_equal(changed.Buffers(tensor.Buffer()).DataAsNumpy().view("<i4"), before + steps)
    assert len(shifted) == len(int8_bytes)
    assert sum(a != b for a, b in zip(shifted, int8_bytes)) <= 4 * np.count_nonzero(steps)


def test_bias_correction_takes_out_a_bias_error_put_into_the_int8_model(tiny):
    from ai_edge_litert.interpreter import Interpreter

    _, float_bytes, int8_bytes, pixels = tiny
    steps = {detail["name"]: detail["quantization"][0] for detail in
             Interpreter(model_content=int8_bytes).get_tensor_details()}  # each tensor's quantisation step
    natural = mean_gaps(int8_bytes, float_bytes, pixels)
    broken = int8_bytes
    for name, bias_index in bench.biased_layers(int8_bytes)[:3:2]:  # the first convolution and the linear one
        channels = len(bench.channel_statistics(int8_bytes, pixels[:1], [name])[name][0])
        broken = bench.with_bias_shift(broken, bias_index, np.where(np.arange(channels) % 2, 8, -6) * steps[name])
    before = mean_gaps(broken, float_bytes, pixels)
    after = mean_gaps(bench.bias_corrected(broken, float_bytes, pixels), float_bytes, pixels)
    for name in before:
        assert before[name] > 2 * steps[name], name  # the error reaches every layer after the first
        assert after[name] < max(2 * natural[name], 0.2 * steps[name]), name
    # Corrected straight away, the int8 model's means come closer to the float model's too.
    assert sum(mean_gaps(bench.bias_corrected(int8_bytes, float_bytes, pixels), float_bytes, pixels).values()) < \
        sum(natural.values())


def test_int8_features_are_the_int8_backbones_dequantised_output(tiny):
    import keras

    model, _, _, pixels = tiny
    backbone = keras.Model(model.input, model.get_layer("project").output)
    pooled = keras.Model(backbone.input, keras.layers.GlobalAveragePooling2D()(backbone.output))
    calibration = (pixels.astype(np.float32) - INPUT_MEAN) / INPUT_STD
    features = bench.int8_features(pooled, calibration, pixels)
    exact = pooled.predict(calibration, verbose=0)
    assert features.dtype == np.float32 and features.shape == exact.shape
    spread = exact.max() - exact.min()
    assert np.abs(features - exact).max() < 0.05 * spread  # a few uint8 steps of the output range
    assert not np.array_equal(features, exact)


def test_the_table_shows_each_variant_and_the_keras_accuracies():
    agreements = {"full int8": [0.97, 0.98], "int8-feature head, full int8": [0.99, 1.0]}
    accuracies = {"Keras": [0.9, 0.92], "full int8": [0.88, 0.9], "int8-feature head, full int8": [0.9, 0.91]}
    own = {"int8-feature head, full int8": [0.995, 1.0]}
    fold0 = {"full int8": (b"", 1.0, 0), "int8-feature head, full int8": (b"", 1.0, 0)}
    lines = bench.variant_table(agreements, accuracies, own, fold0, {"full int8": 22_600_000,
                                                                      "int8-feature head, full int8": 22_610_000}).splitlines()
    assert lines[1].split()[:4] == ["full", "int8", "0", "97.5%"] and "22.6 M (1.000x)" in lines[1]
    assert "99.8% (99.5%..100.0%)" in lines[2] and lines[2].endswith("22.6 M (1.000x)")
    assert lines[3].split() == ["Keras", "91.0%", "(90.0%..92.0%)"]
