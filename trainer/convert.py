"""Conversion: the trained Keras model to a TFLite file, then proof that it still classifies.

Path: Keras model -> `model.export` (SavedModel) -> `TFLiteConverter.from_saved_model`. Never
`from_concrete_functions`: under Keras 3 it writes a model without its weights (NaN outputs).
The labels and the input normalisation travel inside the .tflite as standard TFLite Model
Metadata (trainer/metadata.py; read by `edge.model.read_metadata` without TensorFlow, and by
MediaPipe Tasks and the Task Library), and the labels also in labels.txt beside it.

The proof runs the written file through the edge runtime's own loading and preprocessing
(`edge.model.load_model`) and the Keras model on every test-split image, and records accuracy,
top-1 agreement, the largest probability difference, size and latency in run.json; and top-1
agreement on the validation split too, because the few test images can agree by luck.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from edge.image import ImageError, load_rgb
from edge.model import load_model, parse_labels, quantization_table
from trainer import UserError, pi_cost
from trainer.backbones import INPUT_MEAN, INPUT_STD
from trainer.bottlenecks import progress_bar
from trainer.metadata import add_metadata
from trainer.outputs import LABELS_FILE, MODEL_FILE, RUN_FILE, atomic_output, load_run, write_labels, write_run

log = logging.getLogger(__name__)

MODES = ("float32", "dynamic", "float16", "int8")
TFLITE_FILE = "model.tflite"
DEFAULT_CALIBRATION_IMAGES = 200
# int8 by default leaves in float the layers of largest quantisation error whose float kernels add
# at most this share to a Pi 5's instructions per inference (estimated as below). Chosen on the
# flowers (docs/pi-cost.md): mobilenet_v2_0.5_224 then counts 1.096x full int8's instructions and
# agrees with Keras on 99.2% of unseen photos (k-fold median); the 10 worst layers by error alone,
# the earlier default, cost 1.18x for 99.1%, because the worst layers include the stem convolution,
# the most expensive one to run in float.
FLOAT_COST_SHARE = 0.095
# A Pi 5's (Cortex-A76) extra instructions for one layer run in float instead of int8: per
# multiply-accumulate, and per element going in and out (the dequantise and quantise around it).
# Least squares on scripts/pi_cost.sh counts of mobilenet_v2_0.5_224 with each of 10 layers alone in
# float (docs/pi-cost.md); every one within 0.1 M of its count.
FLOAT_INSTRUCTIONS_PER_MAC = {"DEPTHWISE_CONV_2D": 0.24, "CONV_2D": 0.27, "FULLY_CONNECTED": 0.27}
FLOAT_INSTRUCTIONS_PER_ELEMENT = 0.78
# A full-int8 model's instructions per multiply-accumulate on a Pi 5 (mobilenet_v2_0.5_224: 22.6 M
# instructions for 95.9 M multiply-accumulates), with XNNPACK's dot-product kernels.
INT8_INSTRUCTIONS_PER_MAC = 0.235
# An accuracy this far (fraction) below the Keras model's on the test split earns a warning.
ACCURACY_DROP_WARNING = 0.01
# Top-1 agreement with the Keras model on the validation split below this earns a warning.
AGREEMENT_WARNING = 0.99
# Proof images run through Keras in batches of this many (memory, not speed, bounds it).
KERAS_BATCH_SIZE = 32
# Invocations before timing starts: the first ones pay for XNNPACK's weight packing.
WARMUP_INVOCATIONS = 2
# Calibration images on which the quantisation debugger measures each layer's int8 error.
DEBUG_IMAGES = 50
# Layers left in float hold at most this share of the model's weights: each float weight takes
# 4 bytes instead of 1, so the file grows by at most 3 x this share of the int8 one.
FLOAT_WEIGHTS_SHARE = 0.05
# Bias correction (int8 only) measures each channel's mean output on this many calibration images,
# with this many runs of the model per depth of convolutions (see bias_corrected). On the flowers
# (docs/pi-cost.md) 10 and 1 kept the default's agreement of 50 and 2, at a tenth of the runs: the
# difference between 10 and 50 images was one photo in the worst fold. An Inception v3 takes 34 s
# for it on 2 cores (docs/convert.md); each run is the whole model on LiteRT's builtin kernels.
BIAS_CORRECTION_IMAGES = 10
# Operators whose int32 bias bias correction shifts.
BIASED_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# A channel whose int8 output sits at either end of its range on nearly every element (a ReLU6
# that is almost always off) cannot be moved by its bias: bias correction leaves it alone.
MIN_LINEAR_SHARE = 0.05
BIAS_NEWTON_STEPS = 1  # see BIAS_CORRECTION_IMAGES


@dataclass
class ConvertOptions:
    """Everything `retrain-edge convert` does; the defaults need nothing but a trained output_dir."""

    output_dir: Path = Path("retrain_output")  # run.json and model.keras from `retrain-edge train`
    quantization: str = "float32"  # one of MODES; `--quantize` means "int8"
    model: Path | None = None  # another Keras model file instead of output_dir/model.keras
    labels: Path | None = None  # labels file for --model (default: the run's labels)
    output_tflite: Path | None = None  # default: output_dir/model.tflite; labels.txt goes beside it
    image_dir: Path | None = None  # where the run's images are now (default: run.json's image_dir)
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES  # int8 only; from the training split
    # int8 only: this many layers of largest int8 error kept in float; None: those that fit
    # FLOAT_COST_SHARE of a Pi 5's instructions (see float_layer_choice)
    float_layers: int | None = None
    bias_correction: bool = True  # int8 only: shift the int32 biases to the float model's channel means
    num_threads: int | None = None  # interpreter threads for the proof's latency (default: all cores)
    pi_cost: bool = False  # also count aarch64 instructions per invoke on a Pi 4 and 5 (trainer.pi_cost)
    verbose: bool = False  # show the converter's own log


@dataclass
class ConversionReport:
    """What was written and the proof: TFLite against Keras on the test split (None: no test images)."""

    mode: str
    tflite_path: Path
    labels_path: Path
    size_bytes: int
    input_dtype: str
    output_dtype: str
    calibration_count: int
    conversion_seconds: float
    test_count: int
    float_layers: int = 0  # int8: layers left in float
    bias_correction: bool = False  # int8: biases shifted to the float model's channel means (bias_corrected)
    bias_correction_seconds: float = 0.0  # of conversion_seconds
    validation_count: int = 0
    validation_agreement: float | None = None  # top-1 agreement with Keras on the validation split
    keras_accuracy: float | None = None
    tflite_accuracy: float | None = None
    top1_agreement: float | None = None
    max_probability_difference: float | None = None
    median_latency_ms: float | None = None
    num_threads: int = 1
    disagreements: list[dict] = field(default_factory=list)  # [{"path", "keras", "tflite"}] by label
    pi_instructions: dict[str, int] | None = None  # CPU (trainer.pi_cost.CPUS) -> aarch64 instructions per invoke

    def to_json(self) -> dict:
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}

    def table(self) -> str:
        """The proof as aligned text lines for the terminal."""
        def percent(value):
            return "n/a" if value is None else f"{value:.1%}"
        rows = [
            ("", "Keras", f"TFLite {self.mode}"),
            (f"accuracy (test, N={self.test_count})", percent(self.keras_accuracy), percent(self.tflite_accuracy)),
            ("top-1 agreement (test)", "", percent(self.top1_agreement)),
            (f"top-1 agreement (validation, N={self.validation_count})", "", percent(self.validation_agreement)),
            ("largest probability difference", "",
             "n/a" if self.max_probability_difference is None else f"{self.max_probability_difference:.2g}"),
            ("file size", "", f"{self.size_bytes / 1e6:.2f} MB"),
            (f"median latency ({self.num_threads} threads)", "",
             "n/a" if self.median_latency_ms is None else f"{self.median_latency_ms:.1f} ms/image"),
            ("input / output", "float32 / float32", f"{self.input_dtype} / {self.output_dtype}"),
            *([("layers in float / bias correction", "",
                f"{self.float_layers} / " + (f"on ({self.bias_correction_seconds:.0f} s)" if self.bias_correction
                                             else "off (--bias_correction)"))]
              if self.mode == "int8" else []),
            *((f"instructions per invoke, {pi_cost.PI_NAMES[cpu]} ({cpu})", "",
               f"{self.pi_instructions[cpu] / 1e6:.1f} M" if self.pi_instructions else "n/a (--pi_cost)")
              for cpu in pi_cost.CPUS),
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        return "\n".join(f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}".rstrip() for a, b, c in rows)


@dataclass
class _Source:
    """What convert() needs to know about the model it converts, wherever it came from."""

    model_path: Path
    labels: list[str]
    image_dir: Path | None
    files: dict[str, dict[str, list[str]]] | None  # set name -> label -> relative paths
    input_mean: float
    input_std: float
    architecture: str | None
    has_run: bool


def convert(options: ConvertOptions) -> ConversionReport:
    """Convert, write model.tflite + labels.txt atomically, prove it, record the proof in run.json."""
    if options.quantization not in MODES:
        raise UserError(f"unknown quantization {options.quantization!r}; choose one of {', '.join(MODES)}")
    if options.quantization == "int8" and options.calibration_images < 1:
        raise UserError("--calibration_images must be at least 1")
    if options.float_layers is not None and options.float_layers < 0:
        raise UserError("--float_layers must be 0 (every layer int8) or more")
    if options.pi_cost and pi_cost.find_counter() is None:
        raise UserError(f"--pi_cost needs the Pi instruction counter, which is not built: {pi_cost.HOW_TO_BUILD}")
    source = _source(options)
    tflite_path = Path(options.output_tflite or Path(options.output_dir) / TFLITE_FILE)
    labels_path = tflite_path.parent / LABELS_FILE
    _check_writable(tflite_path)
    model = load_keras_model(source.model_path)
    input_size = tuple(int(side) for side in model.input_shape[1:3])
    if len(source.labels) != model.output_shape[-1]:
        raise UserError(f"{source.model_path} has {model.output_shape[-1]} outputs but there are "
                        f"{len(source.labels)} labels")

    calibration = bias_pixels = None
    if options.quantization == "int8":
        if source.files is None:
            raise UserError("int8 calibration needs the training images: pass --image_dir")
        relpaths = calibration_paths(source.files["training"], options.calibration_images)
        if not relpaths:
            raise UserError("the training split has no images to calibrate int8 on")
        calibration_pixels = _load_images(source.image_dir, relpaths, input_size)
        calibration = normalise(calibration_pixels, source)
        if options.bias_correction:
            bias_pixels = calibration_pixels[:BIAS_CORRECTION_IMAGES]
        if len(relpaths) < options.calibration_images:
            log.info(f"calibrating on all {len(relpaths)} training images")
    test_examples = _test_examples(source)
    test_pixels = _load_images(source.image_dir, [path for path, _ in test_examples], input_size)
    validation_examples = _examples(source, "validation")
    validation_pixels = _load_images(source.image_dir, [path for path, _ in validation_examples], input_size)

    started = time.perf_counter()
    float_layers = options.float_layers if options.quantization == "int8" else 0
    tflite_bytes, float_names, bias_seconds = converted_model(
        model, options.quantization, calibration, options.verbose, float_layers, bias_pixels,
        (source.input_mean, source.input_std))
    if float_names:
        log.info(f"left in float: {', '.join(name.split(';')[0] for name in float_names)}")
    conversion_seconds = time.perf_counter() - started
    tflite_bytes = add_metadata(tflite_bytes, source.labels, source.input_mean, source.input_std, {
        "architecture": source.architecture, "input_size": list(input_size), "quantization": options.quantization})

    # The proof and the count run on the temporary file, so an interrupted or failed proof or count
    # leaves any earlier model in place, beside the outputs and run.json that describe it.
    with atomic_output(tflite_path) as temporary:
        temporary.write_bytes(tflite_bytes)
        runtime = load_model(temporary, num_threads=options.num_threads)
        report = ConversionReport(
            mode=options.quantization, tflite_path=tflite_path, labels_path=labels_path,
            size_bytes=len(tflite_bytes), input_dtype=np.dtype(runtime.input_dtype).name,
            output_dtype=np.dtype(runtime.interpreter.get_output_details()[0]["dtype"]).name,
            calibration_count=0 if calibration is None else len(calibration),
            conversion_seconds=round(conversion_seconds, 2), test_count=len(test_examples),
            num_threads=options.num_threads or os.cpu_count() or 1, float_layers=len(float_names),
            bias_correction=bias_pixels is not None, bias_correction_seconds=round(bias_seconds, 2),
            validation_count=len(validation_examples),
            validation_agreement=prove(model, runtime, normalise(validation_pixels, source), validation_pixels,
                                       validation_examples, source.labels).get("top1_agreement"),
            **prove(model, runtime, normalise(test_pixels, source), test_pixels, test_examples, source.labels),
        )
        if options.pi_cost:
            report.pi_instructions = {cost.cpu: cost.invoke for cost in pi_cost.count([temporary])}
    write_labels(labels_path, source.labels)
    if source.has_run:
        run = load_run(options.output_dir)  # again: train may have rewritten it during the conversion
        run.setdefault("conversion", {})[options.quantization] = report.to_json()
        write_run(options.output_dir, run)
    if report.tflite_accuracy is not None and report.keras_accuracy - report.tflite_accuracy > ACCURACY_DROP_WARNING:
        advice = ("try more --calibration_images, or --quantization float16 or dynamic"
                  if options.quantization == "int8" else "try --quantization float16 or float32")
        log.warning(f"the {options.quantization} model's test accuracy is {report.tflite_accuracy:.1%}, "
                    f"{report.keras_accuracy - report.tflite_accuracy:.1%} below the Keras model's "
                    f"{report.keras_accuracy:.1%}: {advice}")
    if report.validation_agreement is not None and report.validation_agreement < AGREEMENT_WARNING:
        advice = ("try more --float_layers (10 or 15: slower on a Pi 5), --quantization float16 (larger file) "
                  "or more --calibration_images"
                  if options.quantization == "int8" else "try --quantization float16 or float32")
        log.warning(f"the {options.quantization} model agrees with the Keras model on only "
                    f"{report.validation_agreement:.1%} of the validation images (below {AGREEMENT_WARNING:.0%}): "
                    f"{advice}")
    return report


def _source(options: ConvertOptions) -> _Source:
    output_dir = Path(options.output_dir)
    has_run = (output_dir / RUN_FILE).is_file()
    if options.model is None and not has_run:
        raise UserError(f"no {RUN_FILE} in {output_dir}: run `retrain-edge train --image_dir DIR` first "
                        f"(or pass --output_dir, or --model with --labels)")
    run = load_run(output_dir) if has_run else {}
    model_path = Path(options.model) if options.model else output_dir / run.get("model_file", MODEL_FILE)
    if not model_path.is_file():
        hint = "" if options.model else ": run `retrain-edge train` first"
        raise UserError(f"no model at {model_path}{hint}")

    if options.labels is not None:
        if not Path(options.labels).is_file():
            raise UserError(f"labels file {options.labels} does not exist")
        labels = parse_labels(Path(options.labels).read_text(encoding="utf-8"))
    elif run.get("labels"):
        labels = list(run["labels"])
    else:
        raise UserError("pass --labels with --model (there is no run.json to take the labels from)")

    image_dir = Path(options.image_dir) if options.image_dir else (Path(run["image_dir"]) if run.get("image_dir") else None)
    files = run.get("split", {}).get("files")
    if files is None and image_dir is not None:
        from trainer.dataset import list_images

        files = list_images(image_dir).files
    if files is not None:
        files = {set_name: {label: by_label.get(label, []) for label in labels} for set_name, by_label in files.items()}
    return _Source(model_path=model_path, labels=labels, image_dir=image_dir, files=files,
                   input_mean=float(run.get("input_mean", INPUT_MEAN)), input_std=float(run.get("input_std", INPUT_STD)),
                   architecture=run.get("architecture"), has_run=has_run)


def _check_writable(path: Path) -> None:
    """Fail before the slow conversion, not after it, when the output cannot be written."""
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder (give --output_tflite a file name)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


def load_keras_model(path: Path):
    """A Keras model file, loaded quietly, or UserError naming what is wrong with it."""
    import keras

    try:
        with quiet(verbose=False):
            return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises anything from ValueError to zipfile and h5py errors
        raise UserError(f"{path} is not a readable Keras model ({type(error).__name__}: "
                        f"{str(error).strip().splitlines()[0] if str(error).strip() else 'no detail'})") from None


def calibration_paths(training: dict[str, list[str]], count: int) -> list[str]:
    """Up to `count` training images, deterministically, taking classes in turn.

    Within a class the order comes from a hash of each path, which scatters the picks over the
    class's files (not its first few, which may share a shoot) and does not depend on listing order.
    """
    def scattered(paths):
        return sorted(paths, key=lambda path: hashlib.sha1(path.encode()).hexdigest())
    queues = [scattered(paths) for _, paths in sorted(training.items())]
    picked = []
    for rank in range(max((len(queue) for queue in queues), default=0)):
        picked.extend(queue[rank] for queue in queues if rank < len(queue))
        if len(picked) >= count:
            break
    return picked[:count]


def _examples(source: _Source, set_name: str) -> list[tuple[str, int]]:
    """(relative path, label index) of a set's images; none when the images are unknown."""
    if source.files is None:
        return []
    return [(path, index) for index, label in enumerate(source.labels) for path in source.files.get(set_name, {}).get(label, [])]


