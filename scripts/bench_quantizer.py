"""Benchmark int8 candidates beyond layer choice: clipped activation ranges, ai-edge-quantizer's recipes.

    python scripts/bench_quantizer.py [--image_dir ../shared/data/flowers] [--folds 5] [--steps 4000] [--seeds 0]
        [--architecture mobilenet_v2_0.5_224] [--weights ../shared/data/weights/...0.5_224_no_top.h5]
        [--bottleneck_dir DIR] [--count] [--aeq_python ~/.cache/retrain-edge/aeq-venv/bin/python]

The folds, heads and calibration images are scripts/bench_int8.py's (bench_trust's folds, one head
per fold with the first of --seeds, convert's DEFAULT_CALIBRATION_IMAGES). Variants, each as full
int8 and as convert's default (the same layers in float as the min-max model's choice):
- TensorFlow's min-max ranges, as `convert --quantize` makes them (the baseline);
- the same calibrated model with every feature map's range (the outputs of the convolutions and
  the residual adds; not the input, the pooled features, the logits or the output) clipped to the
  99.9th or 99.99th percentile of its values on the calibration images, or to the range of least
  expected quantisation error (MSE: rounding error inside, clipping error outside), each from a
  histogram of the values (`activation_histograms`), then quantised as convert does;
- ai-edge-quantizer 0.10's static int8 recipes on the float32 .tflite, by scripts/aeq_quantize.py
  in its own venv: per-image min/max by moving average (its default) or the min/max of all images
  (TensorFlow's), weights by min-max, MSE or OCTAV; with the default's layers in float; with the
  MSE ranges above instead of its own ("given ranges"). Make that venv once (without it, these
  rows are skipped with one line saying so):
      python3 -m venv ~/.cache/retrain-edge/aeq-venv
      ~/.cache/retrain-edge/aeq-venv/bin/pip install ai-edge-quantizer==0.10.0
Every model runs the held-out fold through the edge runtime (edge.model.load_model: uint8, int8 or
float input). Agreement is top-1 against Keras on the held-out fold, accuracy against the labels:
medians over folds (min..max). --count counts fold 0's models on the Cortex-A76 (trainer.pi_cost;
`make pi-cost` builds the counter).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np  # noqa: E402

from bench_int8 import Study, a76_counts, calibrated, quantized  # noqa: E402
from bench_trust import head_arguments, tflite_scores  # noqa: E402
from trainer import pi_cost  # noqa: E402
from trainer.convert import (  # noqa: E402
    DEFAULT_CALIBRATION_IMAGES, convert_model, float_layer_choice, preserving_interpreter,
)

HISTOGRAM_BINS = 2048  # per feature map, over the range the calibrator recorded
LEVELS = 256  # int8
FEATURE_MAP_OPERATORS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD")
# The MSE search: each end of the recorded range scaled by one of these factors.
MSE_FACTORS = np.linspace(0.05, 1.0, 96)
AEQ_PYTHON = Path.home() / ".cache" / "retrain-edge" / "aeq-venv" / "bin" / "python"
RANGES = ("99.9th percentile", "99.99th percentile", "MSE")
AEQ_RANGES = "MSE"  # the ranges given to ai-edge-quantizer's "given ranges" recipes
FULL, DEFAULT = "full int8, min-max (TensorFlow)", "default, min-max (TensorFlow)"  # the baselines


def feature_maps(calibrated_model: bytes) -> dict[int, tuple[float, float]]:
    """Tensor index -> recorded (min, max), for the outputs of FEATURE_MAP_OPERATORS."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated_model))
    graph = model.subgraphs[0]
    kinds = {code: name for name, code in vars(flatbuffer_utils.schema_fb.BuiltinOperator).items()
             if not name.startswith("_")}
    recorded = {}
    for operator in graph.operators:
        code = model.operatorCodes[operator.opcodeIndex]
        if kinds.get(max(code.builtinCode, code.deprecatedBuiltinCode)) not in FEATURE_MAP_OPERATORS:
            continue
        index = int(operator.outputs[0])
        quantization = graph.tensors[index].quantization
        if index not in graph.outputs and quantization is not None and quantization.min is not None:
            recorded[index] = (float(quantization.min[0]), float(quantization.max[0]))
    return recorded


