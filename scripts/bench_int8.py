"""Benchmark how int8 layers are chosen for float: agreement with Keras by k-fold, cost on a Pi 5.

    python scripts/bench_int8.py [--image_dir ../shared/data/flowers] [--folds 5] [--steps 4000] [--seeds 0]
        [--architecture mobilenet_v2_0.5_224] [--weights ../shared/data/weights/...0.5_224_no_top.h5]
        [--float_layers 3,10] [--bottleneck_dir DIR] [--count] [--layer_costs] [--int8_head]
        [--bias_correction] [--bias_images 10] [--bias_newton_steps 1]

The folds, the heads (`retrain-edge train`'s defaults; one per fold, with the first of --seeds)
and the calibration images are scripts/bench_trust.py's. For each fold, TensorFlow's
quantization debugger runs once on the classifier; each variant then leaves other layers of its
calibrated model in float, and the held-out fold runs through LiteRT. Variants:
- full int8, and convert's default (trainer.convert.float_layer_choice: the worst layers by
  error within the Pi 5 instruction budget);
- the N worst layers by error alone (--float_layers);
- cheapest first: the layers of largest error per estimated instruction, within the same budget;
- the same default, calibrated on every training image instead of DEFAULT_CALIBRATION_IMAGES;
- --int8_head: a head fitted to the int8 backbone's own features. The backbone alone is converted
  to full int8 (convert_model, the fold's calibration images), every photo runs through it and
  its dequantised output is the bottleneck the head trains on (train's defaults, same seed); that
  head on the float backbone is then converted like the others, in full int8 and by the default;
- --bias_correction: full int8 and the default, each int8 convolution's int32 bias then shifted so
  that the mean of its dequantised output per channel over the first --bias_images calibration
  images equals the float (calibrated) model's, as `convert --quantize` does by default
  (trainer.convert.bias_corrected; its defaults are convert's).
Agreement is top-1 against Keras on the held-out fold: medians over folds (min..max); accuracy
against the photos' labels, likewise. An --int8_head variant is also compared with its own Keras
classifier (the new head on float features). The cost
column is the estimate of trainer.convert (Layer.float_instructions) on fold 0's model; --count
also counts fold 0's models on the Cortex-A76 (trainer.pi_cost; `make pi-cost` builds the
counter). --layer_costs counts fold 0's model with each convolution of a few sizes alone in float
against its estimate: the figures behind FLOAT_INSTRUCTIONS_PER_MAC.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np  # noqa: E402

from bench_trust import fold_sets, head_arguments, photos, trained_head  # noqa: E402
from edge.image import load_rgb  # noqa: E402
from trainer import pi_cost  # noqa: E402
from trainer.backbones import INPUT_MEAN, INPUT_STD, build_backbone, get_backbone, weights_id  # noqa: E402
from trainer.bottlenecks import BottleneckCache, file_keys, image_bottlenecks, make_forward  # noqa: E402
from trainer.convert import (  # noqa: E402
    BIAS_CORRECTION_IMAGES, BIAS_NEWTON_STEPS, DEFAULT_CALIBRATION_IMAGES, FLOAT_COST_SHARE, INT8_INSTRUCTIONS_PER_MAC,
    bias_corrected, calibrated_layers, calibration_paths, convert_model, float_layer_choice, quantized_except, quiet,
    tflite_converter,
)
from trainer.train import TrainOptions, build_classifier  # noqa: E402

# --layer_costs: one layer of each kind and size, alone in float (names as Keras gives them).
COSTED_LAYERS = ("Conv1_relu", "expanded_conv_depthwise_relu", "block_2_depthwise_relu", "block_3_expand_relu",
                 "block_4_depthwise_relu", "block_6_project_BN", "block_7_depthwise_relu", "block_14_depthwise_relu",
                 "block_16_project_BN", "out_relu")
ALL_IMAGES = 10 ** 6  # calibration_paths takes every training image when asked for more


def cheapest_first(errors, layers) -> list[str]:
    """Largest error per estimated instruction first, within the default's instruction budget."""
    per_instruction = sorted(((error / layers[name].float_instructions(), name) for name, error in errors
                              if name in layers and np.isfinite(layers[name].float_instructions())), reverse=True)
    return float_layer_choice([(name, ratio) for ratio, name in per_instruction], layers, None)


def calibrated(model, calibration: np.ndarray):
    """(calibrated model, layer_errors, model_layers), as selectively_quantized measures them."""
    with tflite_converter(model, "int8", calibration) as converter:
        return calibrated_layers(converter, calibration)


def quantized(calibrated_model: bytes, float_names: list[str]) -> bytes:
    with quiet(False):  # outside tflite_converter's block, which silences the quantiser's log
        return quantized_except(calibrated_model, float_names)