def _test_examples(source: _Source) -> list[tuple[str, int]]:
    if source.files is None:
        log.warning("no images to prove the converted model on: pass --image_dir to compare it with the Keras model")
        return []
    examples = _examples(source, "testing")
    if not examples:
        log.warning("the test split is empty: the converted model is not compared with the Keras model")
    return examples


def _load_images(image_dir: Path | None, relpaths: list[str], size: tuple[int, int]) -> np.ndarray:
    """uint8 (N, height, width, 3), decoded exactly as in training."""
    missing = [path for path in relpaths if not (image_dir / path).is_file()]
    if missing:
        raise UserError(f"{len(missing)} of the run's images are missing from {image_dir} (e.g. {missing[0]}): "
                        f"pass --image_dir to point at the dataset's current folder")
    try:
        return np.stack([load_rgb(image_dir / path, size) for path in relpaths]) if relpaths else \
            np.zeros((0, *size, 3), np.uint8)
    except ImageError as error:
        raise UserError(f"{error}: the dataset changed since training; pass --image_dir or train again") from None


def normalise(pixels: np.ndarray, source: _Source) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, H, W, 3) model input, exactly the training preprocessing."""
    return (pixels.astype(np.float32) - np.float32(source.input_mean)) / np.float32(source.input_std)


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Send TensorFlow's log lines (Python, absl and C++ on fds 1 and 2) to a discarded file."""
    if verbose:
        yield
        return
    import absl.logging

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    previous_verbosity = absl.logging.get_verbosity()
    absl.logging.set_verbosity(absl.logging.ERROR)
    tf_logger = logging.getLogger("tensorflow")
    previous_level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])
        absl.logging.set_verbosity(previous_verbosity)
        tf_logger.setLevel(previous_level)


