"""Evaluate a model on a split: accuracy, per-class figures, confusion matrix, report.html.

A .tflite model is evaluated through the edge runtime's own code (`edge.model`: load with LiteRT,
preprocess per the model's quantisation, invoke, dequantise), so the figures are the device's; a
Keras model gets the same pixels (`edge.image.load_rgb`) normalised as in training. Writes only
report.html and confusion_matrix.png.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from edge.image import load_rgb
from edge.model import parse_labels
from trainer import UserError
from trainer.backbones import INPUT_MEAN, INPUT_STD
from trainer.bottlenecks import DECODE_THREADS
from trainer.calibration import (
    expected_calibration_error, format_perfect_calibration, format_precision_coverage, perfect_calibration_ece,
    precision_coverage,
)
from trainer.convert import load_keras_model
from trainer.dataset import SETS, list_images
from trainer.outputs import LABELS_FILE, MODEL_FILE, RUN_FILE, load_run, write_bytes_atomic
from trainer.report import (
    GALLERY_IMAGES, confusion_matrix_png, gallery, html_page, percent, png_tag, precision_coverage_png, thumbnail_card,
    training_curves_png,
)

REPORT_FILE = "report.html"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
# --split name -> the dataset sets it covers.
SPLITS = {"test": ("testing",), "validation": ("validation",), "training": ("training",), "all": SETS}
PREDICT_BATCH_SIZE = 64  # images decoded and run through a Keras model at once
THRESHOLD_PLOT_POINTS = 101  # the report's precision/coverage plot: thresholds 0 to 1 in steps of 0.01
TEXT_LABEL_WIDTH = 12  # characters of a label in the printed confusion matrix's columns


@dataclass
class EvaluateOptions:
    """What `retrain-edge evaluate` does; each field is one flag."""

    output_dir: Path = Path("retrain_output")  # run.json (and model.keras) from `retrain-edge train`
    model: Path | None = None  # a .keras or .tflite file (default: output_dir/model.keras)
    split: str | None = None  # a SPLITS name (default: "test"; "all" with image_dir)
    image_dir: Path | None = None  # a folder of class sub-folders instead of the run's recorded split
    report_dir: Path | None = None  # where report.html and confusion_matrix.png go (default: output_dir)


@dataclass
class EvaluationResult:
    """A model's scores on a set of labelled images, and where the report went."""

    model_path: Path
    image_dir: Path
    split: str
    labels: list[str]  # the model's outputs, in order
    paths: list[str]  # (n,) relative to image_dir
    true_labels: np.ndarray  # (n,) index into labels
    scores: np.ndarray  # (n, classes) float32, as the model outputs them
    report_path: Path
    confusion_matrix_path: Path
    # The expected calibration error `train` measured on every training and validation photo's
    # out-of-fold prediction, after the temperature (None without run.json or k-fold calibration).
    out_of_fold_ece: float | None = None
    # perfect_calibration_ece of those out-of-fold scores, as run.json records it (None as above).
    out_of_fold_perfect_ece: dict[str, float] | None = None

    @property
    def predicted_labels(self) -> np.ndarray:
        """(n,) index into labels"""
        return self.scores.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predicted_labels == self.true_labels))

    @property
    def calibration_error(self) -> float:
        """Expected calibration error of the top scores (see trainer.calibration)."""
        return expected_calibration_error(self.scores, self.true_labels)

    @cached_property  # 1,000 label draws; the text and the HTML report both read it
    def perfect_calibration_error(self) -> dict[str, float]:
        """What a perfectly calibrated model with these scores would show (see perfect_calibration_ece)."""
        return perfect_calibration_ece(self.scores)

    @property
    def confusion(self) -> np.ndarray:
        """(classes, classes) counts; rows are true labels, columns predicted ones."""
        return confusion_matrix(self.true_labels, self.predicted_labels, len(self.labels))

    def misclassified(self) -> list[dict]:
        """{"path", "true", "predicted", "score"} per wrong prediction, the most confident first."""
        predicted = self.predicted_labels
        wrong = np.flatnonzero(predicted != self.true_labels)
        wrong = wrong[np.argsort(-self.scores[wrong, predicted[wrong]], kind="stable")]
        return [{"path": self.paths[i], "true": self.labels[self.true_labels[i]],
                 "predicted": self.labels[predicted[i]], "score": float(self.scores[i, predicted[i]])}
                for i in wrong]


