"""Looking at the results: evaluate a model on a split, the HTML report, and the data audit.

A .tflite model is evaluated through the edge runtime's own code (`edge.model`: load with LiteRT,
preprocess per the model's quantisation, invoke, dequantise), so the figures are the device's; a
Keras model gets the same pixels (`edge.image.load_rgb`) normalised as in training. This module
reads what the stages wrote and writes only report files: report.html and confusion_matrix.png
(evaluate), audit.html (audit). Pages are self-contained: images are embedded as base64.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.image import load_rgb, open_rgb
from edge.model import parse_labels
from trainer import UserError
from trainer.backbones import DEFAULT_ARCHITECTURE, INPUT_MEAN, INPUT_STD
from trainer.bottlenecks import DECODE_THREADS, default_bottleneck_dir
from trainer.convert import load_keras_model
from trainer.dataset import MIN_IMAGES_PER_CLASS, SETS, list_images
from trainer.outputs import LABELS_FILE, MODEL_FILE, RUN_FILE, load_run, write_bytes_atomic
from trainer.train import softmax

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
AUDIT_FILE = "audit.html"
# --split name -> the dataset sets it covers.
SPLITS = {"test": ("testing",), "validation": ("validation",), "training": ("training",), "all": SETS}
PREDICT_BATCH_SIZE = 64  # images decoded and run through a Keras model at once
GALLERY_IMAGES = 100  # misclassified (or suspect) thumbnails shown at most, worst first
THUMBNAIL_SIZE = 160  # px, longest side
THUMBNAIL_QUALITY = 85  # JPEG
PLOT_DPI = 100
ANNOTATED_CLASSES = 25  # up to this many classes, confusion matrix cells show their counts
TEXT_LABEL_WIDTH = 12  # characters of a label in the printed confusion matrix's columns

# Audit.
DEFAULT_FOLDS = 5
# A cross-validated prediction of another class with at least this probability flags an image.
DEFAULT_MISLABEL_CONFIDENCE = 0.8
# A validation or test bucket with fewer images than this per class measures that class by
# chance: with 2 images its accuracy can only be 0, 50 or 100%.
MIN_BUCKET_IMAGES = 3
# The cross-validation head: full-batch gradient descent with momentum. On features scaled to
# unit mean squared norm the loss's curvature is at most 1/2, so this step is stable; it has
# converged by 100 steps on MobileNet features of a few hundred images.
HEAD_STEPS = 100
HEAD_LEARNING_RATE = 1.0
HEAD_MOMENTUM = 0.9
# Weight decay. With more features than images a head can fit noise and be sure of it: on
# random-backbone features of 120 images, wrong predictions reach 0.99 probability with 1e-4 and
# 0.9 with 1e-3. On pretrained features of the sample data, 1e-3 keeps every wrong prediction
# of a clean set under 0.6 while planted mislabels mostly get their true class at 0.87-0.94.
HEAD_L2 = 1e-3


# --- evaluate ------------------------------------------------------------------------------------

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

    @property
    def predicted_labels(self) -> np.ndarray:
        """(n,) index into labels"""
        return self.scores.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predicted_labels == self.true_labels))

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
    result = EvaluationResult(model_path, image_dir, split, labels, paths, true_labels, scores,
                              report_dir / REPORT_FILE, report_dir / CONFUSION_MATRIX_FILE)
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
    import edge
    from edge.model import load_model

    try:
        model = load_model(model_path)
    except edge.UserError as error:
        raise UserError(str(error)) from None

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
    return "\n".join(lines)


def percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


# --- report --------------------------------------------------------------------------------------

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


def figure():
    """A matplotlib Figure that renders with Agg, without pyplot's global state or a display."""
    from matplotlib.figure import Figure

    return Figure(dpi=PLOT_DPI, layout="constrained")


def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def confusion_matrix_png(confusion: np.ndarray, labels: list[str]) -> bytes:
    """The matrix coloured by share of each true class (row), with counts in the cells."""
    class_count = len(labels)
    side = min(4 + 0.45 * class_count, 30)  # inches
    fig = figure()
    fig.set_size_inches(side + 1, side)
    axes = fig.add_subplot()
    row_totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, row_totals, out=np.zeros(confusion.shape), where=row_totals > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=axes, label="share of the true class", shrink=0.8)
    axes.set_xticks(range(class_count), labels, rotation=45, ha="right")
    axes.set_yticks(range(class_count), labels)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    if class_count <= ANNOTATED_CLASSES:
        for (row, column), count in np.ndenumerate(confusion):
            axes.text(column, row, str(count), ha="center", va="center",
                      color="white" if shares[row, column] > 0.5 else "black")
    return figure_png(fig)


