"""scripts/bench_quantizer.py: clipped activation ranges and ai-edge-quantizer's recipes, on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_script

bench = load_script("bench_quantizer")


def test_percentile_range_drops_the_rare_far_values_and_keeps_zero():
    histogram = np.zeros(100, np.int64)
    histogram[40:60] = 100  # the bulk, over [-10, 10) on a recorded range of [-50, 50)
    histogram[99] = 1  # one far value: 0.05% of them
    assert bench.percentile_range(histogram, -50.0, 50.0, 99.99) == (-10.0, 50.0)
    assert bench.percentile_range(histogram, -50.0, 50.0, 99.9) == (-10.0, 10.0)
    positive = np.zeros(100, np.int64)
    positive[50:] = 1  # every value above 0: the range still reaches down to 0
    assert bench.percentile_range(positive, 5.0, 6.0, 99.9)[0] == 0.0


def test_mse_range_clips_a_lone_outlier_and_keeps_a_uniform_range():
    centred = np.zeros(2048, np.int64)
    centred[1000:1048] = 10 ** 5  # dense near 0 on a recorded range of [-100, 100]
    centred[-1] = 1  # one value at the top end
    low, high = bench.mse_range(centred, -100.0, 100.0)
    assert -20 < low < 0 < high < 20
    assert bench.mse_range(np.full(2048, 10), -1.0, 1.0) == (-1.0, 1.0)


def test_paired_counts_photos_gained_and_lost_over_all_folds():
    here = [np.array([True, True, False]), np.array([True, False])]
    baseline = [np.array([False, True, True]), np.array([False, False])]
    assert bench.paired(here, baseline) == "+2/-1"


@pytest.fixture(scope="module")
def tiny_calibrated():
    """A calibrated (not yet quantised) conv + ReLU + add model, with its calibration images."""
    import keras

    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    added = keras.layers.Add()([features, keras.layers.Conv2D(4, 1)(features)])
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(added))
    calibration = np.random.default_rng(0).uniform(-1, 1, (20, 8, 8, 3)).astype(np.float32)
    return load_script("bench_int8").calibrated(model, calibration)[0], calibration


def test_new_ranges_reach_the_quantised_model(tiny_calibrated):
    from ai_edge_litert.interpreter import Interpreter

    calibrated, calibration = tiny_calibrated
    recorded = bench.feature_maps(calibrated)
    assert len(recorded) == 3  # two convolutions and the add; not the input, nor the output
    histograms = bench.activation_histograms(calibrated, calibration, recorded)
    assert all(histogram.sum() == 20 * 8 * 8 * 4 for histogram in histograms.values())
    halved = {index: (low / 2, high / 2) for index, (low, high) in recorded.items()}
    quantized = load_script("bench_int8").quantized(bench.with_ranges(calibrated, halved), [])
    interpreter = Interpreter(model_content=quantized)
    scales = {detail["name"]: detail["quantization"][0] for detail in interpreter.get_tensor_details()}
    names = {detail["index"]: detail["name"]
             for detail in Interpreter(model_content=calibrated).get_tensor_details()}
    for index, (low, high) in halved.items():
        assert scales[names[index]] == pytest.approx((high - min(low, 0)) / 255, rel=0.02)


def test_aeq_quantize_writes_int8_models_when_its_venv_is_at_hand(tmp_path):
    if not bench.AEQ_PYTHON.is_file():
        pytest.skip(f"no ai-edge-quantizer venv at {bench.AEQ_PYTHON} (see scripts/bench_quantizer.py)")
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from trainer.convert import convert_model

    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="kept")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(features))
    calibration = np.random.default_rng(0).uniform(-1, 1, (10, 8, 8, 3)).astype(np.float32)
    float_model = convert_model(model, "float32")
    kept = [detail["name"] for detail in Interpreter(model_content=float_model).get_tensor_details()
            if "kept" in detail["name"] and detail["shape"].tolist() == [1, 8, 8, 4]]
    models = bench.aeq_models(bench.AEQ_PYTHON, float_model, calibration, kept, {kept[0]: (0.0, 0.5)}, tmp_path)
    assert len(models) == 8  # scripts/aeq_quantize.py's RECIPES
    for name, tflite_bytes in models.items():
        details = {detail["name"]: detail for detail in Interpreter(model_content=tflite_bytes).get_tensor_details()}
        assert (details[kept[0]]["dtype"] == np.float32) == name.endswith("float_layers"), name
        if "given_ranges" in name and not name.endswith("float_layers"):
            assert details[kept[0]]["quantization"][0] == pytest.approx(0.5 / 255)
    with pytest.raises(SystemExit, match="not tensors of"):  # a name of another conversion is not silently ignored
        bench.aeq_models(bench.AEQ_PYTHON, float_model, calibration, ["another/conversion"], {}, tmp_path)
