"""`retrain-edge`: a thin Typer layer over the trainer library.

Each command fills an options dataclass, calls one library function and prints its result.
Flags keep the classic retrain.py names and also accept the dashed spelling.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from edge.logs import OneLineUsageErrorsGroup, setup_logging, start_up_lines_hidden
from trainer import UserError
from trainer.backbones import DEFAULT_ARCHITECTURE
from trainer.bottlenecks import default_bottleneck_dir
from trainer.crossval import DEFAULT_REPEATS

app = typer.Typer(
    cls=OneLineUsageErrorsGroup,
    help="Retrain an image classifier's final layer on your photos, then convert it for a Raspberry Pi.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
INSTALL_TRAIN_EXTRA = "pip install 'retrain-edge[train]'"
# Where TensorFlow 2.21 has wheels, as (platform.system(), platform.machine()) and Pythons: the
# train extra's markers in pyproject.toml leave it out elsewhere (tests/test_platforms.py keeps
# the two in step), so the install succeeds there and the command says why it cannot train.
TENSORFLOW_PLATFORMS = {("Linux", "x86_64"), ("Linux", "aarch64"), ("Darwin", "arm64"), ("Windows", "AMD64")}
TENSORFLOW_PYTHONS = ((3, 10), (3, 13))  # oldest, newest
TRAINING_PLATFORMS = "Linux (x86_64 or aarch64), Windows x86_64 or macOS on Apple silicon"
# TensorFlow's C++ log threshold without --verbose: errors only, no start-up information or warnings.
QUIET_TF_LOG_LEVEL = "2"


def setup_output(verbose: bool) -> None:
    """Our packages' messages on stderr; TensorFlow's and absl's start-up lines only with --verbose.

    TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, when it is first imported, so this runs before
    any command imports it; a value the user exported counts only with --verbose. The lines it
    writes before absl's logging is initialised ignore that level: `require_training_extra`
    filters them out of the import.
    """
    setup_logging(verbose)
    if not verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = QUIET_TF_LOG_LEVEL


def missing_tensorflow_message(system: str, machine: str, python: tuple[int, int]) -> str:
    """Why TensorFlow is not importable here, and what to do: no wheel exists, or the extra is missing."""
    oldest, newest = TENSORFLOW_PYTHONS
    version = "%d.%d" % python
    if not oldest <= python <= newest:
        return (f"TensorFlow 2.21 has no wheel for Python {version}, so the train extra installed without it: "
                f"train in a Python {oldest[0]}.{oldest[1]}-{newest[0]}.{newest[1]} environment "
                f"(edge-classify works on {version})")
    if (system, machine) not in TENSORFLOW_PLATFORMS:
        rosetta = " (on Apple silicon, use an arm64 Python, not one under Rosetta)" if system == "Darwin" else ""
        return (f"TensorFlow 2.21 has no wheel for {system} {machine}, so the train extra installed without it: "
                f"train on {TRAINING_PLATFORMS}{rosetta}")
    return f"this command needs TensorFlow, which the device install leaves out: {INSTALL_TRAIN_EXTRA}"


def require_training_extra() -> None:
    """TensorFlow comes with the `train` extra; a device install has only the runtime.

    This is where every command first imports TensorFlow, which prints its start-up lines then.
    """
    try:
        with start_up_lines_hidden():
            import tensorflow  # noqa: F401
    except ImportError:
        raise UserError(missing_tensorflow_message(platform.system(), platform.machine(), sys.version_info[:2])) from None


def run(function: Callable, *arguments, needs_tensorflow: bool = True):
    """Call a library function; a UserError becomes one line on stderr and exit code 2.

    TensorFlow's absence is checked here, once, for every command that needs it: all but review,
    which must start fast and never imports it.
    """
    try:
        if needs_tensorflow:
            require_training_extra()
        return function(*arguments)
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: finished outputs and cache entries are kept; run again to resume", err=True)
        raise typer.Exit(130) from None


def train_and_report(options) -> None:
    from trainer.calibration import format_perfect_calibration
    from trainer.train import train

    result = train(options)
    for path, true_label, predicted_label in result.misclassified if options.print_misclassified_test_images else ():
        typer.echo(f"misclassified: {path} (true {true_label}, predicted {predicted_label})")
    steps, kept_step = result.run["hyperparameters"]["how_many_training_steps"], result.run["kept_step"]
    if kept_step != steps:
        typer.echo(f"kept the head of step {kept_step} of {steps}: the lowest validation cross entropy")
    for step, reason in result.run["skipped_steps"].items():
        typer.echo(f"skipped {step.replace('_', ' ')}: {reason}")
    calibration = result.run["calibration"]
    if calibration["fitted_on"]:
        typer.echo(f"temperature {calibration['temperature']:.2f}, fitted on {calibration['image_count']} out-of-fold "
                   f"predictions ({calibration['folds']} folds), folded into the final layer; out-of-fold expected "
                   f"calibration error {calibration['out_of_fold_ece']['before']:.1%} before, "
                   f"{calibration['out_of_fold_ece']['after']:.1%} after; "
                   + format_perfect_calibration(calibration["out_of_fold_ece"]["perfectly_calibrated"]))
    if options.choose_regularisation:
        hyperparameters = result.run["hyperparameters"]
        typer.echo(f"chosen by out-of-fold NLL: --weight_decay {hyperparameters['weight_decay']:g} --label_smoothing "
                   f"{hyperparameters['label_smoothing']:g} --how_many_training_steps {steps}")
    if result.test_accuracy is None:
        typer.echo("final test accuracy: n/a (the test set is empty)")
    else:
        typer.echo(f"final test accuracy = {result.test_accuracy:.1%} (N={result.test_count})")
    typer.echo(f"wrote {options.output_dir}/model.keras, labels.txt and run.json; "
               f"TensorBoard: tensorboard --logdir {result.run['summaries_dir']}\n"
               f"next: retrain-edge evaluate --output_dir {options.output_dir} "
               f"(accuracy per class, confusion matrix and mistakes in {options.output_dir}/report.html)")


@app.command("train")
def train_command(
    image_dir: Path = typer.Option(..., "--image_dir", "--image-dir", help="Folder with one sub-folder of images per class."),
    output_dir: Path = typer.Option(Path("retrain_output"), "--output_dir", "--output-dir", help="Where model.keras, labels.txt and run.json go."),
    architecture: str = typer.Option(DEFAULT_ARCHITECTURE, "--architecture", help="Backbone: inception_v3, mobilenet_v1_<alpha>_<size> (or mobilenet_<alpha>_<size>), mobilenet_v2_<alpha>_<size>, mobilenet_v3_small, mobilenet_v3_large."),
    weights: str = typer.Option("imagenet", "--weights", help="Backbone weights: 'imagenet' (Keras download, cached), a Keras no-top weights file, or 'none' (random: tests and offline demos only)."),
    bottleneck_dir: Path = typer.Option(default_bottleneck_dir(), "--bottleneck_dir", "--bottleneck-dir", help="Bottleneck cache, reused across runs; keyed by backbone, weights and image content."),
    summaries_dir: Path = typer.Option(None, "--summaries_dir", "--summaries-dir", help="TensorBoard summaries; one sub-folder per run (default: OUTPUT_DIR/logs)."),
    how_many_training_steps: int = typer.Option(4000, "--how_many_training_steps", "--how-many-training-steps", help="Training steps."),
    learning_rate: float = typer.Option(0.01, "--learning_rate", "--learning-rate", help="SGD learning rate."),
    train_batch_size: int = typer.Option(100, "--train_batch_size", "--train-batch-size", help="Images per training step."),
    eval_step_interval: int = typer.Option(10, "--eval_step_interval", "--eval-step-interval", help="Steps between evaluations."),
    validation_batch_size: int = typer.Option(100, "--validation_batch_size", "--validation-batch-size", help="Validation images per evaluation; -1 for the whole set."),
    test_batch_size: int = typer.Option(-1, "--test_batch_size", "--test-batch-size", help="Test images for the final accuracy; -1 for the whole set."),
    validation_percentage: int = typer.Option(10, "--validation_percentage", "--validation-percentage", min=0, max=100, help="Percent of images for validation (validation accuracy and --early_stopping; the temperature uses k-fold heads and needs none)."),
    testing_percentage: int = typer.Option(10, "--testing_percentage", "--testing-percentage", min=0, max=100, help="Percent of images for the final test."),
    print_misclassified_test_images: bool = typer.Option(False, "--print_misclassified_test_images", "--print-misclassified-test-images", help="List each misclassified test image."),
    output_graph: Path = typer.Option(None, "--output_graph", "--output-graph", help="Also write the model here (classic flag)."),
    output_labels: Path = typer.Option(None, "--output_labels", "--output-labels", help="Also write the labels here (classic flag)."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and random weights: same seed, same model."),
    early_stopping: bool = typer.Option(False, "--early_stopping/--no_early_stopping", "--early-stopping/--no-early-stopping", help="Keep the head of the evaluation step with the lowest validation cross entropy instead of the last step's (default: the last, which was about a point more accurate in cross-validation)."),
    weight_decay: float = typer.Option(0.0, "--weight_decay", "--weight-decay", min=0, help="L2 coefficient on the final layer's weights (features are centred to unit variance first)."),
    label_smoothing: float = typer.Option(0.0, "--label_smoothing", "--label-smoothing", min=0, max=0.99, help="Share of each training target spread evenly over all classes."),
    folds: int = typer.Option(5, "--folds", min=2, help="Heads trained on the training and validation images fold by fold (seconds each): the temperature is fitted on every photo's out-of-fold prediction."),
    choose_regularisation: bool = typer.Option(False, "--choose_regularisation", "--choose-regularisation", help="Choose --weight_decay, --label_smoothing and --how_many_training_steps (up to the given count) from a small grid by out-of-fold NLL; the chosen values go in run.json. Costs 6 runs per fold. Off by default: on flowers it improved calibrated NLL slightly (in 8 of 10 folds and seeds) but not accuracy."),
    random_crop: int = typer.Option(0, "--random_crop", "--random-crop", min=0, max=100, help="Percent margin to crop from training images at random (classic distortion). Measured on flowers, distortions (crop, scale, brightness 10, flip) moved accuracy by at most a point: +0.9 points across folds, -0.5 on 3,070 unseen photos; choosing the backbone (retrain-edge compare) matters more."),
    random_scale: int = typer.Option(0, "--random_scale", "--random-scale", min=0, max=100, help="Percent to enlarge training images by at random before cropping."),
    random_brightness: int = typer.Option(0, "--random_brightness", "--random-brightness", min=0, max=100, help="Percent to brighten or darken training images by at random."),
    flip_left_right: bool = typer.Option(False, "--flip_left_right", "--flip-left-right", help="Mirror half of the training images (not for text or other handed things)."),
    distortion_variants: int = typer.Option(10, "--distortion_variants", "--distortion-variants", min=0, help="Distorted versions per training image, drawn once and cached beside the bottlenecks; 0 distorts afresh at every step (classic, far slower)."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print informational messages."),
) -> None:
    """Retrain the final layer of a backbone on IMAGE_DIR (the classic retrain.py recipe)."""
    from trainer.distortions import DistortionOptions
    from trainer.train import TrainOptions

    setup_output(verbose)
    options = TrainOptions(
        image_dir=image_dir, output_dir=output_dir, architecture=architecture, weights=weights,
        bottleneck_dir=bottleneck_dir, summaries_dir=summaries_dir,
        how_many_training_steps=how_many_training_steps, learning_rate=learning_rate,
        train_batch_size=train_batch_size, eval_step_interval=eval_step_interval,
        validation_batch_size=validation_batch_size, test_batch_size=test_batch_size,
        validation_percentage=validation_percentage, testing_percentage=testing_percentage,
        print_misclassified_test_images=print_misclassified_test_images,
        output_graph=output_graph, output_labels=output_labels, seed=seed, early_stopping=early_stopping,
        weight_decay=weight_decay, label_smoothing=label_smoothing, folds=folds,
        choose_regularisation=choose_regularisation,
        distortions=DistortionOptions(random_crop, random_scale, random_brightness, flip_left_right, distortion_variants),
    )
    run(train_and_report, options)


def evaluate_and_report(options) -> None:
    from trainer.evaluate import evaluate, format_evaluation

    result = evaluate(options)
    typer.echo(format_evaluation(result))
    typer.echo(f"wrote {result.report_path} and {result.confusion_matrix_path}")


@app.command("evaluate")
def evaluate_command(
    output_dir: Path = typer.Option(Path("retrain_output"), "--output_dir", "--output-dir", help="The output folder of `retrain-edge train` (run.json, model.keras)."),
    model: Path = typer.Option(None, "--model", help="A .keras or .tflite model to evaluate; a .tflite runs through the device's own code (default: OUTPUT_DIR/model.keras)."),
    split: str = typer.Option(None, "--split", help="test, validation, training or all (the split recorded by train; default: test, or all with --image_dir)."),
    image_dir: Path = typer.Option(None, "--image_dir", "--image-dir", help="Evaluate on this folder of class sub-folders instead (split by file name as train splits)."),
    report_dir: Path = typer.Option(None, "--report_dir", "--report-dir", help="Where report.html and confusion_matrix.png go (default: OUTPUT_DIR)."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print informational messages."),
) -> None:
    """Evaluate a model on a split: accuracy, per-class precision/recall/F1, confusion matrix, report.html."""
    from trainer.evaluate import EvaluateOptions

    setup_output(verbose)
    run(evaluate_and_report, EvaluateOptions(output_dir=output_dir, model=model, split=split,
                                             image_dir=image_dir, report_dir=report_dir))


def audit_and_report(options) -> None:
    from trainer.audit import audit, format_audit

    result = audit(options)
    typer.echo(format_audit(result))
    typer.echo(f"wrote {result.report_path}")


@app.command("audit")
def audit_command(
    image_dir: Path = typer.Option(..., "--image_dir", "--image-dir", help="Folder with one sub-folder of images per class."),
    architecture: str = typer.Option(DEFAULT_ARCHITECTURE, "--architecture", help="Backbone whose bottlenecks judge the images (as for train; the cache is shared)."),
    weights: str = typer.Option("imagenet", "--weights", help="Backbone weights: 'imagenet', a Keras no-top weights file, or 'none' (random: skips the search for mislabelled images)."),
    bottleneck_dir: Path = typer.Option(default_bottleneck_dir(), "--bottleneck_dir", "--bottleneck-dir", help="Bottleneck cache, shared with train."),
    validation_percentage: int = typer.Option(10, "--validation_percentage", "--validation-percentage", min=0, max=100, help="Percent of images for validation, as for train."),
    testing_percentage: int = typer.Option(10, "--testing_percentage", "--testing-percentage", min=0, max=100, help="Percent of images for the final test, as for train."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds for finding likely mislabelled images."),
    mislabel_confidence: float = typer.Option(0.8, "--mislabel_confidence", "--mislabel-confidence", help="Flag an image when the cross-validated prediction is another class with at least this probability."),
    near_duplicate_bits: int = typer.Option(32, "--near_duplicate_bits", "--near-duplicate-bits", help="Two images whose perceptual hashes differ in at most this many of 256 bits are near-duplicates (resized or recompressed copies)."),
    report_dir: Path = typer.Option(Path("retrain_output"), "--report_dir", "--report-dir", help="Where audit.html goes."),
    seed: int = typer.Option(0, "--seed", help="Seed for the folds and random weights."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print informational messages."),
) -> None:
    """Find likely problems in IMAGE_DIR before training: duplicates and near-duplicates (a leak when they are in
    different sets), bursts split across sets, likely mislabelled images, small classes."""
    from trainer.audit import AuditOptions

    setup_output(verbose)
    run(audit_and_report, AuditOptions(
        image_dir=image_dir, architecture=architecture, weights=weights, bottleneck_dir=bottleneck_dir, seed=seed,
        validation_percentage=validation_percentage, testing_percentage=testing_percentage, folds=folds,
        mislabel_confidence=mislabel_confidence, near_duplicate_bits=near_duplicate_bits, report_dir=report_dir))


def compare_and_report(options) -> None:
    from trainer.compare import compare, format_compare

    result = compare(options)
    typer.echo(format_compare(result))
    typer.echo(f"wrote {result.html_path} and {result.json_path}")


@app.command("compare")
def compare_command(
    image_dir: Path = typer.Option(..., "--image_dir", "--image-dir", help="Folder with one sub-folder of images per class: every image is scored by k-fold heads."),
    architectures: str = typer.Option(..., "--architectures", help="Comma-separated backbones to compare, named as for train --architecture, e.g. mobilenet_v1_0.25_224,mobilenet_v2_0.35_224,mobilenet_v2_0.5_224."),
    weights: str = typer.Option("imagenet", "--weights", help="Backbone weights as for train: one value for all, or comma-separated, one per architecture."),
    bottleneck_dir: Path = typer.Option(default_bottleneck_dir(), "--bottleneck_dir", "--bottleneck-dir", help="Bottleneck cache, shared with train; the measured sizes and costs and the int8 models are kept here too, so a rerun builds no backbone and converts nothing."),
    report_dir: Path = typer.Option(Path("retrain_output"), "--report_dir", "--report-dir", help="Where compare.html and compare.json go."),
    folds: int = typer.Option(5, "--folds", min=2, help="Cross-validation folds (one head each, seconds on cached bottlenecks)."),
    repeats: int = typer.Option(DEFAULT_REPEATS, "--repeats", min=1, help="Fold assignments (repeated k-fold, salted hashes, bursts in one fold): each photo's correctness is averaged over them, so the ranking depends less on one cut; each costs --folds more heads per backbone. On the flowers, 3 or 5 ranked as held-out photos did in 5 and 4 of 12 splits, 1 in 4: within a split of each other."),
    how_many_training_steps: int = typer.Option(4000, "--how_many_training_steps", "--how-many-training-steps", help="Training steps of each head, as for train."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and random weights, as for train."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print informational messages."),
) -> None:
    """Choose the backbone on your photos for your device: k-fold accuracy (mean ± standard error), each backbone's
    difference to the most accurate (paired on the same photos, ± its standard error), out-of-fold calibration,
    bottleneck time, float32 and int8 TFLite sizes and device cost per backbone; compare.html plots accuracy against
    cost. Recommends the cheapest backbone tied with the most accurate: within one standard error of their paired
    difference.

    The device cost is the full-int8 model's (convert --float_layers 0) Cortex-A76 (Pi 5) instruction count per
    invoke, with the Cortex-A72 (Pi 4) count beside it, when the Pi instruction counter is built (make arm64-check,
    then make pi-cost); without it, x86 full-int8 latency on this machine. The output says which; a rerun after building the counter counts the cached models."""
    from trainer.compare import CompareOptions

    setup_output(verbose)
    run(compare_and_report, CompareOptions(
        image_dir=image_dir, architectures=[name.strip() for name in architectures.split(",") if name.strip()],
        weights=[value.strip() for value in weights.split(",")], bottleneck_dir=bottleneck_dir,
        report_dir=report_dir, folds=folds, repeats=repeats, how_many_training_steps=how_many_training_steps, seed=seed))


def convert_and_report(options) -> None:
    from trainer.convert import convert

    report = convert(options)
    typer.echo(report.table())
    for disagreement in report.disagreements:
        typer.echo(f"disagrees: {disagreement['path']} (Keras {disagreement['keras']}, TFLite {disagreement['tflite']})")
    typer.echo(f"wrote {report.tflite_path} and {report.labels_path}")


@app.command("convert")
def convert_command(
    output_dir: Path = typer.Option(Path("retrain_output"), "--output_dir", "--output-dir", help="The output of `retrain-edge train`: run.json and model.keras are read; model.tflite, labels.txt and the proof in run.json are written here."),
    quantize: bool = typer.Option(False, "--quantize", help="Full-integer int8 with uint8 input and output (same as --quantization int8)."),
    quantization: str = typer.Option(None, "--quantization", help="float32 (default), dynamic (int8 weights), float16, or int8 (uint8 in and out, calibrated)."),
    calibration_images: int = typer.Option(200, "--calibration_images", "--calibration-images", help="Training images to calibrate int8 on, spread over the classes."),
    float_layers: int = typer.Option(None, "--float_layers", "--float-layers", min=0, show_default=False, help="int8 only: keep this many layers of largest int8 error (measured by TensorFlow's quantization debugger) in float, so the model agrees with the Keras one; input and output stay uint8. 0: every layer int8. Default: the worst layers whose float kernels add at most 9.5% to a Raspberry Pi 5's instructions per inference (estimated from their multiply-accumulates)."),
    bias_correction: bool = typer.Option(True, "--bias_correction/--no_bias_correction", "--bias-correction/--no-bias-correction", help="int8 only: after quantising, shift each int8 convolution's int32 bias so that its mean output per channel, over the first 10 calibration images, equals the float model's (post-training bias correction; nothing changes at inference but the biases' values). On the flowers it took mobilenet_v2_0.5_224's top-1 agreement with Keras from 98.3% to 99.1%; it adds a run of the model over those images per depth of convolutions to the conversion: 5 s for that model, 34 s for an Inception v3 on 2 cores (docs/convert.md)."),
    image_dir: Path = typer.Option(None, "--image_dir", "--image-dir", help="Where the training images are now, if they moved since training (default: the run's image_dir)."),
    model: Path = typer.Option(None, "--model", help="Convert this Keras model file instead of OUTPUT_DIR/model.keras (with --labels)."),
    labels: Path = typer.Option(None, "--labels", help="Labels file for --model, one per line in output order (default: the run's labels)."),
    output_tflite: Path = typer.Option(None, "--output_tflite", "--output-tflite", help="Where to write the model; labels.txt goes beside it (default: OUTPUT_DIR/model.tflite)."),
    num_threads: int = typer.Option(None, "--num_threads", "--num-threads", min=1, help="Interpreter threads for the latency measurement (default: all cores)."),
    pi_cost: bool = typer.Option(False, "--pi_cost", "--pi-cost", help="Also count the aarch64 instructions per inference on a Raspberry Pi 4 (Cortex-A72) and 5 (Cortex-A76) under qemu (about a minute); needs the counter that `make arm64-check` then `make pi-cost` build."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show the TFLite converter's log and informational messages."),
) -> None:
    """Convert the trained model to TFLite and prove it against the Keras model on the test split."""
    from trainer.convert import ConvertOptions

    setup_output(verbose)
    if quantize and quantization not in (None, "int8"):
        typer.echo(f"error: --quantize means int8; it cannot be combined with --quantization {quantization}", err=True)
        raise typer.Exit(2)
    options = ConvertOptions(
        output_dir=output_dir, quantization="int8" if quantize else (quantization or "float32"),
        model=model, labels=labels, output_tflite=output_tflite, image_dir=image_dir,
        calibration_images=calibration_images, float_layers=float_layers, bias_correction=bias_correction, num_threads=num_threads, pi_cost=pi_cost,
        verbose=verbose,
    )
    run(convert_and_report, options)


def bottlenecks_and_report(fields: dict) -> None:
    """fields: BeamBottleneckOptions' fields; the dataclass lives beside Beam, which may be absent."""
    try:
        from trainer.beam_bottlenecks import BeamBottleneckOptions, compute_bottlenecks_on_beam
    except ImportError as error:
        if not (error.name or "").startswith("apache_beam"):
            raise
        raise UserError("this command needs Apache Beam, which comes with the beam extra: "
                        "pip install 'retrain-edge[train,beam]'") from None
    with start_up_lines_hidden():  # worker processes (e.g. multi_processing) load TensorFlow anew
        result = compute_bottlenecks_on_beam(BeamBottleneckOptions(**fields))
    typer.echo(f"{result.images} images: {result.cached} already cached, {result.computed} computed, "
               f"{result.bad_images} skipped (not decodable images; the runner's log names them)\n"
               f"cache: {result.cache_folder}")