def training_curves_png(history: list[dict]) -> bytes:
    """Accuracy and cross entropy over steps, training batch and validation, from run.json."""
    fig = figure()
    fig.set_size_inches(10, 4)
    steps = [record["step"] for record in history]
    for axes, (train_key, validation_key, title) in zip(fig.subplots(1, 2), (
            ("train_accuracy", "validation_accuracy", "accuracy"),
            ("cross_entropy", "validation_cross_entropy", "cross entropy"))):
        axes.plot(steps, [record[train_key] for record in history], label="training batch")
        validation = [(record["step"], record[validation_key]) for record in history if validation_key in record]
        if validation:
            axes.plot(*zip(*validation), label="validation")
        axes.set_title(title)
        if title == "accuracy":
            axes.set_ylim(0, 1.02)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        axes.legend()
    return figure_png(fig)


def png_tag(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{html.escape(alt)}">'


def thumbnail_card(path: Path, title: str, caption_html: str) -> str:
    """A figure with the image at THUMBNAIL_SIZE (embedded JPEG), its path and a caption."""
    image = open_rgb(path, draft_size=(THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    source = base64.b64encode(buffer.getvalue()).decode()
    return (f'<figure><img src="data:image/jpeg;base64,{source}" alt="{html.escape(title)}">'
            f"<figcaption>{caption_html}<br><small>{html.escape(title)}</small></figcaption></figure>")


def gallery(cards: list[str], total: int) -> str:
    more = f"<p>{total - len(cards)} more not shown.</p>" if total > len(cards) else ""
    return f'<div class="gallery">{"".join(cards)}</div>{more}'


def html_page(title: str, sections: list[str]) -> str:
    style = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}.gallery{display:flex;flex-wrap:wrap;gap:1em}"
             f".gallery figure{{margin:0;width:{THUMBNAIL_SIZE}px;font-size:small;overflow-wrap:anywhere}}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n"
            + "\n".join(sections) + "\n</body></html>\n")


# --- audit ---------------------------------------------------------------------------------------

@dataclass
class AuditOptions:
    """What `retrain-edge audit` does; the backbone, weights and cache flags are train's."""

    image_dir: Path
    architecture: str = DEFAULT_ARCHITECTURE
    weights: str = "imagenet"
    bottleneck_dir: Path = field(default_factory=default_bottleneck_dir)
    seed: int = 0
    validation_percentage: int = 10
    testing_percentage: int = 10
    folds: int = DEFAULT_FOLDS
    mislabel_confidence: float = DEFAULT_MISLABEL_CONFIDENCE
    report_dir: Path = Path("retrain_output")  # where audit.html goes


@dataclass
class AuditResult:
    """Likely problems in a dataset; every path is relative to image_dir."""

    image_dir: Path
    image_count: int
    # One group per set of identical files: [{"path", "label", "set"}], two or more.
    duplicates: list[list[dict]]
    # {"path", "label", "predicted", "confidence"}: the cross-validated head's other class, most confident first.
    suspected_mislabels: list[dict]
    # {"label", "images", "validation", "testing", "reason"}
    small_classes: list[dict]
    report_path: Path

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.suspected_mislabels or self.small_classes)