@contextlib.contextmanager
def tflite_converter(model, mode: str, calibration: np.ndarray | None = None, verbose: bool = False) -> Iterator:
    """A TFLiteConverter set up for `mode` (see MODES) on the Keras model, valid inside the block.

    calibration: float32 (N, H, W, 3) normalised training images, for int8 (uint8 in and out).
    The converter's errors inside the block become a UserError.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="retrain-edge-export-") as export_dir, quiet(verbose):
        model.export(export_dir, format="tf_saved_model", verbose=verbose)
        converter = tf.lite.TFLiteConverter.from_saved_model(export_dir)
        if mode != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            converter.representative_dataset = lambda: ([image[np.newaxis]] for image in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        try:
            yield converter
        except Exception as error:  # the converter's errors carry its whole log; show the first line
            first_line = (str(error).strip().splitlines() or ["no detail"])[0]
            raise UserError(f"the TFLite converter failed ({first_line}); run again with --verbose "
                            f"to see its log") from None


def convert_model(model, mode: str, calibration: np.ndarray | None = None, verbose: bool = False,
                  float_layers: int | None = 0, bias_pixels: np.ndarray | None = None,
                  normalisation: tuple[float, float] = (INPUT_MEAN, INPUT_STD)) -> bytes:
    """A Keras model -> .tflite bytes in `mode` (see MODES).

    calibration: float32 (N, H, W, 3) normalised training images, for int8 (uint8 in and out).
    float_layers: int8 only; up to this many layers of largest quantisation error stay in float,
    None: convert's default choice (see `float_layer_choice`); 0 quantises every layer.
    bias_pixels: int8 only; uint8 (N, H, W, 3) images (normalised by `normalisation`, mean and
    std) on which `bias_corrected` matches the int8 model's channel means to the float model's;
    None: no bias correction.
    """
    return converted_model(model, mode, calibration, verbose, float_layers, bias_pixels, normalisation)[0]


def converted_model(model, mode: str, calibration: np.ndarray | None = None, verbose: bool = False,
                    float_layers: int | None = 0, bias_pixels: np.ndarray | None = None,
                    normalisation: tuple[float, float] = (INPUT_MEAN, INPUT_STD)) -> tuple[bytes, list[str], float]:
    """`convert_model`, the names of the layers it left in float, and the seconds bias correction took."""
    with tflite_converter(model, mode, calibration, verbose) as converter:
        if mode != "int8" or (float_layers == 0 and bias_pixels is None):
            return converter.convert(), [], 0.0
        if float_layers == 0:
            # Bias correction's float reference is the calibrated model (float, with the int8
            # model's tensor names), which the converter returns so, as for the debugger.
            converter._experimental_calibrate_only = True
            calibrated_model, float_names = converter.convert(), []
        else:
            calibrated_model, errors, layers = calibrated_layers(converter, calibration)
            float_names = float_layer_choice(errors, layers, float_layers)
        tflite_bytes = quantized_except(calibrated_model, float_names)
    started = time.perf_counter()  # outside the block, whose silencing would hide the progress bar
    if bias_pixels is not None:
        tflite_bytes = bias_corrected(tflite_bytes, calibrated_model, bias_pixels, normalisation)
    return tflite_bytes, float_names, time.perf_counter() - started


def layer_errors(debugger) -> list[tuple[str, float]]:
    """(tensor name, RMS error in quantisation steps) per quantised layer, the worst first.

    The debugger runs the float and the quantised layer side by side on its images; an error
    measured in steps of the layer's own output scale says how much worse than the rounding every
    int8 tensor pays the layer is.
    """
    import csv
    import io

    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    errors = [(row["tensor_name"], math.sqrt(float(row["mean_squared_error"])) / float(row["scale"]))
              for row in csv.DictReader(io.StringIO(dump.getvalue())) if float(row["scale"]) > 0]
    return sorted(errors, key=lambda error: -error[1])


@dataclass
class Layer:
    """One operator of a .tflite model, as far as leaving it in float is concerned."""

    kind: str  # the TFLite builtin operator, e.g. "CONV_2D"
    weights: int  # constant weights it holds
    macs: int  # multiply-accumulates per inference (0 for operators without weights)
    elements: int  # elements of its non-constant inputs and its output

    def float_instructions(self) -> float:
        """Estimated extra Pi 5 instructions per inference when it runs in float (inf: a kind not measured)."""
        per_mac = FLOAT_INSTRUCTIONS_PER_MAC.get(self.kind)
        return math.inf if per_mac is None else per_mac * self.macs + FLOAT_INSTRUCTIONS_PER_ELEMENT * self.elements


def model_layers(tflite_bytes: bytes) -> dict[str, Layer]:
    """Output tensor name -> Layer, for each operator of a (float or calibrated) .tflite model."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(tflite_bytes, 0)
    graph = model.Subgraphs(0)
    operator_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}

    def is_constant(tensor) -> bool:
        return model.Buffers(tensor.Buffer()).DataLength() > 0

    layers = {}
    for index in range(graph.OperatorsLength()):
        operator = graph.Operators(index)
        code = model.OperatorCodes(operator.OpcodeIndex())
        # Older files set only DeprecatedBuiltinCode (codes below 127), newer ones BuiltinCode too: take the larger.
        kind = operator_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "")
        inputs = [graph.Tensors(i) for i in operator.InputsAsNumpy() if i >= 0]
        output = graph.Tensors(operator.Outputs(0))
        output_size = int(np.prod(output.ShapeAsNumpy()))
        constants = [tensor.ShapeAsNumpy() for tensor in inputs if is_constant(tensor)]
        macs = 0
        if kind == "CONV_2D":  # filter (out, h, w, in): every output element sums h * w * in products
            macs = output_size * int(np.prod(constants[0][1:]))
        elif kind == "DEPTHWISE_CONV_2D":  # filter (1, h, w, channels)
            macs = output_size * int(constants[0][1] * constants[0][2])
        elif kind == "FULLY_CONNECTED":  # weights (out, in), batch 1
            macs = int(np.prod(constants[0]))
        layers[output.Name().decode()] = Layer(
            kind=kind, weights=sum(int(np.prod(shape)) for shape in constants), macs=macs,
            elements=output_size + sum(int(np.prod(t.ShapeAsNumpy())) for t in inputs if not is_constant(t)))
    return layers


