"""Training: a new softmax layer on cached bottlenecks, then the full model, labels and run.json.

The head is trained in numpy: on a few thousand cached vectors a step is a (batch x d) by
(d x classes) product, and 4000 of them take about a second, with no graph to build.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from trainer import UserError
from trainer.backbones import DEFAULT_ARCHITECTURE, INPUT_MEAN, INPUT_STD, build_backbone, get_backbone, weights_id
from trainer.bottlenecks import BottleneckCache, default_bottleneck_dir, file_keys, image_bottlenecks, make_forward
from trainer.calibration import softmax
from trainer.crossval import DEFAULT_FOLDS, hash_folds, out_of_fold_calibration, out_of_fold_logits
from trainer.dataset import SETS, ImageList, list_images
from trainer.distortions import DistortionOptions, distorted_training_inputs
from trainer.outputs import LABELS_FILE, MODEL_FILE, atomic_output, write_labels, write_run

log = logging.getLogger(__name__)

RUN_FORMAT = 1
# The classic initialiser of the new layer's weights (truncated normal, stddev 0.001).
INITIAL_WEIGHT_STDDEV = 0.001
# At most this many per-evaluation lines are printed; every evaluation still goes to TensorBoard.
PRINTED_EVALUATIONS = 20
# --choose_regularisation tries every combination of these by out-of-fold NLL. Weight decay is the
# L2 coefficient on the layer's weights (inputs are centred to unit variance, so one grid fits
# every backbone); the steps are shares of --how_many_training_steps, read off one run each.
WEIGHT_DECAY_GRID = (0.0, 0.001, 0.01)
LABEL_SMOOTHING_GRID = (0.0, 0.1)
STEP_SHARE_GRID = (0.125, 0.25, 0.5, 1.0)


@dataclass
class TrainOptions:
    """Everything `retrain-edge train` does; the defaults are the classic retrain.py's."""

    image_dir: Path
    output_dir: Path = Path("retrain_output")
    architecture: str = DEFAULT_ARCHITECTURE
    weights: str = "imagenet"  # "imagenet", "none" or a Keras no-top weights file
    bottleneck_dir: Path = field(default_factory=default_bottleneck_dir)
    summaries_dir: Path | None = None  # default: output_dir/logs
    how_many_training_steps: int = 4000
    learning_rate: float = 0.01
    train_batch_size: int = 100
    eval_step_interval: int = 10
    validation_batch_size: int = 100  # -1: the whole validation set at every evaluation
    test_batch_size: int = -1  # -1: the whole test set
    validation_percentage: int = 10
    testing_percentage: int = 10
    print_misclassified_test_images: bool = False
    output_graph: Path | None = None  # classic: also write the model here
    output_labels: Path | None = None  # classic: also write the labels here
    seed: int = 0
    # Keep the head of the evaluation step with the lowest validation cross entropy instead of the
    # last one. Off by default: on flowers it cut cross-validated accuracy by about a point
    # (scripts/bench_trust.py); the temperature fixes the overconfidence without that cost.
    early_stopping: bool = False
    weight_decay: float = 0.0  # L2 coefficient on the final layer's weights
    label_smoothing: float = 0.0  # share of each target spread evenly over all classes
    # Heads trained on the training and validation images fold by fold: the temperature is fitted
    # on their out-of-fold predictions, so every photo counts, not only the validation split.
    folds: int = DEFAULT_FOLDS
    # Pick weight decay, label smoothing and steps from the grids above by out-of-fold NLL.
    choose_regularisation: bool = False
    distortions: DistortionOptions = field(default_factory=DistortionOptions)


@dataclass
class TrainResult:
    output_dir: Path
    validation_accuracy: float | None
    test_accuracy: float | None
    test_count: int
    misclassified: list[tuple[str, str, str]]  # (path, true label, predicted label)
    run: dict


@dataclass
class SoftmaxHead:
    """The new final layer: probabilities = softmax(bottlenecks @ weights + biases)."""

    weights: np.ndarray  # (bottleneck_size, classes)
    biases: np.ndarray  # (classes,)

    def logits(self, bottlenecks: np.ndarray) -> np.ndarray:
        """(n, bottleneck_size) -> (n, classes)"""
        return bottlenecks @ self.weights + self.biases

    def probabilities(self, bottlenecks: np.ndarray) -> np.ndarray:
        """(n, bottleneck_size) -> (n, classes)"""
        return softmax(self.logits(bottlenecks))

    def with_temperature(self, temperature: float) -> "SoftmaxHead":
        """The same layer computing softmax(logits / temperature): the temperature folded in."""
        return SoftmaxHead((self.weights / temperature).astype(np.float32), (self.biases / temperature).astype(np.float32))


