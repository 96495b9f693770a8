"""Quantize a float .tflite with ai-edge-quantizer's static int8 recipes (run in its own venv).

    AEQ=~/.cache/retrain-edge/aeq-venv
    python3 -m venv $AEQ && $AEQ/bin/pip install ai-edge-quantizer==0.10.0
    $AEQ/bin/python scripts/aeq_quantize.py FLOAT.tflite CALIBRATION.npy OUT_DIR [--float_names NAMES.json]
        [--ranges RANGES.json]

scripts/bench_quantizer.py runs it; it is a separate program because ai-edge-quantizer brings its
own ai-edge-litert and numpy, not the project's, and needs no TensorFlow. CALIBRATION.npy holds
float32 (N, H, W, 3) normalised images (convert's calibration images); NAMES.json a list of the
output tensor names of layers to keep in float; RANGES.json {tensor name: [min, max]}, activation
ranges that replace the calibrated ones. Writes one OUT_DIR/<recipe>.tflite per recipe
(RECIPES) and prints nothing else but their names.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from ai_edge_quantizer import calibrator, quantizer, recipe
from ai_edge_quantizer.algorithm_manager import AlgorithmName
from ai_edge_quantizer.qtyping import TFLOperationName
from ai_edge_quantizer.utils import qsv_utils

class Recipe(NamedTuple):
    weights: str  # the weight algorithm
    moving_average: bool  # activation ranges: moving average of each image's min/max (ai-edge-quantizer's
    # default), else the min/max of all images (TensorFlow's)
    float_layers: bool  # the layers of --float_names stay in float
    ranges: bool  # the ranges of --ranges replace the calibrated ones


RECIPES = {
    "aeq_minmax_moving_average": Recipe(AlgorithmName.MIN_MAX_UNIFORM_QUANT, True, False, False),
    "aeq_minmax_global": Recipe(AlgorithmName.MIN_MAX_UNIFORM_QUANT, False, False, False),
    "aeq_mse_weights": Recipe(AlgorithmName.MSE, True, False, False),
    "aeq_octav_weights": Recipe(AlgorithmName.OCTAV, True, False, False),
    "aeq_minmax_moving_average_float_layers": Recipe(AlgorithmName.MIN_MAX_UNIFORM_QUANT, True, True, False),
    "aeq_minmax_global_float_layers": Recipe(AlgorithmName.MIN_MAX_UNIFORM_QUANT, False, True, False),
    "aeq_minmax_global_given_ranges": Recipe(AlgorithmName.MIN_MAX_UNIFORM_QUANT, False, False, True),
    "aeq_minmax_global_given_ranges_float_layers": Recipe(AlgorithmName.MIN_MAX_UNIFORM_QUANT, False, True, True),
}


def quantized(float_model: bytes, calibration: np.ndarray, recipe_: Recipe, float_names: list[str],
              ranges: dict[str, list[float]]) -> bytes:
    """The float model with int8 weights (per channel) and int8 activations (per tensor)."""
    qt = quantizer.Quantizer(float_model, recipe.static_wi8_ai8(recipe_.weights))
    for name in float_names if recipe_.float_layers else []:
        # the op whose output tensor is `name` stays in float (its scope: output names, each with a ";")
        qt.update_quantization_recipe(f"^{re.escape(name)};$", TFLOperationName.ALL_SUPPORTED,
                                      algorithm_key=AlgorithmName.NO_QUANTIZE)
    update = qsv_utils.moving_average_update if recipe_.moving_average else qsv_utils.min_max_update
    calibrate = calibrator.Calibrator(float_model, num_threads=1, qsv_update_func=update)
    (signature, inputs), = Interpreter(model_content=float_model).get_signature_list().items()
    calibrate.calibrate({signature: [{inputs["inputs"][0]: image[np.newaxis]} for image in calibration]},
                        qt._recipe_manager)  # Quantizer.calibrate takes no update function; its recipe does
    qsvs = calibrate.get_model_qsvs()
    for name, (low, high) in ranges.items() if recipe_.ranges else ():
        qsvs[name] = {"min": np.array(low, np.float32), "max": np.array(high, np.float32)}
    return bytes(qt.quantize(qsvs, enable_progress_report=False).quantized_model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("float_model", type=Path)
    parser.add_argument("calibration", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--float_names", type=Path, help="JSON list of output tensor names to keep in float")
    parser.add_argument("--ranges", type=Path, help="JSON {tensor name: [min, max]}: activation ranges to use")
    arguments = parser.parse_args()
    float_model = arguments.float_model.read_bytes()
    calibration = np.load(arguments.calibration)
    float_names = json.loads(arguments.float_names.read_text()) if arguments.float_names else []
    ranges = json.loads(arguments.ranges.read_text()) if arguments.ranges else {}
    tensors = {detail["name"] for detail in Interpreter(model_content=float_model).get_tensor_details()}
    unknown = (set(float_names) | set(ranges)) - tensors
    if unknown:  # names from another conversion of the model: a recipe would silently ignore them
        raise SystemExit(f"not tensors of {arguments.float_model}: {', '.join(sorted(unknown))}")
    for name, recipe_ in RECIPES.items():
        if (recipe_.float_layers and not float_names) or (recipe_.ranges and not ranges):
            continue
        (arguments.out_dir / f"{name}.tflite").write_bytes(quantized(float_model, calibration, recipe_, float_names, ranges))
        print(name, flush=True)


if __name__ == "__main__":
    main()