def float_layer_choice(errors: list[tuple[str, float]], layers: dict[str, Layer], count: int | None) -> list[str]:
    """The layers to leave in float: the worst by error first, skipping any that would break a budget.

    errors: `layer_errors`, the worst first; layers: `model_layers` of the calibrated model.
    Together they hold at most FLOAT_WEIGHTS_SHARE of the weights, so the file stays close to the
    full int8 size. count: take the first `count` of those; None (convert's default): also keep
    their estimated extra Pi 5 instructions within FLOAT_COST_SHARE of the full int8 model's, so
    an expensive bad layer (a convolution on a large feature map) gives way to cheaper ones.
    """
    weight_budget = FLOAT_WEIGHTS_SHARE * sum(layer.weights for layer in layers.values())
    instruction_budget = FLOAT_COST_SHARE * INT8_INSTRUCTIONS_PER_MAC * sum(layer.macs for layer in layers.values())
    chosen = []
    for name, _ in errors:
        layer = layers.get(name)
        if layer is None or layer.weights > weight_budget or (count is not None and len(chosen) == count):
            continue
        if count is None:
            if layer.float_instructions() > instruction_budget:
                continue
            instruction_budget -= layer.float_instructions()
        chosen.append(name)
        weight_budget -= layer.weights
    return chosen