def accuracy_and_cross_entropy(head: SoftmaxHead, bottlenecks: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    probabilities = head.probabilities(bottlenecks)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    cross_entropy = float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + 1e-12)))
    return accuracy, cross_entropy


class ClassBalancedSampler:
    """The classic sampling: a random class, then a random image of it, with replacement."""

    def __init__(self, labels: np.ndarray, rng: np.random.Generator):
        self.rng = rng
        self.by_class = np.argsort(labels, kind="stable")
        classes, self.starts, self.counts = np.unique(labels[self.by_class], return_index=True, return_counts=True)

    def batch(self, batch_size: int) -> np.ndarray:
        """(batch_size,) indices into the labels given at construction."""
        classes = self.rng.integers(len(self.counts), size=batch_size)
        offsets = (self.rng.random(batch_size) * self.counts[classes]).astype(np.int64)
        return self.by_class[self.starts[classes] + offsets]


class Summaries:
    """TensorBoard event files: one sub-folder per run, never deleting what is there.

    Written with TensorBoard's own protobuf writer rather than tf.summary: an eager TF op per
    scalar cost more than the 4000 training steps themselves.
    """

    def __init__(self, run_folder: Path):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.folder = run_folder
        self.writers = {name: EventFileWriter(str(run_folder / name)) for name in ("train", "validation")}

    def _write(self, name: str, step: int, values: list) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        self.writers[name].add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))

    def scalars(self, name: str, step: int, **values: float) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._write(name, step, [Summary.Value(tag=tag, simple_value=value) for tag, value in values.items()])

    def histograms(self, step: int, head: SoftmaxHead) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.histogram.summary import pb

        # pb() builds TensorFlow's Summary class when TF is installed; the writer wants its own.
        values = [value for name, data in (("final_layer/weights", head.weights), ("final_layer/biases", head.biases))
                  for value in Summary.FromString(pb(name, data).SerializeToString()).value]
        self._write("train", step, values)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def initial_head(rng: np.random.Generator, bottleneck_size: int, class_count: int) -> SoftmaxHead:
    """The classic initial layer: truncated normal weights (stddev 0.001), zero biases."""
    weights = rng.normal(0, INITIAL_WEIGHT_STDDEV, (bottleneck_size, class_count))
    weights = np.clip(weights, -2 * INITIAL_WEIGHT_STDDEV, 2 * INITIAL_WEIGHT_STDDEV)
    return SoftmaxHead(weights.astype(np.float32), np.zeros(class_count, np.float32))


