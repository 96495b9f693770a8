"""Quantize a float .tflite with ai-edge-quantizer's static int8 recipes (run in its own venv).

    AEQ=~/.cache/retrain-edge/aeq-venv
    python3 -m venv $AEQ && $AEQ/bin/pip install ai-edge-quantizer==0.10.0
    $AEQ/bin/python scripts/aeq_quantize.py FLOAT.tflite CALIBRATION.npy OUT_DIR [--float_names NAMES.json]

scripts/bench_quantizer.py runs it; it is a separate program because ai-edge-quantizer brings its
own ai-edge-litert and numpy, not the project's, and needs no TensorFlow. CALIBRATION.npy holds
float32 (N, H, W, 3) normalised images (convert's calibration images); NAMES.json a list of the
output tensor names of layers to keep in float. Writes one OUT_DIR/<recipe>.tflite per recipe
(RECIPES) and prints nothing else but their names.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from ai_edge_quantizer import calibrator, quantizer, recipe
from ai_edge_quantizer.algorithm_manager import AlgorithmName
from ai_edge_quantizer.qtyping import TFLOperationName
from ai_edge_quantizer.utils import qsv_utils

# recipe name -> (weight algorithm, activation ranges by moving average of each image's min/max
# (ai-edge-quantizer's default) rather than the min/max of all images (TensorFlow's), layers kept in float)
RECIPES = {
    "aeq_minmax_moving_average": (AlgorithmName.MIN_MAX_UNIFORM_QUANT, True, False),
    "aeq_minmax_global": (AlgorithmName.MIN_MAX_UNIFORM_QUANT, False, False),
    "aeq_mse_weights": (AlgorithmName.MSE, True, False),
    "aeq_octav_weights": (AlgorithmName.OCTAV, True, False),
    "aeq_minmax_moving_average_float_layers": (AlgorithmName.MIN_MAX_UNIFORM_QUANT, True, True),
}


def quantized(float_model: bytes, calibration: np.ndarray, algorithm: str, moving_average: bool,
              float_names: list[str]) -> bytes:
    """The float model with int8 weights (per channel) and int8 activations (per tensor)."""
    qt = quantizer.Quantizer(float_model, recipe.static_wi8_ai8(algorithm))
    for name in float_names:  # the op whose output tensor is `name` stays in float (its scope: output names, each with a ";")
        qt.update_quantization_recipe(f"^{re.escape(name)};$", TFLOperationName.ALL_SUPPORTED,
                                      algorithm_key=AlgorithmName.NO_QUANTIZE)
    update = qsv_utils.moving_average_update if moving_average else qsv_utils.min_max_update
    calibrate = calibrator.Calibrator(float_model, num_threads=1, qsv_update_func=update)
    (signature, inputs), = Interpreter(model_content=float_model).get_signature_list().items()
    input_name = inputs["inputs"][0]
    calibrate.calibrate({signature: [{input_name: image[np.newaxis]} for image in calibration]},
                        qt._recipe_manager)  # Quantizer.calibrate takes no update function; its recipe does
    return bytes(qt.quantize(calibrate.get_model_qsvs(), enable_progress_report=False).quantized_model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("float_model", type=Path)
    parser.add_argument("calibration", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--float_names", type=Path, help="JSON list of output tensor names to keep in float")
    arguments = parser.parse_args()
    float_model = arguments.float_model.read_bytes()
    calibration = np.load(arguments.calibration)
    float_names = json.loads(arguments.float_names.read_text()) if arguments.float_names else []
    for name, (algorithm, moving_average, keep_float) in RECIPES.items():
        if keep_float and not float_names:
            continue
        model = quantized(float_model, calibration, algorithm, moving_average, float_names if keep_float else [])
        (arguments.out_dir / f"{name}.tflite").write_bytes(model)
        print(name, flush=True)


if __name__ == "__main__":
    main()