def activation_histograms(calibrated_model: bytes, calibration: np.ndarray,
                          recorded: dict[int, tuple[float, float]]) -> dict[int, np.ndarray]:
    """Tensor index -> HISTOGRAM_BINS counts of its values over the calibration images, on its
    recorded range (which holds them all: the calibrator saw the same images)."""
    interpreter = preserving_interpreter(calibrated_model)
    input_index = interpreter.get_input_details()[0]["index"]
    histograms = {index: np.zeros(HISTOGRAM_BINS, np.int64) for index in recorded}
    for image in calibration:
        interpreter.set_tensor(input_index, image[np.newaxis])
        interpreter.invoke()
        for index, (low, high) in recorded.items():
            values = interpreter.get_tensor(index).ravel()
            bins = np.clip(((values - low) * (HISTOGRAM_BINS / max(high - low, 1e-12))).astype(np.int64),
                           0, HISTOGRAM_BINS - 1)
            histograms[index] += np.bincount(bins, minlength=HISTOGRAM_BINS)
    return histograms


def percentile_range(histogram: np.ndarray, low: float, high: float, percentile: float) -> tuple[float, float]:
    """The range from the (100 - p)th to the pth percentile of the values, widened to hold 0 (as
    int8 ranges must), at bin edges: the upper edge of the top bin kept, the lower of the bottom."""
    width = (high - low) / len(histogram)
    cumulative = np.cumsum(histogram) / histogram.sum()
    top = int(np.searchsorted(cumulative, percentile / 100))
    bottom = int(np.searchsorted(cumulative, 1 - percentile / 100, side="right"))
    return min(low + bottom * width, 0.0), max(low + (top + 1) * width, 0.0)