def confusion_matrix(true_labels: np.ndarray, predicted_labels: np.ndarray, class_count: int) -> np.ndarray:
    """(n,), (n,) class indices -> (class_count, class_count) int64; [true, predicted] counts."""
    cells = np.asarray(true_labels, np.int64) * class_count + np.asarray(predicted_labels, np.int64)
    return np.bincount(cells, minlength=class_count * class_count).reshape(class_count, class_count)


def class_figures(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (float, NaN where undefined) and support (int): (classes,) each."""
    true_positives = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positives / predicted, np.nan)
        recall = np.where(support > 0, true_positives / support, np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(np.isnan(precision) | np.isnan(recall), np.nan, f1)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def evaluate(options: EvaluateOptions) -> EvaluationResult:
    """Score the model on the chosen images, then write report.html and confusion_matrix.png."""
    output_dir = Path(options.output_dir)
    run = load_run(output_dir) if (output_dir / RUN_FILE).is_file() or options.image_dir is None else None
    split = options.split or ("all" if options.image_dir is not None else "test")
    if split not in SPLITS:
        raise UserError(f"--split {split}: use one of {', '.join(SPLITS)}")
    model_path = Path(options.model) if options.model is not None else output_dir / MODEL_FILE
    if not model_path.is_file():
        raise UserError(f"model file {model_path} does not exist")

    if model_path.suffix.lower() == ".tflite":
        labels, score_images = tflite_scorer(model_path)
    else:
        labels, score_images = keras_scorer(model_path, run)
    image_dir, examples = labelled_images(options, run, split)
    unknown = sorted({label for _, label in examples} - set(labels))
    if unknown:
        raise UserError(f"the model has no output for the class{'es' * (len(unknown) > 1)} "
                        f"{', '.join(map(repr, unknown))} of {image_dir}")
    if not examples:
        raise UserError(f"the {split} split of {image_dir} has no images: try --split all")

    paths = [path for path, _ in examples]
    true_labels = np.array([labels.index(label) for _, label in examples], np.int64)
    scores = score_images([image_dir / path for path in paths])
    report_dir = Path(options.report_dir or output_dir)
    calibration = (run or {}).get("calibration") or {}
    result = EvaluationResult(model_path, image_dir, split, labels, paths, true_labels, scores,
                              report_dir / REPORT_FILE, report_dir / CONFUSION_MATRIX_FILE,
                              (calibration.get("out_of_fold_ece") or {}).get("after"),
                              (calibration.get("out_of_fold_ece") or {}).get("perfectly_calibrated"))
    write_evaluation_report(result, run)
    return result


def labelled_images(options: EvaluateOptions, run: dict | None, split: str) -> tuple[Path, list[tuple[str, str]]]:
    """(image_dir, [(path relative to it, true label)]) for the split, from run.json or options.image_dir.

    A folder given by image_dir is split as `train` splits (by file name, with the run's
    percentages), so the test split of a moved dataset is the same images as before.
    """
    if options.image_dir is not None:
        percentages = (run["split"]["validation_percentage"], run["split"]["testing_percentage"]) if run else ()
        images = list_images(options.image_dir, *percentages)
        image_dir, files = images.image_dir, images.files
    else:
        image_dir, files = Path(run["image_dir"]), run["split"]["files"]
        if not image_dir.is_dir():
            raise UserError(f"the run's images are no longer in {image_dir}: pass --image_dir where they are now")
    examples = [(path, label) for set_name in SPLITS[split] for label, paths in sorted(files[set_name].items())
                for path in paths]
    missing = [path for path, _ in examples if not (image_dir / path).is_file()]
    if missing:
        raise UserError(f"{len(missing)} of the run's images are missing from {image_dir} (e.g. {missing[0]}): "
                        "pass --image_dir where they are now")
    return image_dir, examples


def tflite_scorer(model_path: Path) -> tuple[list[str], Callable[[list[Path]], np.ndarray]]:
    """The model's labels, and paths -> (n, classes) scores through the device's own code path."""
    from edge.model import load_model

    model = load_model(model_path)

    def score_images(paths: list[Path]) -> np.ndarray:
        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            return np.stack([model.scores(pixels) for pixels in pool.map(lambda p: load_rgb(p, model.input_size), paths)])

    return model.labels, score_images


def keras_scorer(model_path: Path, run: dict | None) -> tuple[list[str], Callable[[list[Path]], np.ndarray]]:
    """The model's labels (run.json's, else labels.txt beside it), and paths -> (n, classes) scores."""
    if run is not None:
        labels = run["labels"]
        mean, std = run.get("input_mean", INPUT_MEAN), run.get("input_std", INPUT_STD)
    elif (model_path.parent / LABELS_FILE).is_file():
        labels = parse_labels((model_path.parent / LABELS_FILE).read_text())
        mean, std = INPUT_MEAN, INPUT_STD  # no run.json: the project's convention
    else:
        raise UserError(f"no labels for {model_path}: put {LABELS_FILE} beside it or pass --output_dir of its run")
    model = load_keras_model(model_path)
    size = tuple(model.input_shape[1:3])
    if model.output_shape[-1] != len(labels):
        raise UserError(f"{model_path} has {model.output_shape[-1]} outputs but there are {len(labels)} labels")

    def score_images(paths: list[Path]) -> np.ndarray:
        batches = []
        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            for start in range(0, len(paths), PREDICT_BATCH_SIZE):
                pixels = np.stack(list(pool.map(lambda p: load_rgb(p, size), paths[start:start + PREDICT_BATCH_SIZE])))
                batches.append(model.predict((pixels.astype(np.float32) - mean) / std, verbose=0))
        return np.concatenate(batches).astype(np.float32)

    return list(labels), score_images


def format_evaluation(result: EvaluationResult) -> str:
    """Accuracy, per-class figures and the confusion matrix, as the CLI prints them."""
    confusion = result.confusion
    correct = int(np.trace(confusion))
    figures = class_figures(confusion)
    label_width = max(len("class"), *map(len, result.labels))
    lines = [f"{result.model_path} on the {result.split} split of {result.image_dir} ({len(result.paths)} images)",
             f"accuracy: {result.accuracy:.1%} ({correct}/{len(result.paths)})", "",
             f"{'class':<{label_width}}  precision  recall      f1  support"]
    for index, label in enumerate(result.labels):
        lines.append(f"{label:<{label_width}}  {percent(figures['precision'][index]):>9}  "
                     f"{percent(figures['recall'][index]):>6}  {percent(figures['f1'][index]):>6}  "
                     f"{figures['support'][index]:>7}")
    column_names = [label[:TEXT_LABEL_WIDTH] for label in result.labels]
    widths = [max(len(name), len(str(confusion[:, i].max()))) for i, name in enumerate(column_names)]
    lines += ["", "confusion matrix (rows: true label, columns: predicted label):",
              " " * label_width + "".join(f"  {name:>{width}}" for name, width in zip(column_names, widths))]
    for index, label in enumerate(result.labels):
        lines.append(f"{label:<{label_width}}" + "".join(f"  {count:>{width}}"
                                                           for count, width in zip(confusion[index], widths)))
    lines += ["", f"expected calibration error: {result.calibration_error:.3f} (0: a score of 0.9 is right 90% of the "
              f"time); {format_perfect_calibration(result.perfect_calibration_error, percent=False)}"]
    if result.out_of_fold_ece is not None:
        lines.append(f"out-of-fold expected calibration error at training: {result.out_of_fold_ece:.3f} "
                     f"(every training and validation photo, judged by a head that never saw it)"
                     + ("" if result.out_of_fold_perfect_ece is None else
                        f"; {format_perfect_calibration(result.out_of_fold_perfect_ece, percent=False)}"))
    lines += ["precision and coverage by --threshold (edge-classify reports 'unknown' below it):",
              format_precision_coverage(precision_coverage(result.scores, result.true_labels))]
    return "\n".join(lines)


def write_evaluation_report(result: EvaluationResult, run: dict | None) -> None:
    """confusion_matrix.png and report.html (figures, training curves, misclassified gallery)."""
    confusion_png = confusion_matrix_png(result.confusion, result.labels)
    write_bytes_atomic(result.confusion_matrix_path, confusion_png)
    figures = class_figures(result.confusion)
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{percent(figures['precision'][i])}</td>"
        f"<td>{percent(figures['recall'][i])}</td><td>{percent(figures['f1'][i])}</td>"
        f"<td>{figures['support'][i]}</td></tr>" for i, label in enumerate(result.labels))
    sections = [
        f"<p>Model <code>{html.escape(str(result.model_path))}</code> on the {html.escape(result.split)} split of "
        f"<code>{html.escape(str(result.image_dir))}</code>: <strong>accuracy {result.accuracy:.1%}</strong> "
        f"({int(np.trace(result.confusion))} of {len(result.paths)} images).</p>",
        "<h2>Confusion matrix</h2><p>Rows are the true labels, columns the predicted ones.</p>"
        + png_tag(confusion_png, "confusion matrix"),
        "<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
        f"<th>images</th></tr>{rows}</table>",
    ]
    rows = precision_coverage(result.scores, result.true_labels)
    threshold_rows = "".join(f"<tr><td>{row.threshold:g}</td><td>{percent(row.precision)}</td><td>{percent(row.coverage)}</td>"
                             f"<td>{row.kept}</td></tr>" for row in rows)
    sections.append(
        "<h2>Choosing --threshold</h2><p>With <code>edge-classify --threshold T</code>, an image whose top score is "
        "below T is reported as unknown. Precision is the share of the answers kept that are right; coverage the share "
        f"of images kept. Expected calibration error: {result.calibration_error:.3f} "
        f"({html.escape(format_perfect_calibration(result.perfect_calibration_error, percent=False))})"
        + ("" if result.out_of_fold_ece is None else
           f"; out of fold at training (every training and validation photo): {result.out_of_fold_ece:.3f}"
           + ("" if result.out_of_fold_perfect_ece is None else
              f" ({html.escape(format_perfect_calibration(result.out_of_fold_perfect_ece, percent=False))})"))
        + ".</p>"
        + png_tag(precision_coverage_png(precision_coverage(result.scores, result.true_labels, np.linspace(0, 1, THRESHOLD_PLOT_POINTS))),
                  "precision and coverage by threshold")
        + "<table><tr><th>--threshold</th><th>precision</th><th>coverage</th><th>images kept</th></tr>"
        + threshold_rows + "</table>")
    history = (run or {}).get("history") or []
    if history:
        sections.append("<h2>Training</h2>" + png_tag(training_curves_png(history), "training curves"))
    mistakes = result.misclassified()
    cards = [thumbnail_card(result.image_dir / m["path"], m["path"],
                            f"true <b>{html.escape(m['true'])}</b>, predicted <b>{html.escape(m['predicted'])}</b> "
                            f"({m['score']:.2f})") for m in mistakes[:GALLERY_IMAGES]]
    sections.append(f"<h2>Misclassified ({len(mistakes)})</h2>"
                    + ("<p>The most confident mistakes first.</p>" if mistakes else "<p>None.</p>")
                    + gallery(cards, len(mistakes)))
    write_bytes_atomic(result.report_path, html_page("retrain-edge evaluation", sections).encode())