def train_head(
    options: TrainOptions,
    train_bottlenecks: np.ndarray,
    train_labels: np.ndarray,
    validation_bottlenecks: np.ndarray,
    validation_labels: np.ndarray,
    class_count: int,
    summaries: Summaries | None,
    centre: bool = True,
    training_inputs: Callable[[np.ndarray], np.ndarray] | None = None,
    snapshots: dict[int, SoftmaxHead | None] | None = None,
) -> tuple[SoftmaxHead, list[dict]]:
    """Minibatch SGD on softmax cross entropy; returns the head and the evaluation history.

    With options.early_stopping and validation images, the head returned is the one of the
    evaluation step with the lowest cross entropy on the whole validation set (its record has
    "kept": True); otherwise the last step's.

    With `centre`, SGD runs on bottlenecks centred per feature and scaled to unit overall
    variance, and the transform is folded into the returned head, so it still takes raw
    bottlenecks. The classic recipe (centre=False) trains on raw vectors, whose scale and offset
    differ by backbone (ReLU outputs are all positive), so one learning rate cannot fit them all.
    With `training_inputs` (indices into train_bottlenecks -> distorted bottlenecks (n, d)),
    steps train on what it returns; train_bottlenecks then only set the centring.
    Without `summaries` nothing is evaluated or printed (the k-fold heads). `snapshots` maps steps
    to None; each is replaced by the head (raw-bottleneck form) as it was after that step.
    """
    rng = np.random.default_rng(options.seed)
    if centre:
        offset = train_bottlenecks.mean(axis=0)
        scale = float((train_bottlenecks - offset).std()) or 1.0
    else:
        offset, scale = np.zeros(train_bottlenecks.shape[1], np.float32), 1.0
    train_bottlenecks = (train_bottlenecks - offset) / scale
    validation_bottlenecks = (validation_bottlenecks - offset) / scale
    head = initial_head(rng, train_bottlenecks.shape[1], class_count)
    sampler = ClassBalancedSampler(train_labels, rng)
    steps = options.how_many_training_steps
    print_every = max(options.eval_step_interval, steps // PRINTED_EVALUATIONS)
    history = []
    kept = None  # (validation cross entropy, weights, biases, history index) of the head to return
    # Each step multiplies a (batch x d) by a (d x classes) matrix: threads only add overhead. A
    # learning rate too large overflows the weights: numpy's warnings are replaced by one error below.
    with threadpool_limits(1), np.errstate(over="ignore", invalid="ignore"):
        for step in range(1, steps + 1):
            batch = sampler.batch(options.train_batch_size)
            inputs, targets = train_bottlenecks[batch], train_labels[batch]
            if training_inputs is not None:
                inputs = (training_inputs(batch) - offset) / scale
            probabilities = head.probabilities(inputs)
            # d(cross entropy)/d(logits) for softmax is (probabilities - targets) / batch size, the
            # targets one-hot with label smoothing's share spread evenly over the classes.
            probabilities[np.arange(len(batch)), targets] -= 1 - options.label_smoothing
            probabilities -= options.label_smoothing / class_count
            probabilities /= len(batch)
            head.weights -= options.learning_rate * (inputs.T @ probabilities + options.weight_decay * head.weights)
            head.biases -= options.learning_rate * probabilities.sum(axis=0)
            if snapshots is not None and step in snapshots:
                snapshots[step] = fold_centring(head, offset, scale)

            if summaries is None or step % options.eval_step_interval and step != steps:
                continue
            history.append(evaluate_step(options, head, step, inputs, targets, validation_bottlenecks,
                                         validation_labels, rng, summaries))
            if options.early_stopping and len(validation_labels):
                _, entropy = accuracy_and_cross_entropy(head, validation_bottlenecks, validation_labels)
                if kept is None or entropy < kept[0]:
                    kept = (entropy, head.weights.copy(), head.biases.copy(), len(history) - 1)
            if step % print_every == 0 or step == steps:
                summaries.histograms(step, head)
                print_step(history[-1], steps)
    if not (np.isfinite(head.weights).all() and np.isfinite(head.biases).all()):
        raise UserError(f"training diverged: the weights overflowed at --learning_rate {options.learning_rate:g}; "
                        "lower it (the default is 0.01)")
    if kept is not None:
        head = SoftmaxHead(kept[1], kept[2])
        history[kept[3]]["kept"] = True
    return fold_centring(head, offset, scale), history


def fold_centring(head: SoftmaxHead, offset: np.ndarray, scale: float) -> SoftmaxHead:
    """A head trained on (bottlenecks - offset) / scale, as one taking raw bottlenecks."""
    folded_weights = (head.weights / scale).astype(np.float32)
    return SoftmaxHead(folded_weights, (head.biases - offset @ folded_weights).astype(np.float32))


def regularisation_grid(options: TrainOptions) -> list[dict]:
    """The settings the k-fold heads are trained with: the options' own, or with
    --choose_regularisation every combination of the grids, steps varying fastest."""
    if not options.choose_regularisation:
        return [{"weight_decay": options.weight_decay, "label_smoothing": options.label_smoothing,
                 "how_many_training_steps": options.how_many_training_steps}]
    steps = sorted({max(1, round(share * options.how_many_training_steps)) for share in STEP_SHARE_GRID})
    return [{"weight_decay": decay, "label_smoothing": smoothing, "how_many_training_steps": step}
            for decay in WEIGHT_DECAY_GRID for smoothing in LABEL_SMOOTHING_GRID for step in steps]


def grid_heads(options: TrainOptions, grid: list[dict], class_count: int) -> Callable[[np.ndarray, np.ndarray], list[SoftmaxHead]]:
    """fit(bottlenecks, labels) -> one head per grid entry; one run per weight decay and smoothing,
    its heads read off at each step count."""
    def fit(bottlenecks: np.ndarray, labels: np.ndarray) -> list[SoftmaxHead]:
        heads = {}
        for setting in grid:
            run_key = (setting["weight_decay"], setting["label_smoothing"])
            if run_key in heads:
                continue
            steps = [entry["how_many_training_steps"] for entry in grid
                     if (entry["weight_decay"], entry["label_smoothing"]) == run_key]
            run_options = replace(options, weight_decay=run_key[0], label_smoothing=run_key[1],
                                  how_many_training_steps=max(steps), early_stopping=False)
            snapshots = dict.fromkeys(steps)
            empty = np.zeros((0, bottlenecks.shape[1]), np.float32)
            train_head(run_options, bottlenecks, labels, empty, np.zeros(0, np.int64), class_count, None,
                       snapshots=snapshots)
            heads[run_key] = snapshots
        return [heads[(s["weight_decay"], s["label_smoothing"])][s["how_many_training_steps"]] for s in grid]
    return fit


def cross_validate(options: TrainOptions, bottlenecks: np.ndarray, labels: np.ndarray, file_names: list[str],
                   class_count: int) -> tuple[dict, dict]:
    """Heads trained fold by fold on (training + validation) bottlenecks (n, d), labels (n,).

    Returns the chosen settings (the options' own unless --choose_regularisation) and the
    calibration record: the temperature of lowest out-of-fold NLL with the chosen settings, and the
    out-of-fold NLL and ECE it gives. With fewer than two folds holding images, the temperature is 1
    and "fitted_on" None. The fold heads train without distortions or early stopping.
    """
    grid = regularisation_grid(options)
    fold_of = hash_folds(file_names, options.folds)
    logits = out_of_fold_logits(grid_heads(options, grid, class_count), bottlenecks, labels, fold_of, class_count)
    if logits is None:
        return grid[0], {"temperature": 1.0, "fitted_on": None}
    records = [out_of_fold_calibration(setting_logits, labels, fold_of) for setting_logits in logits]
    chosen = min(range(len(grid)), key=lambda index: records[index]["out_of_fold_nll"]["after"])
    calibration = records[chosen]
    if len(grid) > 1:
        calibration["grid"] = [{**setting, "out_of_fold_nll": record["out_of_fold_nll"]["after"],
                                "out_of_fold_accuracy": record["out_of_fold_accuracy"]}
                               for setting, record in zip(grid, records)]
    return grid[chosen], calibration


def calibration_for_kept_step(options: TrainOptions, calibration: dict, kept_step: int, bottlenecks: np.ndarray,
                              labels: np.ndarray, file_names: list[str], class_count: int) -> dict:
    """cross_validate's calibration record for the head kept at `kept_step`, with "fold_steps" set.

    Early stopping may keep an earlier head than the fold heads were trained to: a temperature
    fitted on heads trained every step would fit a more confident head than the one shipped, so
    the folds are trained again for kept_step steps (same bottlenecks, labels, names as cross_validate).
    """
    if calibration["fitted_on"] is None:
        return {**calibration, "fold_steps": None}
    if kept_step != options.how_many_training_steps:
        _, refitted = cross_validate(replace(options, how_many_training_steps=kept_step, choose_regularisation=False),
                                     bottlenecks, labels, file_names, class_count)
        calibration = {**refitted, **{key: calibration[key] for key in ("grid",) if key in calibration}}
    return {**calibration, "fold_steps": kept_step}


def evaluate_step(options, head, step, inputs, targets, validation_bottlenecks, validation_labels, rng, summaries) -> dict:
    """Accuracy and cross entropy on this step's batch and on (a sample of) validation."""
    train_accuracy, cross_entropy = accuracy_and_cross_entropy(head, inputs, targets)
    record = {"step": step, "train_accuracy": train_accuracy, "cross_entropy": cross_entropy}
    summaries.scalars("train", step, accuracy=train_accuracy, cross_entropy=cross_entropy)
    if len(validation_labels):
        sample = np.arange(len(validation_labels))
        if 0 < options.validation_batch_size < len(sample):
            sample = rng.choice(sample, options.validation_batch_size, replace=False)
        validation_accuracy, validation_entropy = accuracy_and_cross_entropy(
            head, validation_bottlenecks[sample], validation_labels[sample])
        record["validation_accuracy"] = validation_accuracy
        record["validation_cross_entropy"] = validation_entropy
        summaries.scalars("validation", step, accuracy=validation_accuracy, cross_entropy=validation_entropy)
    return record


def print_step(record: dict, steps: int) -> None:
    validation = f"{record['validation_accuracy']:.1%}" if "validation_accuracy" in record else "n/a"
    print(f"step {record['step']:>{len(str(steps))}}: train accuracy {record['train_accuracy']:6.1%}, "
          f"cross entropy {record['cross_entropy']:.4f}, validation accuracy {validation}", file=sys.stderr)


def build_classifier(backbone_model, head: SoftmaxHead):
    """The deployable model: float32 (batch, h, w, 3) in [-1, 1] -> class probabilities."""
    import keras

    final_layer = keras.layers.Dense(head.weights.shape[1], activation="softmax", name="final_result")
    outputs = final_layer(backbone_model.output)
    final_layer.set_weights([head.weights, head.biases])
    return keras.Model(backbone_model.input, outputs, name="retrained_classifier")


def set_arrays(images: ImageList, set_name: str, vectors_by_path: dict[str, np.ndarray], bottleneck_size: int):
    """(bottlenecks (n, bottleneck_size), label indices (n,), relative paths) of one set; n may be 0."""
    examples = images.examples(set_name)
    if not examples:
        return np.zeros((0, bottleneck_size), np.float32), np.zeros(0, np.int64), []
    paths = [path for path, _ in examples]
    return np.stack([vectors_by_path[path] for path in paths]), np.array([label for _, label in examples]), paths


def train(options: TrainOptions) -> TrainResult:
    """Run the whole recipe: list, bottlenecks, head, test, outputs."""
    if options.how_many_training_steps < 1 or options.train_batch_size < 1 or options.eval_step_interval < 1:
        raise UserError("--how_many_training_steps, --train_batch_size and --eval_step_interval must be at least 1")
    if not 0 < options.learning_rate < math.inf:
        raise UserError(f"--learning_rate must be a positive number, not {options.learning_rate} (the default is 0.01)")
    if options.weight_decay < 0 or not 0 <= options.label_smoothing < 1 or options.folds < 2:
        raise UserError("--weight_decay must be at least 0, --label_smoothing in [0, 1) and --folds at least 2")
    options.distortions.validate()
    timings = {}
    started = time.perf_counter()
    images = list_images(options.image_dir, options.validation_percentage, options.testing_percentage)
    backbone = get_backbone(options.architecture)
    cache = BottleneckCache.for_backbone(options.bottleneck_dir, backbone, weights_id(options.weights, options.seed))
    timings["list_images_s"] = time.perf_counter() - started

    started = time.perf_counter()
    backbone_model = build_backbone(backbone, options.weights, options.seed)
    timings["build_backbone_s"] = time.perf_counter() - started

    started = time.perf_counter()
    all_paths = sorted({path for set_name in SETS for path, _ in images.examples(set_name)})
    image_paths = [images.image_dir / path for path in all_paths]
    key_by_path = dict(zip(all_paths, file_keys(image_paths)))
    vectors = image_bottlenecks(image_paths, [key_by_path[path] for path in all_paths], backbone.input_size,
                                make_forward(backbone_model), cache)
    vectors_by_path = dict(zip(all_paths, vectors))
    timings["bottlenecks_s"] = time.perf_counter() - started

    train_x, train_y, train_paths = set_arrays(images, "training", vectors_by_path, backbone.bottleneck_size)
    validation_x, validation_y, validation_paths = set_arrays(images, "validation", vectors_by_path, backbone.bottleneck_size)
    test_x, test_y, test_paths = set_arrays(images, "testing", vectors_by_path, backbone.bottleneck_size)
    if not len(train_y):
        raise UserError("no training images: lower --validation_percentage and --testing_percentage or add images")

    training_inputs, distortions = None, {**asdict(options.distortions), "mode": "off"}
    if options.distortions.enabled:
        started = time.perf_counter()
        training = [path for path, _ in images.examples("training")]
        training_inputs, distortions = distorted_training_inputs(
            options.distortions, [images.image_dir / path for path in training], [key_by_path[path] for path in training],
            backbone_model, cache, options.seed)
        timings["distortions_s"] = time.perf_counter() - started

    started = time.perf_counter()
    folded = (np.concatenate([train_x, validation_x]), np.concatenate([train_y, validation_y]),
              [Path(path).name for path in train_paths + validation_paths], len(images.labels))
    settings, calibration = cross_validate(options, *folded)
    options = replace(options, **settings)
    timings["cross_validation_s"] = time.perf_counter() - started

    summaries_root = options.summaries_dir or options.output_dir / "logs"
    summaries = Summaries(Path(summaries_root) / time.strftime("%Y%m%d-%H%M%S"))
    started = time.perf_counter()
    try:
        head, history = train_head(options, train_x, train_y, validation_x, validation_y, len(images.labels), summaries,
                                   training_inputs=training_inputs)
    finally:
        summaries.close()
    timings["training_s"] = time.perf_counter() - started
    kept_step = next((record["step"] for record in history if record.get("kept")), history[-1]["step"])
    started = time.perf_counter()
    calibration = calibration_for_kept_step(options, calibration, kept_step, *folded)
    timings["cross_validation_s"] += time.perf_counter() - started
    head = head.with_temperature(calibration["temperature"])
    skipped_steps = steps_skipped(options, len(validation_y), calibration["fitted_on"] is not None)
    for step, reason in skipped_steps.items():
        log.warning("skipped %s: %s", step.replace("_", " "), reason)

    test_accuracy, misclassified = None, []
    if len(test_y):
        test_sample = np.arange(len(test_y))
        if 0 < options.test_batch_size < len(test_sample):
            test_sample = np.random.default_rng(options.seed).choice(test_sample, options.test_batch_size, replace=False)
        predictions = head.probabilities(test_x[test_sample]).argmax(axis=1)
        test_accuracy = float(np.mean(predictions == test_y[test_sample]))
        misclassified = [(test_paths[i], images.labels[test_y[i]], images.labels[p])
                         for i, p in zip(test_sample, predictions) if p != test_y[i]]
    validation_accuracy = None
    if len(validation_y):
        validation_accuracy, _ = accuracy_and_cross_entropy(head, validation_x, validation_y)

    run = {
        "format_version": RUN_FORMAT,
        "architecture": backbone.name,
        "input_size": list(backbone.input_size),
        "input_mean": INPUT_MEAN,
        "input_std": INPUT_STD,
        "bottleneck_size": backbone.bottleneck_size,
        "weights": options.weights if options.weights in ("imagenet", "none") else str(Path(options.weights).resolve()),
        "labels": images.labels,
        "image_dir": str(images.image_dir),
        "split": {"validation_percentage": options.validation_percentage,
                  "testing_percentage": options.testing_percentage, "files": images.files},
        "hyperparameters": {key: value for key, value in asdict(options).items()
                            if key in ("how_many_training_steps", "learning_rate", "train_batch_size",
                                       "eval_step_interval", "validation_batch_size", "test_batch_size", "seed",
                                       "early_stopping", "weight_decay", "label_smoothing", "folds",
                                       "choose_regularisation")},
        "kept_step": kept_step,
        "calibration": calibration,
        "skipped_steps": skipped_steps,
        "distortions": distortions,
        "history": history,
        "accuracy": {"validation": validation_accuracy, "test": test_accuracy},
        "test_count": len(test_y),
        "timings": timings,
        "skipped_files": images.skipped,
        "summaries_dir": str(summaries.folder),
        "model_file": MODEL_FILE,
        "labels_file": LABELS_FILE,
    }
    write_outputs(options, build_classifier(backbone_model, head), images.labels, run)
    return TrainResult(options.output_dir, validation_accuracy, test_accuracy, len(test_y), misclassified, run)


def steps_skipped(options: TrainOptions, validation_count: int, calibrated: bool) -> dict[str, str]:
    """The steps of the recipe that did not run: step -> why, for run.json and the summary.

    The centring statistics come from the training split alone and the temperature from k-fold
    heads over training and validation images, so neither needs a validation split; early
    stopping does. The temperature is skipped only when fewer than two folds hold images.
    """
    skipped = {}
    if not calibrated:
        skipped["temperature"] = (f"too few images for {options.folds}-fold calibration (fewer than two folds hold "
                                  "any), so the scores are left uncalibrated (temperature 1)")
    if options.early_stopping and not validation_count:
        if options.validation_percentage == 0:
            why = "the validation split is empty (--validation_percentage 0)"
        else:
            why = (f"the validation split is empty (no file name hashes into its {options.validation_percentage}%; "
                   "raise --validation_percentage or add images)")
        skipped["early_stopping"] = f"{why}, so the last step's head is kept"
    return skipped


def write_outputs(options: TrainOptions, model, labels: list[str], run: dict) -> None:
    """Model, labels, then run.json last: a run.json present always describes the files beside it."""
    output_dir = Path(options.output_dir)
    with atomic_output(output_dir / MODEL_FILE) as temporary:
        model.save(temporary)
        if options.output_graph:
            with atomic_output(Path(options.output_graph)) as graph_temporary:
                graph_temporary.write_bytes(temporary.read_bytes())
    write_labels(output_dir / LABELS_FILE, labels)
    if options.output_labels:
        write_labels(Path(options.output_labels), labels)
    write_run(output_dir, run)