def mse_range(histogram: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The range of least expected squared error over the values: rounding error (step^2 / 12)
    for each value inside, the distance to the nearer end squared for each outside, the values at
    their bins' centres. Candidates scale each end of the recorded range (made to hold 0) by
    MSE_FACTORS; the clipping errors come from prefix sums of the counts and their moments."""
    low, high = min(low, 0.0), max(high, 0.0)
    centres = low + (np.arange(len(histogram)) + 0.5) * (high - low) / len(histogram)
    counts = np.concatenate([[0], np.cumsum(histogram)])
    firsts = np.concatenate([[0], np.cumsum(histogram * centres)])
    seconds = np.concatenate([[0], np.cumsum(histogram * centres ** 2)])
    lows, highs = low * MSE_FACTORS, high * MSE_FACTORS
    below = np.searchsorted(centres, lows)  # values below each candidate low: bins [0, below)
    above = np.searchsorted(centres, highs, side="right")  # values above each candidate high: bins [above, end)
    below_error = lows ** 2 * counts[below] - 2 * lows * firsts[below] + seconds[below]
    above_error = (highs ** 2 * (counts[-1] - counts[above]) - 2 * highs * (firsts[-1] - firsts[above])
                   + seconds[-1] - seconds[above])
    inside = counts[above][None, :] - counts[below][:, None]
    step = (highs[None, :] - lows[:, None]) / (LEVELS - 1)
    error = inside * step ** 2 / 12 + below_error[:, None] + above_error[None, :]
    best_low, best_high = np.unravel_index(int(np.argmin(error)), error.shape)
    return float(lows[best_low]), float(highs[best_high])


def with_ranges(calibrated_model: bytes, ranges: dict[int, tuple[float, float]]) -> bytes:
    """The calibrated model with the recorded (min, max) of some tensors replaced, for mlir_quantize."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated_model))
    for index, (low, high) in ranges.items():
        quantization = model.subgraphs[0].tensors[index].quantization
        quantization.min, quantization.max = np.array([low], np.float32), np.array([high], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def clipped_ranges(calibrated_model: bytes, calibration: np.ndarray) -> dict[str, dict[int, tuple[float, float]]]:
    """RANGES name -> the new range of each feature map."""
    recorded = feature_maps(calibrated_model)
    histograms = activation_histograms(calibrated_model, calibration, recorded)
    ranges = {name: {} for name in RANGES}
    for index, (low, high) in recorded.items():
        for name in RANGES:
            ranges[name][index] = (mse_range(histograms[index], low, high) if name == "MSE" else
                                   percentile_range(histograms[index], low, high, float(name.split("th")[0])))
    return ranges


def aeq_models(aeq_python: Path, float_model: bytes, calibration: np.ndarray, float_names: list[str],
               ranges: dict[str, tuple[float, float]], work: Path) -> dict[str, bytes]:
    """ai-edge-quantizer's recipes (scripts/aeq_quantize.py in its venv) -> recipe name -> model.

    float_names: output tensors of layers to keep in float; ranges: tensor name -> activation range
    to use instead of the calibrated one (both for the recipes that take them)."""
    out = work / "aeq"
    out.mkdir(exist_ok=True)
    (work / "float.tflite").write_bytes(float_model)
    np.save(work / "calibration.npy", calibration)
    (work / "float_names.json").write_text(json.dumps(float_names))
    (work / "ranges.json").write_text(json.dumps(ranges))
    result = subprocess.run([str(aeq_python), str(REPO / "scripts" / "aeq_quantize.py"), str(work / "float.tflite"),
                             str(work / "calibration.npy"), str(out), "--float_names", str(work / "float_names.json"),
                             "--ranges", str(work / "ranges.json")], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"scripts/aeq_quantize.py failed:\n{result.stderr[-3000:]}")
    return {name: (out / f"{name}.tflite").read_bytes() for name in result.stdout.split()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    head_arguments(parser)
    parser.add_argument("--count", action="store_true", help="count fold 0's variants on the Cortex-A76")
    parser.add_argument("--aeq_python", type=Path, default=AEQ_PYTHON, help="python of ai-edge-quantizer's venv")
    arguments = parser.parse_args()
    if not arguments.image_dir.is_dir():
        sys.exit(f"{arguments.image_dir} not found: pass --image_dir and --weights")
    if arguments.count and pi_cost.find_counter() is None:
        sys.exit(f"--count needs the Pi counter: {pi_cost.HOW_TO_BUILD}")
    use_aeq = arguments.aeq_python.is_file()
    if not use_aeq:
        print(f"ai-edge-quantizer rows skipped: no {arguments.aeq_python} (see this script's docstring)", file=sys.stderr)
    study = Study(arguments)
    agrees: dict[str, list[np.ndarray]] = {}  # variant -> per fold, whether each held-out photo agrees with Keras
    accuracies: dict[str, list[float]] = {}
    fold0: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for fold in study.folds(work):
            calibration = study.calibration(fold, DEFAULT_CALIBRATION_IMAGES)
            model_bytes, errors, layers = calibrated(fold.model, calibration)
            default = float_layer_choice(errors, layers, None)
            variants = {FULL: quantized(model_bytes, []), DEFAULT: quantized(model_bytes, default)}
            clipped = clipped_ranges(model_bytes, calibration)
            for name, ranges in clipped.items():
                variants[f"full int8, {name}"] = quantized(with_ranges(model_bytes, ranges), [])
                variants[f"default, {name}"] = quantized(with_ranges(model_bytes, ranges), default)
            if use_aeq:
                names = tensor_names(model_bytes)
                variants.update(aeq_models(arguments.aeq_python, convert_model(fold.model, "float32"), calibration, default,
                                           {names[index]: bounds for index, bounds in clipped[AEQ_RANGES].items()}, work))
            for name, tflite_bytes in variants.items():
                top1 = tflite_scores(tflite_bytes, study.images.labels, study.pixels[fold.held_out], work)[0].argmax(1)
                agrees.setdefault(name, []).append(top1 == fold.keras_top1)
                accuracies.setdefault(name, []).append(float(np.mean(top1 == study.labels[fold.held_out])))
                if fold.number == 0:
                    fold0[name] = tflite_bytes
            accuracies.setdefault("Keras", []).append(float(np.mean(fold.keras_top1 == study.labels[fold.held_out])))

        counted = a76_counts(fold0, work) if arguments.count else {}

    print(f"\nint8 candidates: {study.description()}; Keras accuracy {summary(accuracies['Keras'])}; "
          f"A76 count of fold 0's model; {study.seconds():.0f} s")
    print("agreement and accuracy: median (min..max) over folds; vs full int8 and vs default: photos over all folds "
          "that agree with Keras here and not in TensorFlow's full int8 (or default) model, and the other way round")
    width = max(map(len, agrees)) + 2
    full = counted.get(FULL)
    print(f"{'variant':<{width}}{'agreement':<24}{'accuracy':<24}{'vs full int8':>13}{'vs default':>12}{'A76 counted':>20}")
    for name, folds in agrees.items():
        count_text = f"{counted[name] / 1e6:.1f} M ({counted[name] / full:.3f}x)" if counted else "n/a (--count)"
        print(f"{name:<{width}}{summary([float(np.mean(fold)) for fold in folds]):<24}{summary(accuracies[name]):<24}"
              f"{paired(folds, agrees[FULL]):>13}{paired(folds, agrees[DEFAULT]):>12}{count_text:>20}")


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.1%} ({min(values):.1%}..{max(values):.1%})"


def paired(folds: list[np.ndarray], baseline: list[np.ndarray]) -> str:
    """+photos that agree only here / -photos that agree only in the baseline, over all folds."""
    return f"+{sum(int(np.sum(a & ~b)) for a, b in zip(folds, baseline))}/-{sum(int(np.sum(b & ~a)) for a, b in zip(folds, baseline))}"


def tensor_names(tflite_bytes: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return [detail["name"] for detail in Interpreter(model_content=tflite_bytes).get_tensor_details()]


if __name__ == "__main__":
    main()