def selectively_quantized(converter, calibration: np.ndarray,
                          float_layer_counts: list[int | None]) -> list[tuple[bytes, list[str]]]:
    """int8 with uint8 input and output, except some layers of largest error in float, for each
    entry of float_layer_counts (see `float_layer_choice`; one measurement serves them all):
    (.tflite bytes, names of the layers left in float).

    converter: from `tflite_converter(model, "int8", calibration)`; see `calibrated_layers`.
    """
    calibrated_model, errors, layers = calibrated_layers(converter, calibration)
    chosen = [float_layer_choice(errors, layers, count) for count in float_layer_counts]
    return [(quantized_except(calibrated_model, names), names) for names in chosen]


def calibrated_layers(converter, calibration: np.ndarray) -> tuple[bytes, list[tuple[str, float]], dict[str, Layer]]:
    """The calibrated model of TensorFlow's quantisation debugger, its `layer_errors` and `model_layers`.

    converter: from `tflite_converter(model, "int8", calibration)`. The debugger measures each
    layer's error on DEBUG_IMAGES calibration images; the worst layers (in MobileNets the early
    depthwise convolutions, whose ReLU6 outputs are few and large) are those to leave in float.
    """
    import tensorflow as tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([image[np.newaxis]] for image in calibration[:DEBUG_IMAGES]))
    debugger.run()
    return debugger.calibrated_model, layer_errors(debugger), model_layers(debugger.calibrated_model)