def audit(options: AuditOptions) -> AuditResult:
    """Duplicates, likely mislabelled images and too-small classes in image_dir; writes audit.html."""
    from trainer.backbones import build_backbone, get_backbone, weights_id
    from trainer.bottlenecks import BottleneckCache, file_keys, image_bottlenecks, make_forward

    if options.folds < 2:
        raise UserError("--folds must be at least 2")
    if not 0 < options.mislabel_confidence <= 1:
        raise UserError("--mislabel_confidence must be in (0, 1]")
    images = list_images(options.image_dir, options.validation_percentage, options.testing_percentage)
    entries = [{"path": path, "label": label, "set": set_name}
               for set_name in SETS for label, paths in images.files[set_name].items() for path in paths]
    entries.sort(key=lambda entry: entry["path"])
    paths = [images.image_dir / entry["path"] for entry in entries]
    keys = file_keys(paths)

    if options.weights == "none":
        log.warning("--weights none: random bottlenecks cannot tell classes apart, so the audit does not look "
                    "for mislabelled images")
        suspects = []
    else:
        backbone = get_backbone(options.architecture)
        cache = BottleneckCache.for_backbone(options.bottleneck_dir, backbone, weights_id(options.weights, options.seed))
        forward = make_forward(build_backbone(backbone, options.weights, options.seed))
        bottlenecks = image_bottlenecks(paths, keys, backbone.input_size, forward, cache)
        label_indices = np.array([images.labels.index(entry["label"]) for entry in entries])
        probabilities = cross_validated_probabilities(bottlenecks, label_indices, len(images.labels),
                                                      options.folds, options.seed)
        suspects = suspected_mislabels(entries, probabilities, images.labels, label_indices,
                                       options.mislabel_confidence)
    result = AuditResult(
        images.image_dir, len(entries), duplicate_groups(entries, keys), suspects,
        small_classes(images.files, images.labels, options.validation_percentage, options.testing_percentage),
        Path(options.report_dir) / AUDIT_FILE)
    write_audit_report(result)
    return result


def duplicate_groups(entries: list[dict], keys: list[str]) -> list[list[dict]]:
    """Entries whose files have the same content hash, grouped; groups in path order."""
    by_key = defaultdict(list)
    for entry, key in zip(entries, keys):
        by_key[key].append(entry)
    return sorted((group for group in by_key.values() if len(group) > 1), key=lambda group: group[0]["path"])


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(n,) fold index per example: each class shuffled (seeded) and dealt round the folds."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), np.int64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        fold_of[members] = np.arange(len(members)) % folds
    return fold_of


def fit_softmax(bottlenecks: np.ndarray, labels: np.ndarray, class_count: int) -> Callable[[np.ndarray], np.ndarray]:
    """A linear softmax classifier: (n, d) bottlenecks, (n,) labels -> function (m, d) -> (m, classes).

    Full-batch gradient descent with momentum, deterministic. Features are centred and scaled to
    unit mean squared norm, which bounds the curvature and so makes one step size fit every backbone.
    """
    offset = bottlenecks.mean(axis=0)
    scale = math.sqrt(float(np.mean(np.sum((bottlenecks - offset) ** 2, axis=1)))) or 1.0
    inputs = (bottlenecks - offset) / scale
    targets = np.eye(class_count, dtype=np.float32)[labels]
    weights = np.zeros((inputs.shape[1], class_count), np.float32)
    biases = np.zeros(class_count, np.float32)
    weight_velocity, bias_velocity = np.zeros_like(weights), np.zeros_like(biases)
    for _ in range(HEAD_STEPS):
        error = (softmax(inputs @ weights + biases) - targets) / len(labels)
        weight_velocity = HEAD_MOMENTUM * weight_velocity - HEAD_LEARNING_RATE * (inputs.T @ error + HEAD_L2 * weights)
        bias_velocity = HEAD_MOMENTUM * bias_velocity - HEAD_LEARNING_RATE * error.sum(axis=0)
        weights += weight_velocity
        biases += bias_velocity
    return lambda new: softmax(((new - offset) / scale) @ weights + biases)


def cross_validated_probabilities(bottlenecks: np.ndarray, labels: np.ndarray, class_count: int,
                                  folds: int, seed: int) -> np.ndarray:
    """(n, d), (n,) -> (n, classes): each image scored by a head fitted on the other folds.

    An image whose class has no image in the other folds (a class smaller than two) cannot be
    judged: its row stays all zeros.
    """
    fold_of = stratified_folds(labels, folds, seed)
    probabilities = np.zeros((len(labels), class_count), np.float32)
    for fold in range(folds):
        training = fold_of != fold
        judged = ~training & np.isin(labels, labels[training])
        if judged.any():
            predict = fit_softmax(bottlenecks[training], labels[training], class_count)
            probabilities[judged] = predict(bottlenecks[judged])
    return probabilities


def suspected_mislabels(entries: list[dict], probabilities: np.ndarray, labels: list[str],
                        label_indices: np.ndarray, confidence: float) -> list[dict]:
    """Images whose cross-validated prediction is another class with at least `confidence`."""
    predicted = probabilities.argmax(axis=1)
    best = probabilities[np.arange(len(predicted)), predicted]
    flagged = np.flatnonzero((predicted != label_indices) & (best >= confidence))
    flagged = flagged[np.argsort(-best[flagged], kind="stable")]
    return [{"path": entries[i]["path"], "label": entries[i]["label"], "predicted": labels[predicted[i]],
             "confidence": float(best[i])} for i in flagged]


