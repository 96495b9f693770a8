"""scripts/bench_int8.py's candidates on a tiny Keras model: int8 features, its table (bias correction:
tests/test_convert.py)."""

from __future__ import annotations

import numpy as np

from conftest import load_script
from trainer.backbones import INPUT_MEAN, INPUT_STD

bench = load_script("bench_int8")


def test_int8_features_are_the_int8_backbones_dequantised_output(tiny_int8):
    import keras

    model, _, _, pixels = tiny_int8
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