def quantized_except(calibrated_model: bytes, float_names: list[str]) -> bytes:
    """A calibrated model (`calibrated_layers`) as int8 with uint8 input and output, the layers
    float_names in float. The debugger's own selective model takes float input, so it is quantised
    here with the input and output types the device expects."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    return mlir_quantize(calibrated_model, input_data_type=tf.uint8, output_data_type=tf.uint8,
                         denylisted_nodes=float_names)


def biased_layers(tflite_bytes: bytes) -> list[tuple[str, int, int]]:
    """(output tensor name, int32 bias tensor index, depth) of each int8 convolution, in graph order.

    depth: how many such convolutions lie on the longest path from the input to it, itself
    included. Two of the same depth never feed one another (parallel branches, as in Inception),
    so bias correction can measure and shift them together.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(tflite_bytes, 0)
    graph = model.Subgraphs(0)
    kinds = {getattr(schema.BuiltinOperator, kind) for kind in BIASED_KINDS}
    layers, depths = [], {}  # depths: tensor index -> depth of the convolutions behind it
    for index in range(graph.OperatorsLength()):  # a .tflite lists its operators in a valid execution order
        operator = graph.Operators(index)
        code = model.OperatorCodes(operator.OpcodeIndex())
        inputs = operator.InputsAsNumpy()
        depth = max((depths.get(int(tensor), 0) for tensor in inputs if tensor >= 0), default=0)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) in kinds and len(inputs) > 2 and inputs[2] >= 0 \
                and graph.Tensors(inputs[2]).Type() == schema.TensorType.INT32:
            depth += 1
            layers.append((graph.Tensors(operator.Outputs(0)).Name().decode(), int(inputs[2]), depth))
        for output in operator.OutputsAsNumpy():
            depths[int(output)] = depth
    return layers