def top1(tflite_bytes: bytes, pixels: np.ndarray) -> np.ndarray:
    return dequantized_outputs(tflite_bytes, pixels).argmax(1)


def dequantized_outputs(tflite_bytes: bytes, pixels: np.ndarray) -> np.ndarray:
    """(N, outputs) float32: the model's output for each uint8 image, through LiteRT, dequantised."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_bytes, num_threads=1)
    interpreter.allocate_tensors()
    input_index, output = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]
    scale, zero_point = output["quantization"]
    outputs = []
    for image in pixels:
        interpreter.set_tensor(input_index, image[np.newaxis])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output["index"])[0].astype(np.float32))
    outputs = np.stack(outputs)
    return (outputs - zero_point) * scale if scale else outputs


def int8_features(backbone_model, calibration: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Bottlenecks (N, size) through the backbone converted to full int8 as convert does, dequantised."""
    return dequantized_outputs(convert_model(backbone_model, "int8", calibration), pixels)


@dataclass
class Fold:
    """One fold of a Study: the classifier of its head and Keras' answers on its held-out photos."""

    number: int  # from 0
    model: object  # the Keras classifier: the backbone and the fold's head
    keras_top1: np.ndarray  # Keras' class for each held-out photo
    held_out: np.ndarray  # mask over Study.paths
    training_files: dict[str, list[str]]  # label -> the fold's training file names (calibration_paths' input)
    train_mask: np.ndarray  # masks over Study.paths: the head's training and validation photos
    validation_mask: np.ndarray
    options: TrainOptions  # how the head was trained


class Study:
    """The k-fold study of the int8 benchmarks: the photos, their pixels and bottlenecks, and per
    fold (bench_trust's) a head trained as `retrain-edge train` trains it, with the first of --seeds."""

    def __init__(self, arguments: argparse.Namespace):
        self.arguments = arguments
        self.started = time.perf_counter()
        self.images, self.paths, self.labels = photos(arguments.image_dir)
        self.backbone = get_backbone(arguments.architecture)
        self.backbone_model = build_backbone(self.backbone, arguments.weights, 0)
        self.pixels = np.stack([load_rgb(path, self.backbone.input_size) for path in self.paths])
        self.seed = int(arguments.seeds.split(",")[0])

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def description(self) -> str:
        return (f"{self.arguments.architecture} on {self.arguments.image_dir} ({len(self.paths)} images), "
                f"{self.arguments.folds}-fold by the classic hash, seed {self.seed} heads")

    def folds(self, work: Path) -> Iterator[Fold]:
        """Each fold in turn; the bottlenecks are cached in --bottleneck_dir, else under `work`."""
        arguments = self.arguments
        cache = BottleneckCache.for_backbone(arguments.bottleneck_dir or work / "cache", self.backbone,
                                             weights_id(arguments.weights, 0))
        self.bottlenecks = bottlenecks = image_bottlenecks(self.paths, file_keys(self.paths), self.backbone.input_size,
                                                           make_forward(self.backbone_model), cache)
        labels = self.labels
        for fold in range(arguments.folds):
            print(f"fold {fold + 1}/{arguments.folds} ({self.seconds():.0f} s)", file=sys.stderr, flush=True)
            train_mask, validation_mask, held_out = fold_sets([path.name for path in self.paths], fold, arguments.folds)
            options = TrainOptions(image_dir=Path("."), how_many_training_steps=arguments.steps, seed=self.seed)
            head, _ = trained_head(options, bottlenecks[train_mask], labels[train_mask],
                                   bottlenecks[validation_mask], labels[validation_mask], len(self.images.labels))
            training_files = {label: [path.name for path, keep, y in zip(self.paths, train_mask, labels) if keep and y == index]
                              for index, label in enumerate(self.images.labels)}
            yield Fold(fold, build_classifier(self.backbone_model, head), head.probabilities(bottlenecks[held_out]).argmax(1),
                       held_out, training_files, train_mask, validation_mask, options)

    def calibration_indices(self, fold: Fold, count: int) -> list[int]:
        """Where convert's calibration images for the fold (calibration_paths) are in Study.paths."""
        index = {path.name: i for i, path in enumerate(self.paths)}
        return [index[name] for name in calibration_paths(fold.training_files, count)]

    def calibration(self, fold: Fold, count: int) -> np.ndarray:
        """convert's calibration images for the fold, normalised."""
        return (self.pixels[self.calibration_indices(fold, count)].astype(np.float32) - INPUT_MEAN) / INPUT_STD


