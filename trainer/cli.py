"""`retrain-edge`: a thin Typer layer over the trainer library.

Each command fills an options dataclass, calls one library function and prints its result.
Flags keep the classic retrain.py names and also accept the dashed spelling.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from trainer import UserError
from trainer.backbones import DEFAULT_ARCHITECTURE
from trainer.bottlenecks import default_bottleneck_dir

app = typer.Typer(
    help="Retrain an image classifier's final layer on your photos, then convert it for a Raspberry Pi.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
INSTALL_TRAIN_EXTRA = "pip install 'retrain-edge[train]'"


class WarningFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(WarningFormatter())
    for name in ("trainer", "edge"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
        logger.propagate = False


def require_training_extra() -> None:
    """TensorFlow comes with the `train` extra; a device install has only the runtime."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise UserError(f"this command needs TensorFlow, which the device install leaves out: {INSTALL_TRAIN_EXTRA}") from None


def run(function: Callable, *arguments):
    """Call a library function; a UserError becomes one line on stderr and exit code 2."""
    try:
        return function(*arguments)
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: finished outputs and cache entries are kept; run again to resume", err=True)
        raise typer.Exit(130) from None


def train_and_report(options) -> None:
    from trainer.train import train

    require_training_extra()
    result = train(options)
    for path, true_label, predicted_label in result.misclassified if options.print_misclassified_test_images else ():
        typer.echo(f"misclassified: {path} (true {true_label}, predicted {predicted_label})")
    if result.test_accuracy is None:
        typer.echo("final test accuracy: n/a (the test set is empty)")
    else:
        typer.echo(f"final test accuracy = {result.test_accuracy:.1%} (N={result.test_count})")
    typer.echo(f"wrote {options.output_dir}/model.keras, labels.txt and run.json; "
               f"TensorBoard: tensorboard --logdir {result.run['summaries_dir']}")


@app.command("train")
def train_command(
    image_dir: Path = typer.Option(..., "--image_dir", "--image-dir", help="Folder with one sub-folder of images per class."),
    output_dir: Path = typer.Option(Path("retrain_output"), "--output_dir", "--output-dir", help="Where model.keras, labels.txt and run.json go."),
    architecture: str = typer.Option(DEFAULT_ARCHITECTURE, "--architecture", help="Backbone: inception_v3, mobilenet_v1_<alpha>_<size> (or mobilenet_<alpha>_<size>), mobilenet_v2_<alpha>_<size>, mobilenet_v3_small, mobilenet_v3_large."),
    weights: str = typer.Option("imagenet", "--weights", help="Backbone weights: 'imagenet' (Keras download, cached), a Keras no-top weights file, or 'none' (random: tests and offline demos only)."),
    bottleneck_dir: Path = typer.Option(default_bottleneck_dir(), "--bottleneck_dir", "--bottleneck-dir", help="Bottleneck cache, reused across runs; keyed by backbone, weights and image content."),
    summaries_dir: Path = typer.Option(None, "--summaries_dir", "--summaries-dir", help="TensorBoard summaries; one sub-folder per run. [default: OUTPUT_DIR/logs]"),
    how_many_training_steps: int = typer.Option(4000, "--how_many_training_steps", "--how-many-training-steps", help="Training steps."),
    learning_rate: float = typer.Option(0.01, "--learning_rate", "--learning-rate", help="SGD learning rate."),
    train_batch_size: int = typer.Option(100, "--train_batch_size", "--train-batch-size", help="Images per training step."),
    eval_step_interval: int = typer.Option(10, "--eval_step_interval", "--eval-step-interval", help="Steps between evaluations."),
    validation_batch_size: int = typer.Option(100, "--validation_batch_size", "--validation-batch-size", help="Validation images per evaluation; -1 for the whole set."),
    test_batch_size: int = typer.Option(-1, "--test_batch_size", "--test-batch-size", help="Test images for the final accuracy; -1 for the whole set."),
    validation_percentage: int = typer.Option(10, "--validation_percentage", "--validation-percentage", min=0, max=100, help="Percent of images for validation."),
    testing_percentage: int = typer.Option(10, "--testing_percentage", "--testing-percentage", min=0, max=100, help="Percent of images for the final test."),
    print_misclassified_test_images: bool = typer.Option(False, "--print_misclassified_test_images", "--print-misclassified-test-images", help="List each misclassified test image."),
    output_graph: Path = typer.Option(None, "--output_graph", "--output-graph", help="Also write the model here (classic flag)."),
    output_labels: Path = typer.Option(None, "--output_labels", "--output-labels", help="Also write the labels here (classic flag)."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and random weights: same seed, same model."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print informational messages."),
) -> None:
    """Retrain the final layer of a backbone on IMAGE_DIR (the classic retrain.py recipe)."""
    from trainer.train import TrainOptions

    setup_logging(verbose)
    options = TrainOptions(
        image_dir=image_dir, output_dir=output_dir, architecture=architecture, weights=weights,
        bottleneck_dir=bottleneck_dir, summaries_dir=summaries_dir,
        how_many_training_steps=how_many_training_steps, learning_rate=learning_rate,
        train_batch_size=train_batch_size, eval_step_interval=eval_step_interval,
        validation_batch_size=validation_batch_size, test_batch_size=test_batch_size,
        validation_percentage=validation_percentage, testing_percentage=testing_percentage,
        print_misclassified_test_images=print_misclassified_test_images,
        output_graph=output_graph, output_labels=output_labels, seed=seed,
    )
    run(train_and_report, options)


@app.callback()
def commands() -> None:
    """retrain-edge: train on IMAGE_DIR, convert to TFLite, evaluate; run the result with edge-classify."""


def main() -> None:
    app()