def small_classes(files: dict[str, dict[str, list[str]]], labels: list[str],
                  validation_percentage: float, testing_percentage: float) -> list[dict]:
    """Classes with too few images overall, or for their validation or test bucket."""
    found = []
    for label in labels:
        counts = {set_name: len(files[set_name][label]) for set_name in SETS}
        reasons = []
        if sum(counts.values()) < MIN_IMAGES_PER_CLASS:
            reasons.append(f"fewer than {MIN_IMAGES_PER_CLASS} images")
        for set_name, percentage in (("validation", validation_percentage), ("testing", testing_percentage)):
            if percentage > 0 and counts[set_name] < MIN_BUCKET_IMAGES:
                reasons.append(f"{counts[set_name]} {set_name} image{'s' * (counts[set_name] != 1)}")
        if reasons:
            found.append({"label": label, "images": sum(counts.values()), "validation": counts["validation"],
                          "testing": counts["testing"], "reason": "; ".join(reasons)})
    return found


def duplicate_kind(group: list[dict]) -> str:
    """What a group of identical files means for training, in words."""
    kinds = ["across classes" if len({entry["label"] for entry in group}) > 1 else "within a class"]
    if len({entry["set"] for entry in group}) > 1:
        kinds.append(f"across sets ({', '.join(sorted({entry['set'] for entry in group}))}): inflates measured accuracy")
    return "; ".join(kinds)


def format_audit(result: AuditResult) -> str:
    """The audit as the CLI prints it: one line per problem."""
    lines = [f"audited {result.image_count} images in {result.image_dir}"]
    for group in result.duplicates:
        members = ", ".join(f"{entry['path']} ({entry['set']})" for entry in group)
        lines.append(f"duplicate {duplicate_kind(group)}: {members}")
    for suspect in result.suspected_mislabels:
        lines.append(f"likely mislabelled: {suspect['path']} is labelled {suspect['label']!r} but looks like "
                     f"{suspect['predicted']!r} ({suspect['confidence']:.2f})")
    for small in result.small_classes:
        lines.append(f"small class: {small['label']!r} has {small['images']} images ({small['reason']})")
    if result.clean:
        lines.append("no problems found")
    return "\n".join(lines)


def write_audit_report(result: AuditResult) -> None:
    """audit.html: duplicate groups, suspected mislabels and small classes, with thumbnails."""
    sections = [f"<p>{result.image_count} images in <code>{html.escape(str(result.image_dir))}</code>."
                + (" No problems found.</p>" if result.clean else "</p>")]
    duplicate_cards = [
        thumbnail_card(result.image_dir / group[0]["path"], group[0]["path"],
                       html.escape(duplicate_kind(group)) + "<br>" + "<br>".join(
                           f"{html.escape(entry['path'])} ({entry['set']})" for entry in group))
        for group in result.duplicates[:GALLERY_IMAGES]]
    sections.append(f"<h2>Duplicate files ({len(result.duplicates)} groups)</h2>"
                    + gallery(duplicate_cards, len(result.duplicates)))
    suspect_cards = [
        thumbnail_card(result.image_dir / suspect["path"], suspect["path"],
                       f"labelled <b>{html.escape(suspect['label'])}</b>, looks like "
                       f"<b>{html.escape(suspect['predicted'])}</b> ({suspect['confidence']:.2f})")
        for suspect in result.suspected_mislabels[:GALLERY_IMAGES]]
    sections.append(f"<h2>Likely mislabelled ({len(result.suspected_mislabels)})</h2>"
                    "<p>A linear classifier trained on the other images (cross-validated) confidently "
                    "predicts another class.</p>" + gallery(suspect_cards, len(result.suspected_mislabels)))
    rows = "".join(f"<tr><td>{html.escape(small['label'])}</td><td>{small['images']}</td>"
                   f"<td>{small['validation']}</td><td>{small['testing']}</td><td>{html.escape(small['reason'])}</td></tr>"
                   for small in result.small_classes)
    sections.append(f"<h2>Small classes ({len(result.small_classes)})</h2>" + (
        "<table><tr><th>class</th><th>images</th><th>validation</th><th>testing</th><th>why</th></tr>"
        f"{rows}</table>" if rows else ""))
    write_bytes_atomic(result.report_path, html_page("retrain-edge data audit", sections).encode())