def preserving_interpreter(tflite_bytes: bytes):
    """A LiteRT interpreter of the model, allocated, that keeps every intermediate tensor after
    invoke(): LiteRT's own kernels, without XNNPACK, whose delegated tensors are not kept."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=tflite_bytes, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


def channel_statistics(tflite_bytes: bytes, pixels: np.ndarray, names: list[str],
                       normalisation: tuple[float, float] = (INPUT_MEAN, INPUT_STD),
                       progress: Callable[[], None] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per channel (last axis) of each named tensor over the uint8 images: (mean dequantised value,
    share of its elements strictly inside the int8 range, which is where a bias shift moves them;
    1 for a float tensor).

    The images reach the model as the edge runtime feeds them: normalised by `normalisation`
    (mean, std) for a float input, through `edge.model.quantization_table` for a quantised one
    (`preserving_interpreter`); `progress` is called after each image.
    """
    interpreter = preserving_interpreter(tflite_bytes)
    details = {detail["name"]: detail for detail in interpreter.get_tensor_details()}
    model_input = interpreter.get_input_details()[0]
    mean, std = normalisation
    table = None
    if model_input["dtype"] != np.float32:
        scale, zero_point = model_input["quantization"]
        table = quantization_table(model_input["dtype"], scale or 1.0, zero_point, mean, std)
    sums, linear, rows = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    for image in pixels:
        if model_input["dtype"] == np.float32:
            image = (image.astype(np.float32) - np.float32(mean)) / np.float32(std)
        elif table is not None:
            image = table[image]
        interpreter.set_tensor(model_input["index"], image[np.newaxis])
        interpreter.invoke()
        for name in names:
            values = interpreter.get_tensor(details[name]["index"])
            values = values.reshape(-1, values.shape[-1])
            rows[name] += len(values)
            scale, zero_point = details[name]["quantization"]
            if values.dtype == np.int8:
                linear[name] += np.sum((values > -128) & (values < 127), axis=0)
                values = (values.astype(np.float64) - zero_point) * scale
            else:
                linear[name] += len(values)
            sums[name] += values.sum(axis=0, dtype=np.float64)
        if progress is not None:
            progress()
    return {name: (sums[name] / rows[name], linear[name] / rows[name]) for name in names}