@app.command("bottlenecks", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bottlenecks_command(
    context: typer.Context,
    image_dir: str = typer.Option(..., "--image_dir", "--image-dir", help="Folder with one sub-folder of images per class: a local path or any Beam file system URI (gs://bucket/photos, s3://...)."),
    architecture: str = typer.Option(DEFAULT_ARCHITECTURE, "--architecture", help="Backbone, as for train."),
    weights: str = typer.Option("imagenet", "--weights", help="Backbone weights, as for train: 'imagenet', a Keras no-top weights file (at this path on every worker), or 'none' (random: tests only)."),
    bottleneck_dir: str = typer.Option(str(default_bottleneck_dir()), "--bottleneck_dir", "--bottleneck-dir", help="Bottleneck cache root, local or a URI; give train the same folder (or a copy of it) and it computes nothing."),
    seed: int = typer.Option(0, "--seed", help="Seed of random weights (--weights none), as for train."),
    runner: str = typer.Option("DirectRunner", "--runner", help="Beam runner: DirectRunner (this machine), DataflowRunner, FlinkRunner, SparkRunner, PortableRunner."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print informational messages."),
) -> None:
    """Compute the bottleneck cache for IMAGE_DIR on Apache Beam, for datasets past one machine.

    Any other --option goes to Beam as a pipeline option, e.g. --direct_running_mode multi_processing
    --direct_num_workers 2, or --project P --region R --temp_location gs://B/tmp for Dataflow.
    Needs Apache Beam: the beam extra, installed beside the train extra.
    """
    setup_output(verbose)
    run(bottlenecks_and_report, dict(
        image_dir=image_dir, bottleneck_dir=bottleneck_dir, architecture=architecture, weights=weights, seed=seed,
        runner=runner, pipeline_args=tuple(context.args)))


def review_and_report(options) -> None:
    from trainer.review_page import review

    summary = review(options, on_serving=lambda url: typer.echo(
        f"review at {url} (keys: the class's number or letter, x discards, u undoes); "
        "the page's done button or Ctrl-C ends it"))
    typer.echo(str(summary))


@app.command("review")
def review_command(
    source: Path = typer.Argument(None, help="Folder of class folders to label: edge-classify's --save_uncertain or --collect output (its uncertain.jsonl gives the scores)."),
    into: Path = typer.Option(None, "--into", help="DATA: the dataset the photos go into, one folder per class (made when needed)."),
    audit: Path = typer.Option(None, "--audit", help="Review the photos `retrain-edge audit` flagged as likely mislabelled, in place: its --report_dir, holding audit.json (no SOURCE or --into)."),
    serve: str = typer.Option(None, "--serve", help="[HOST:]PORT of the page (default: 127.0.0.1:8780, this machine only); on another address anyone who reaches it sees the photos."),
    read_only: bool = typer.Option(False, "--read_only", "--read-only", help="Show the page and refuse every change: for sharing a view."),
    thumbnail_dir: Path = typer.Option(None, "--thumbnail_dir", "--thumbnail-dir", help="Cache of thumbnails, made once per photo (default: ~/.cache/retrain-edge/thumbnails)."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print informational messages."),
) -> None:
    """Label photos in a local page: each goes by an atomic rename into DATA/<class>/ or SOURCE/.discarded/,
    journalled, undoable; no TensorFlow needed."""
    from trainer.review import DEFAULT_REVIEW_ADDRESS, ReviewOptions, default_thumbnail_dir

    setup_logging(verbose)
    run(review_and_report, ReviewOptions(source=source, into=into, audit=audit, serve=serve or DEFAULT_REVIEW_ADDRESS, read_only=read_only,
                                         thumbnail_dir=thumbnail_dir or default_thumbnail_dir()),
        needs_tensorflow=False)


@app.callback()
def commands() -> None:
    """retrain-edge: train on IMAGE_DIR, convert to TFLite, evaluate; label new photos with review; run the
    result with edge-classify."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