def a76_counts(models: dict[str, bytes], work: Path) -> dict[str, int]:
    """Name -> instructions per invoke on the Cortex-A76 (one count each: they repeat exactly)."""
    files = {}
    for index, (name, tflite_bytes) in enumerate(models.items()):
        files[name] = work / f"variant{index}.tflite"
        files[name].write_bytes(tflite_bytes)
    by_path = {cost.model: cost.invoke for cost in pi_cost.count(list(files.values()), cpus=("cortex-a76",), repeats=1)}
    return {name: by_path[path.resolve()] for name, path in files.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    head_arguments(parser)
    parser.add_argument("--float_layers", default="3,10", help="also the N worst layers by error alone, for each N")
    parser.add_argument("--count", action="store_true", help="count fold 0's variants on the Cortex-A76")
    parser.add_argument("--layer_costs", action="store_true", help="count fold 0's model with single layers in float")
    parser.add_argument("--int8_head", action="store_true", help="also a head fitted to the int8 backbone's features")
    parser.add_argument("--bias_correction", action="store_true", help="also full int8 and the default, bias-corrected")
    parser.add_argument("--bias_images", type=int, default=BIAS_CORRECTION_IMAGES,
                        help="calibration images that bias correction measures the means on")
    parser.add_argument("--bias_newton_steps", type=int, default=BIAS_NEWTON_STEPS,
                        help="bias correction's runs of the model per depth of convolutions")
    arguments = parser.parse_args()
    if not arguments.image_dir.is_dir():
        sys.exit(f"{arguments.image_dir} not found: pass --image_dir and --weights")
    if (arguments.count or arguments.layer_costs) and pi_cost.find_counter() is None:
        sys.exit(f"--count and --layer_costs need the Pi counter: {pi_cost.HOW_TO_BUILD}")
    study = Study(arguments)
    labels, pixels = study.labels, study.pixels
    agreements: dict[str, list[float]] = {}
    accuracies: dict[str, list[float]] = {"Keras": []}
    own_agreements: dict[str, list[float]] = {}  # --int8_head variants: with the Keras classifier of their own head
    fold0: dict[str, tuple[bytes, float, int]] = {}  # variant -> (model, estimated cost / full int8, layers in float)
    with tempfile.TemporaryDirectory() as work:
        for fold in study.folds(Path(work)):
            model, keras_top1, held_out = fold.model, fold.keras_top1, fold.held_out
            accuracies["Keras"].append(float(np.mean(keras_top1 == labels[held_out])))
            variants, own_keras = {}, {}
            for count, suffix in ((DEFAULT_CALIBRATION_IMAGES, ""), (ALL_IMAGES, ", every training image calibrates")):
                calibration = study.calibration(fold, count)
                model_bytes, errors, layers = calibrated(model, calibration)
                full_cost = INT8_INSTRUCTIONS_PER_MAC * sum(layer.macs for layer in layers.values())
                choices = {"full int8": [], "default: worst by error within the Pi 5 budget":
                           float_layer_choice(errors, layers, None)}
                if not suffix:
                    choices.update((f"{count} worst by error", float_layer_choice(errors, layers, int(count)))
                                   for count in arguments.float_layers.split(","))
                    choices["cheapest first: error per instruction, same budget"] = cheapest_first(errors, layers)
                for name, float_names in choices.items():
                    estimate = 1 + sum(layers[layer].float_instructions() for layer in float_names) / full_cost
                    variants[f"{name}{suffix}"] = (quantized(model_bytes, float_names), estimate, len(float_names))
                if not suffix and arguments.bias_correction:
                    bias_pixels = pixels[study.calibration_indices(fold, count)[:arguments.bias_images]]
                    for name in ("full int8", "default: worst by error within the Pi 5 budget"):
                        tflite_bytes, estimate, float_count = variants[name]
                        variants[f"{name}, bias-corrected"] = (bias_corrected(tflite_bytes, model_bytes, bias_pixels,
                                                                              newton_steps=arguments.bias_newton_steps),
                                                               estimate, float_count)
                if not suffix and arguments.int8_head:
                    features = int8_features(study.backbone_model, calibration, pixels)
                    int8_head, _ = trained_head(fold.options, features[fold.train_mask], labels[fold.train_mask],
                                                features[fold.validation_mask], labels[fold.validation_mask],
                                                len(study.images.labels))
                    head_bytes, head_errors, head_layers = calibrated(build_classifier(study.backbone_model, int8_head),
                                                                      calibration)
                    head_top1 = int8_head.probabilities(study.bottlenecks[held_out]).argmax(1)
                    accuracies.setdefault("Keras, int8-feature head on float features", []).append(
                        float(np.mean(head_top1 == labels[held_out])))
                    for name, float_names in (("full int8", []), ("default: worst by error within the Pi 5 budget",
                                                                   float_layer_choice(head_errors, head_layers, None))):
                        estimate = 1 + sum(head_layers[layer].float_instructions() for layer in float_names) / full_cost
                        variant = f"int8-feature head, {name}"
                        variants[variant] = (quantized(head_bytes, float_names), estimate, len(float_names))
                        own_keras[variant] = head_top1
                if fold.number == 0 and not suffix and arguments.layer_costs:
                    singles = {layer: [name for name in layers if f"/{layer}" in name.split(";")[0]]
                               for layer in COSTED_LAYERS}
                    layer_costs(model_bytes, {layer: names[0] for layer, names in singles.items() if names}, layers)
            for name, (tflite_bytes, estimate, float_count) in variants.items():
                classes = top1(tflite_bytes, pixels[held_out])
                agreements.setdefault(name, []).append(float(np.mean(classes == keras_top1)))
                accuracies.setdefault(name, []).append(float(np.mean(classes == labels[held_out])))
                if name in own_keras:
                    own_agreements.setdefault(name, []).append(float(np.mean(classes == own_keras[name])))
                if fold.number == 0:
                    fold0[name] = (tflite_bytes, estimate, float_count)

        counted = a76_counts({name: model for name, (model, _, _) in fold0.items()}, Path(work)) if arguments.count else {}

    print(f"\nint8 variants: {study.description()}; top-1 agreement with Keras and accuracy on the held-out fold, "
          f"median (min..max); own: agreement with the Keras classifier of the variant's own head; "
          f"Pi 5 budget {FLOAT_COST_SHARE:.1%}; cost of fold 0's model; {study.seconds():.0f} s")
    print(variant_table(agreements, accuracies, own_agreements, fold0, counted))


def spread(values: list[float]) -> str:
    """A fraction's median over folds (min..max)."""
    return f"{statistics.median(values):.1%} ({min(values):.1%}..{max(values):.1%})"


def variant_table(agreements: dict[str, list[float]], accuracies: dict[str, list[float]],
                  own_agreements: dict[str, list[float]], fold0: dict[str, tuple[bytes, float, int]],
                  counted: dict[str, int]) -> str:
    """The printed table: a row per variant (then the Keras classifiers' accuracy), figures per fold."""
    width = max(map(len, accuracies)) + 2
    full = counted.get("full int8")
    lines = [f"{'variant':<{width}}{'float':>6}  {'agreement':<22}{'accuracy':<22}{'own':<22}{'A76 estimate':>13}"
             f"{'A76 counted':>20}"]
    for name, values in agreements.items():
        _, estimate, float_count = fold0[name]
        count_text = f"{counted[name] / 1e6:.1f} M ({counted[name] / full:.3f}x)" if counted else "n/a (--count)"
        own = spread(own_agreements[name]) if name in own_agreements else ""
        lines.append(f"{name:<{width}}{float_count:>6}  {spread(values):<22}{spread(accuracies[name]):<22}{own:<22}"
                     f"{estimate:>12.3f}x{count_text:>20}")
    lines.extend(f"{name:<{width}}{'':>6}  {'':<22}{spread(values):<22}" for name, values in accuracies.items()
                 if name not in agreements)
    return "\n".join(line.rstrip() for line in lines)


def layer_costs(calibrated_model: bytes, singles: dict[str, str], layers) -> None:
    """Count the model with each of `singles` (short name -> tensor name) alone in float; print count vs estimate."""
    with tempfile.TemporaryDirectory() as work:
        files = {"": Path(work) / "full.tflite"}
        files[""].write_bytes(quantized(calibrated_model, []))
        for index, (short, name) in enumerate(singles.items()):
            files[short] = Path(work) / f"single{index}.tflite"
            files[short].write_bytes(quantized(calibrated_model, [name]))
        costs = {cost.model: cost.invoke for cost in pi_cost.count(list(files.values()), cpus=("cortex-a76",), repeats=1)}
    full = costs[files[""].resolve()]
    print(f"\nfold 0, Cortex-A76: full int8 {full / 1e6:.2f} M instructions per invoke; one layer in float:")
    print(f"{'layer':<32}{'kind':<20}{'MACs':>12}{'counted extra':>15}{'estimate':>10}")
    for short, name in singles.items():
        layer = layers[name]
        print(f"{short:<32}{layer.kind:<20}{layer.macs:>12}{(costs[files[short].resolve()] - full) / 1e6:>13.2f} M"
              f"{layer.float_instructions() / 1e6:>8.2f} M", flush=True)


if __name__ == "__main__":
    main()