def with_bias_shift(tflite_bytes: bytes, bias_index: int, shift: np.ndarray) -> bytes:
    """The model with the int32 bias tensor bias_index moved by `shift` (real units, per channel)."""
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(tflite_bytes)
    model = schema.Model.GetRootAsModel(data, 0)
    tensor = model.Subgraphs(0).Tensors(bias_index)
    scales = tensor.Quantization().ScaleAsNumpy()  # input scale x each channel's weight scale
    bias = model.Buffers(tensor.Buffer()).DataAsNumpy().view("<i4")  # a view into `data`
    bias[:] = np.clip(bias.astype(np.int64) + np.round(shift / scales).astype(np.int64), -2 ** 31, 2 ** 31 - 1)
    return bytes(data)


def bias_corrected(tflite_bytes: bytes, float_bytes: bytes, pixels: np.ndarray,
                   normalisation: tuple[float, float] = (INPUT_MEAN, INPUT_STD),
                   newton_steps: int = BIAS_NEWTON_STEPS) -> bytes:
    """Post-training bias correction: each int8 convolution's int32 bias shifted, in graph order,
    so that its mean dequantised output per channel over the uint8 `pixels` equals that of the
    same tensor in the float model `float_bytes` (the calibrated model, whose tensor names the
    int8 one keeps); each layer is measured with the layers before it already corrected.

    Where a fused ReLU6 or the int8 range clips part of a channel, a shift moves the mean by the
    shift times the share of elements left unclipped: the shift is the gap divided by that share
    (a Newton step; `newton_steps` of them, since the share changes as the shift moves elements
    across the clipping points). Each step runs the whole model over the images, for all the
    layers of one depth (`biased_layers`) at once. Shifting every layer at once from one run
    instead overshoots, since each gap also holds the error that the layers before it pass on:
    repeated, it diverged on the flowers model.
    """
    layers = biased_layers(tflite_bytes)
    levels = [[(name, bias_index) for name, bias_index, depth in layers if depth == level]
              for level in sorted({depth for _, _, depth in layers})]
    with progress_bar() as bar:
        task = bar.add_task("bias correction", total=(1 + newton_steps * len(levels)) * len(pixels), rate="")
        step = functools.partial(bar.advance, task)
        targets = channel_statistics(float_bytes, pixels, [name for name, _, _ in layers], normalisation, step)
        for level in levels:
            for _ in range(newton_steps):
                measured = channel_statistics(tflite_bytes, pixels, [name for name, _ in level], normalisation, step)
                for name, bias_index in level:
                    mean, share = measured[name]
                    shift = (targets[name][0] - mean) / np.maximum(share, MIN_LINEAR_SHARE)
                    tflite_bytes = with_bias_shift(tflite_bytes, bias_index,
                                                   np.where(share >= MIN_LINEAR_SHARE, shift, 0))
    return tflite_bytes


def prove(model, runtime, inputs: np.ndarray, pixels: np.ndarray, examples: list[tuple[str, int]],
          labels: list[str]) -> dict:
    """Keras on `inputs` against the TFLite model on `pixels`, through the edge runtime's preprocessing.

    inputs: float32 (N, H, W, 3) normalised; pixels: the same images as uint8 (N, H, W, 3);
    examples: N (relative path, true label index). Returns the ConversionReport proof fields.
    """
    if not examples:
        return {}
    truth = np.array([index for _, index in examples])
    keras_scores = model.predict(inputs, batch_size=KERAS_BATCH_SIZE, verbose=0)
    tensors = [runtime.preprocess(image) for image in pixels]
    for tensor in tensors[:WARMUP_INVOCATIONS]:
        runtime.infer(tensor)
    tflite_scores, latencies = [], []
    for tensor in tensors:
        started = time.perf_counter()
        tflite_scores.append(runtime.infer(tensor))
        latencies.append(time.perf_counter() - started)
    tflite_scores = np.stack(tflite_scores)
    keras_top1, tflite_top1 = keras_scores.argmax(axis=1), tflite_scores.argmax(axis=1)
    return {
        "keras_accuracy": float(np.mean(keras_top1 == truth)),
        "tflite_accuracy": float(np.mean(tflite_top1 == truth)),
        "top1_agreement": float(np.mean(keras_top1 == tflite_top1)),
        "max_probability_difference": float(np.abs(keras_scores - tflite_scores).max()),
        "median_latency_ms": round(float(np.median(latencies)) * 1000, 3),
        "disagreements": [
            {"path": examples[index][0], "keras": labels[keras_top1[index]], "tflite": labels[tflite_top1[index]]}
            for index in np.flatnonzero(keras_top1 != tflite_top1)
        ],
    }
