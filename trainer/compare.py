"""Compare backbones on the user's own photos for their device: which one to train with.

With a few hundred photos per class the frozen features set the ceiling, so the backbone is the
choice that matters, and a test split of a few dozen photos picks the wrong one. Each backbone
here is judged by k-fold heads on its cached bottlenecks (every photo scored by a head that never
saw it), calibrated as `train` calibrates, then converted once (float32 and full-integer int8)
to measure what it costs. The recommendation is the cheapest backbone whose accuracy is within
one standard error of the best's, the error being that of their paired difference.

The question is which of these backbones is more accurate on these photos, so the statistics are
those of a comparison: every backbone is judged on the same photos, so the noise that matters is
that of a backbone's per-photo difference to the best (trainer.crossval.paired_difference), not
either accuracy's own spread, which mostly says how hard the photos are. (The spread over five
folds, which compare used before, has four degrees of freedom and came out smaller than the paired
error on the flowers: 0.7-1.0 against 1.3 points, docs/choose-a-backbone.md.) With --repeats the folds are cut again by salted hashes, bursts kept
together, and each photo's correctness averaged over the cuts; on the flowers that made the
ranking agree with held-out photos in one split more or none (trainer.crossval.DEFAULT_REPEATS).

The cost is the int8 model's Cortex-A76 (Pi 5) instruction count per invoke when the Pi-cost
counter (trainer/pi_cost.py) is built, with the Cortex-A72 (Pi 4) count beside it, and its x86
latency on this machine when it is not; choose_device_cost() makes that choice, once per run.

The sizes, bottleneck time, int8 model and costs of a backbone, weights and class count are kept
beside the bottleneck cache, so a rerun on a warm cache builds no backbone and converts nothing:
it only trains the k heads per backbone (about a minute for three backbones and 600 photos), and
counts the cached int8 models when the counter was built since the last run.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.image import load_rgb
from trainer import UserError
from trainer.backbones import (
    INPUT_MEAN, INPUT_STD, Backbone, build_backbone, check_imagenet_size, get_backbone, weights_id,
)
from trainer.bottlenecks import BottleneckCache, default_bottleneck_dir, file_keys, image_bottlenecks, make_forward
from trainer.convert import DEFAULT_CALIBRATION_IMAGES, FLOAT_COST_SHARE, calibration_paths, convert_model
from trainer.crossval import (
    DEFAULT_FOLDS, DEFAULT_REPEATS, mean_and_clustered_standard_error, out_of_fold_calibration, out_of_fold_logits,
    paired_difference, repeat_folds,
)
from trainer.dataset import list_images
from trainer.outputs import write_bytes_atomic
from trainer.pi_cost import HOW_TO_BUILD, Counter, count, find_counter
from trainer.report import html_page, percent
from trainer.train import TrainOptions, build_classifier, grid_heads, regularisation_grid, train_head

log = logging.getLogger(__name__)

COMPARE_JSON = "compare.json"
COMPARE_HTML = "compare.html"
# Measured costs live here, inside --bottleneck_dir: per backbone, weights and class count, a JSON
# file and the int8 model, so a cost of another kind needs no conversion.
COST_CACHE_FOLDER = "compare-costs"
# 2: each kind of device cost under its own key (format 1 had one unnamed x86 latency).
COST_FORMAT = 2
# Every backbone is priced alike, with no layer left in float: `convert`'s default keeps a few in
# float (--float_layers), which costs a Pi 5 a little more (docs/pi-cost.md), alike for every backbone.
# An estimate's budget, not a bound: the flowers' default counted 1.096x full int8 (docs/pi-cost.md).
FULL_INT8_NOTE = ("Priced as full int8 (--float_layers 0); convert's default leaves a few layers in float, "
                  f"estimated to cost a Pi 5 about {FLOAT_COST_SHARE:.1%} more.")
COST_KEYS = ("bottleneck_ms", "float32_bytes", "int8_bytes")  # besides device_costs, in a cost cache file
DEVICE_COST_KEYS = {"cost", "cortex_a72_cost"}  # BackboneFigures fields device_costs() fills
# Images the backbone's forward pass is timed on, TIMING_REPEATS times after one untimed batch
# that traces the graph. Times are the fastest repeat: other work on the machine only ever adds
# to a time, so the minimum is the least disturbed estimate (a median still moved 10x under load).
TIMING_IMAGES = 16
TIMING_REPEATS = 3
# Invocations of the int8 model whose fastest is its latency; one interpreter thread, as a Pi
# running other work would give it.
LATENCY_RUNS = 30
LATENCY_THREADS = 1
# The plot of accuracy against cost, px.
PLOT_WIDTH, PLOT_HEIGHT, PLOT_MARGIN = 640, 400, 60


@dataclass
class CompareOptions:
    """What `retrain-edge compare` does; each field is one flag."""

    image_dir: Path
    architectures: list[str]
    weights: list[str] = field(default_factory=lambda: ["imagenet"])  # one for every architecture, or one each
    bottleneck_dir: Path = field(default_factory=default_bottleneck_dir)
    report_dir: Path = Path("retrain_output")  # compare.html and compare.json
    folds: int = DEFAULT_FOLDS
    repeats: int = DEFAULT_REPEATS  # fold assignments (repeated k-fold); the first is train's folds
    how_many_training_steps: int = 4000
    seed: int = 0


@dataclass
class BackboneFigures:
    """One backbone's row of the comparison."""

    architecture: str
    weights: str
    fold_accuracies: list[float]  # on train's folds (the first fold assignment)
    accuracy: float  # out of fold, mean over photos and fold assignments
    accuracy_standard_error: float  # over photos, bursts counted once: how hard the photos are, mostly
    out_of_fold_ece: float  # after the temperature, as `train` calibrates
    temperature: float
    bottleneck_ms: float  # Keras forward pass per image on this machine
    float32_bytes: int
    int8_bytes: int  # full-integer int8 (uint8 in and out)
    cost: float  # in the cost name's unit (DeviceCost.name): lower is cheaper
    cortex_a72_cost: float | None = None  # Pi 4 instructions per full-int8 invoke, millions, when counted
    repeat_accuracies: list[float] = field(default_factory=list)  # out of fold, one per fold assignment
    # The most accurate backbone's accuracy minus this one's, on the same photos, and its standard error.
    difference_to_best: float = 0.0
    difference_standard_error: float = 0.0
    # The median out-of-fold ECE a perfectly calibrated model with these scores shows on as many photos.
    out_of_fold_ece_floor: float | None = None
    on_front: bool = False  # no other backbone is both cheaper and at least as accurate
    recommended: bool = False

    @property
    def tied_with_best(self) -> bool:
        """Within one standard error of the paired difference to the most accurate (or it)."""
        return self.difference_to_best <= self.difference_standard_error


@dataclass
class CompareResult:
    image_dir: Path
    figures: list[BackboneFigures]
    image_count: int
    folds: int
    repeats: int
    device_cost: DeviceCost
    json_path: Path
    html_path: Path

    @property
    def recommended(self) -> BackboneFigures:
        return next(figures for figures in self.figures if figures.recommended)


@dataclass(frozen=True)
class DeviceCost:
    """Which cost compare reports, chosen once per run by choose_device_cost()."""

    kind: str  # the key of its figures in the cost cache: a latency is never read as a count
    name: str  # what the cost column is, in the table, compare.json and compare.html
    note: str  # a sentence: what the figure is not, and how to get Pi counts when they are missing
    counter: Counter | None  # the Pi instruction counter, when it is built

    @property
    def counted(self) -> bool:
        return self.counter is not None


def choose_device_cost() -> DeviceCost:
    """Pi instruction counts when the counter of trainer/pi_cost.py is built, x86 latency otherwise."""
    counter = find_counter()
    if counter is not None:
        return DeviceCost("pi-instructions", "Cortex-A76 (Pi 5) instructions per full-int8 invoke, millions",
                          "Counted under qemu, one thread: a count, not a time, blind to memory stalls. Beside it "
                          "the Cortex-A72 (Pi 4), which lacks the dot-product instructions. " + FULL_INT8_NOTE, counter)
    return DeviceCost("x86-latency", "x86 full-int8 latency on this machine, ms",
                      f"Not a Pi figure. For Pi 4 and Pi 5 instruction counts: {HOW_TO_BUILD}. {FULL_INT8_NOTE}", None)


class LazyBackbone:
    """The Keras backbone, built only when something needs it: a warm rerun never does."""

    def __init__(self, backbone: Backbone, weights: str, seed: int):
        self.backbone, self.weights, self.seed = backbone, weights, seed

    @functools.cached_property
    def model(self):
        return build_backbone(self.backbone, self.weights, self.seed)

    @functools.cached_property
    def forward(self):
        return make_forward(self.model)


def checked_inputs(options: CompareOptions) -> list[tuple[Backbone, str, str]]:
    """(backbone, weights, weights id) per architecture; every bad name or file is a UserError
    here, before any work starts."""
    if not options.architectures:
        raise UserError("--architectures: name at least one backbone, e.g. mobilenet_v2_0.5_224,mobilenet_v2_0.35_224")
    if len(options.weights) not in (1, len(options.architectures)):
        raise UserError(f"--weights: give one value for every backbone or one per backbone "
                        f"({len(options.architectures)}), not {len(options.weights)}")
    if options.folds < 2 or options.repeats < 1 or options.how_many_training_steps < 1:
        raise UserError("--folds must be at least 2, --repeats and --how_many_training_steps at least 1")
    weights = options.weights * len(options.architectures) if len(options.weights) == 1 else options.weights
    backbones = [get_backbone(name) for name in options.architectures]
    names = [backbone.name for backbone in backbones]
    if len(set(names)) < len(names):
        raise UserError(f"--architectures names a backbone twice: {', '.join(names)}")
    for backbone, weight in zip(backbones, weights):
        check_imagenet_size(backbone, weight)
    return [(backbone, weight, weights_id(weight, options.seed)) for backbone, weight in zip(backbones, weights)]


def compare(options: CompareOptions) -> CompareResult:
    """k-fold accuracy, calibration, size and cost of each backbone; compare.json and compare.html."""
    inputs = checked_inputs(options)
    device = choose_device_cost()
    images = list_images(options.image_dir, 0, 0)
    examples = images.examples("training")
    paths = [images.image_dir / path for path, _ in examples]
    labels = np.array([label for _, label in examples], np.int64)
    keys = file_keys(paths)
    train_options = TrainOptions(image_dir=images.image_dir, how_many_training_steps=options.how_many_training_steps,
                                 folds=options.folds, seed=options.seed)
    file_names = [path.name for path in paths]
    measured = []  # (backbone, weights, calibration, per-photo correctness, cost cache path, cached figures)
    for backbone, weights, weights_key in inputs:
        lazy = LazyBackbone(backbone, weights, options.seed)
        cache = BottleneckCache.for_backbone(options.bottleneck_dir, backbone, weights_key)
        bottlenecks = image_bottlenecks(paths, keys, backbone.input_size, lambda pixels: lazy.forward(pixels), cache)
        judged = out_of_fold_correct(train_options, bottlenecks, labels, file_names, len(images.labels),
                                     options.repeats)
        if judged is None:
            raise UserError(f"{images.image_dir} has too few images for {options.folds}-fold cross-validation")
        calibration, correct = judged
        cost_path = Path(options.bottleneck_dir) / COST_CACHE_FOLDER / f"{backbone.name}-{weights_key}-{len(images.labels)}classes-v{COST_FORMAT}.json"
        cached = read_costs(cost_path)
        if cached is None or (device.kind not in cached["device_costs"] and not int8_path(cost_path).is_file()):
            cached, int8 = measure_costs(lazy, train_options, bottlenecks, labels, len(images.labels),
                                         calibration["temperature"],
                                         [paths[index] for index in calibration_indices(examples, images.labels)])
            write_bytes_atomic(int8_path(cost_path), int8)
            write_bytes_atomic(cost_path, json.dumps(cached).encode())
        measured.append((backbone, weights, calibration, correct, cost_path, cached))
    # Every model still without this kind of cost at once: the counter starts one emulated Python per CPU.
    missing = [(cost_path, cached) for *_, cost_path, cached in measured if device.kind not in cached["device_costs"]]
    for (cost_path, cached), cost in zip(missing, device_costs(device, [int8_path(path) for path, _ in missing],
                                                              len(images.labels))):
        cached["device_costs"][device.kind] = cost
        write_bytes_atomic(cost_path, json.dumps(cached).encode())
    figures = []
    for backbone, weights, calibration, correct, _, cached in measured:
        accuracy, standard_error = mean_and_clustered_standard_error(correct.mean(axis=0), file_names)
        figures.append(BackboneFigures(
            backbone.name, weights, calibration["fold_accuracies"], accuracy, standard_error,
            calibration["out_of_fold_ece"]["after"], calibration["temperature"], cached["bottleneck_ms"],
            cached["float32_bytes"], cached["int8_bytes"], **cached["device_costs"][device.kind],
            repeat_accuracies=[float(row.mean()) for row in correct],
            out_of_fold_ece_floor=calibration["out_of_fold_ece"]["perfectly_calibrated"]["median"]))
    set_paired_differences(figures, [correct for _, _, _, correct, _, _ in measured], file_names)
    mark_front_and_recommendation(figures)
    report_dir = Path(options.report_dir)
    result = CompareResult(images.image_dir, figures, len(labels), options.folds, options.repeats, device,
                           report_dir / COMPARE_JSON, report_dir / COMPARE_HTML)
    write_bytes_atomic(result.json_path, (json.dumps(
        {"image_dir": str(images.image_dir), "image_count": len(labels), "folds": options.folds,
         "repeats": options.repeats, "how_many_training_steps": options.how_many_training_steps, "cost_kind": device.kind,
         "cost_name": device.name, "cost_note": device.note,
         "recommended": result.recommended.architecture,
         "backbones": [{**asdict(row), "tied_with_best": row.tied_with_best} for row in figures]},
        indent=1) + "\n").encode())
    write_bytes_atomic(result.html_path, compare_page(result).encode())
    return result


def out_of_fold_correct(options: TrainOptions, bottlenecks: np.ndarray, labels: np.ndarray, file_names: list[str],
                        class_count: int, repeats: int) -> tuple[dict, np.ndarray] | None:
    """`train`'s out-of-fold calibration record (on its folds, the first assignment) and the
    per-photo correctness of out-of-fold heads, (repeats, n) bool, one row per fold assignment.
    None when fewer than two folds hold images."""
    fit = grid_heads(options, regularisation_grid(options), class_count)
    calibration, correct = None, []
    for repeat in range(repeats):
        fold_of = repeat_folds(file_names, options.folds, repeat)
        logits = out_of_fold_logits(fit, bottlenecks, labels, fold_of, class_count)
        if logits is None:
            return None
        if repeat == 0:
            calibration = out_of_fold_calibration(logits[0], labels, fold_of)
        correct.append(logits[0].argmax(axis=1) == labels)
    return calibration, np.array(correct)


def set_paired_differences(figures: list[BackboneFigures], correct: list[np.ndarray], file_names: list[str]) -> None:
    """Each row's difference to the most accurate row and its standard error, paired on the same
    photos; correct holds each row's per-photo correctness, (repeats, n)."""
    best = figures.index(most_accurate(figures))
    for row, row_correct in zip(figures, correct):
        row.difference_to_best, row.difference_standard_error = paired_difference(correct[best], row_correct,
                                                                                  file_names)


def most_accurate(figures: list[BackboneFigures]) -> BackboneFigures:
    """The row every other is compared with; of rows exactly as accurate, the cheapest."""
    return max(figures, key=lambda row: (row.accuracy, -row.cost))


def calibration_indices(examples: list[tuple[str, int]], labels: list[str]) -> list[int]:
    """Indices into examples of the images int8 is calibrated on, chosen as `convert` chooses them."""
    by_label = {label: [path for path, index in examples if index == label_index]
                for label_index, label in enumerate(labels)}
    index_of = {path: index for index, (path, _) in enumerate(examples)}
    return [index_of[path] for path in calibration_paths(by_label, DEFAULT_CALIBRATION_IMAGES)]


def int8_path(cost_path: Path) -> Path:
    """The cached int8 model beside a backbone's cost cache file."""
    return cost_path.with_name(f"{cost_path.stem}-int8.tflite")


def read_costs(path: Path) -> dict | None:
    """A backbone's cached sizes, bottleneck time and device costs; None when the file is missing or
    lacks a figure (truncated, hand-edited, another version), so they are measured again.

    A device cost without its figures is dropped: that kind of cost is measured again.
    """
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(cached, dict) and all(is_number(cached.get(key)) for key in COST_KEYS)
            and isinstance(cached.get("device_costs"), dict)):
        return None
    cached["device_costs"] = {
        kind: costs for kind, costs in cached["device_costs"].items()
        if isinstance(costs, dict) and is_number(costs.get("cost")) and all(map(is_number, costs.values()))
        and set(costs) <= DEVICE_COST_KEYS}
    return cached


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def measure_costs(lazy: LazyBackbone, options: TrainOptions, bottlenecks: np.ndarray, labels: np.ndarray,
                  class_count: int, temperature: float, calibration_images: list[Path]) -> tuple[dict, bytes]:
    """Bottleneck time and the float32 and int8 file sizes of one backbone (its device costs still
    empty), and the int8 model, whose device cost device_costs() measures.

    The head is trained on every photo; it changes neither size nor cost, but int8 is calibrated
    through it, as `convert` does.
    """
    size = lazy.backbone.input_size
    pixels = np.stack([load_rgb(path, size) for path in calibration_images])
    timed = pixels[:TIMING_IMAGES]
    lazy.forward(timed)
    bottleneck_ms = fastest_ms(lambda: lazy.forward(timed), TIMING_REPEATS) / len(timed)

    empty = np.zeros((0, bottlenecks.shape[1]), np.float32)
    head, _ = train_head(options, bottlenecks, labels, empty, np.zeros(0, np.int64), class_count, None)
    model = build_classifier(lazy.model, head.with_temperature(temperature))
    float32 = convert_model(model, "float32")
    int8 = convert_model(model, "int8", (pixels.astype(np.float32) - INPUT_MEAN) / INPUT_STD)
    return {"bottleneck_ms": bottleneck_ms, "float32_bytes": len(float32), "int8_bytes": len(int8),
            "device_costs": {}}, int8


def device_costs(device: DeviceCost, models: list[Path], class_count: int) -> list[dict]:
    """What each int8 model costs on the device, as BackboneFigures fields in device.name's unit
    (lower is cheaper): Cortex-A76 and A72 instructions per invoke, millions, when counted; else the
    fastest x86 latency of one invocation through the edge runtime, one thread."""
    if not models:
        return []
    if device.counted:
        counts = {(cost.model, cost.cpu): cost.invoke for cost in count(models, counter=device.counter)}
        return [{"cost": counts[model.resolve(), "cortex-a76"] / 1e6,
                 "cortex_a72_cost": counts[model.resolve(), "cortex-a72"] / 1e6} for model in models]
    return [{"cost": x86_latency_ms(model, class_count)} for model in models]


def x86_latency_ms(model_path: Path, class_count: int) -> float:
    """The fastest of LATENCY_RUNS invocations of the model through the edge runtime on this machine, ms."""
    from edge.model import load_model

    with tempfile.TemporaryDirectory(prefix="retrain-edge-compare-") as folder:
        labels_path = Path(folder) / "labels.txt"
        labels_path.write_text("".join(f"{index}\n" for index in range(class_count)))
        model = load_model(model_path, labels_path=labels_path, num_threads=LATENCY_THREADS)
    # Fixed pixels: no kernel of these models branches on their values.
    image = np.random.default_rng(0).integers(0, 256, (*model.input_size, 3), dtype=np.uint8)
    model.scores(image)
    return fastest_ms(lambda: model.scores(image), LATENCY_RUNS)


def fastest_ms(work, repeats: int) -> float:
    """The fastest of `repeats` calls of work(), in ms."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def mark_front_and_recommendation(figures: list[BackboneFigures]) -> None:
    """Set on_front (no other row is cheaper and at least as accurate, or as cheap and more
    accurate) and recommended: the cheapest row tied with the most accurate, within one standard
    error of their paired difference (set_paired_differences)."""
    for row in figures:
        row.recommended = False
        row.on_front = not any(
            (other.cost < row.cost and other.accuracy >= row.accuracy)
            or (other.cost <= row.cost and other.accuracy > row.accuracy) for other in figures)
    candidates = [row for row in figures if row.tied_with_best]
    min(candidates, key=lambda row: (row.cost, -row.accuracy)).recommended = True


def format_compare(result: CompareResult) -> str:
    """The table `compare` prints, then the recommendation."""
    name_width = max(len("backbone"), *(len(row.architecture) for row in result.figures))
    device = result.device_cost
    lines = [f"{result.folds}-fold cross-validation, {plural(result.repeats, 'fold assignment')}, on "
             f"{result.image_count} photos; cost: {device.name}",
             device.note,
             f"{'backbone':<{name_width}}  accuracy (± s.e.)  vs best (± s.e.)  out-of-fold ECE (floor)  bottleneck ms  "
             f"float32 MB  int8 MB      cost{'  Pi 4 (A72)' if device.counted else ''}  front"]
    for row in result.figures:
        lines.append(f"{row.architecture:<{name_width}}  {row.accuracy:>8.1%} ± {row.accuracy_standard_error:>5.1%}  "
                     f"{versus_best(row, result.figures):>16}  {calibration_error(row):>23}  {row.bottleneck_ms:>13.1f}  "
                     f"{row.float32_bytes / 1e6:>10.2f}  {row.int8_bytes / 1e6:>7.2f}  {row.cost:>8.2f}"
                     f"{f'  {row.cortex_a72_cost:>10.2f}' if device.counted else ''}  {'yes' if row.on_front else '':>5}")
    lines.append(f"recommended: {result.recommended.architecture} ({recommendation_reason(result)}); "
                 f"train it with: {train_command(result)}")
    return "\n".join(lines)


def calibration_error(row: BackboneFigures) -> str:
    """The out-of-fold ECE and, in brackets, the floor to read it against (None: not measured)."""
    floor = "" if row.out_of_fold_ece_floor is None else f" ({row.out_of_fold_ece_floor:.1%})"
    return f"{row.out_of_fold_ece:.1%}{floor}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def versus_best(row: BackboneFigures, figures: list[BackboneFigures]) -> str:
    """This row's accuracy minus the most accurate's ± the standard error of that paired difference."""
    if row is most_accurate(figures):
        return "best"
    return f"{0.0 - row.difference_to_best:+.1%} ± {row.difference_standard_error:.1%}"  # 0.0 -: no "-0.0%"


def recommendation_reason(result: CompareResult) -> str:
    """Why the recommended backbone, in words, naming the backbones tied with the most accurate."""
    chosen = result.recommended
    best = most_accurate(result.figures)
    rule = "within one standard error of the paired difference"
    tied = ", ".join(f"{row.architecture} {versus_best(row, result.figures)}" for row in result.figures
                     if row.tied_with_best and row is not best)
    if not tied:
        return f"the most accurate; no other backbone is {rule}"
    if chosen is best:
        return f"the most accurate, and the cheapest of those tied with it, {rule}: {tied}"
    return f"the cheapest of those tied with the most accurate, {best.architecture}, {rule}: {tied}"


def train_command(result: CompareResult) -> str:
    """The `retrain-edge train` command line for the recommended backbone."""
    best = result.recommended
    return (f"retrain-edge train --image_dir {result.image_dir} --architecture {best.architecture}"
            + ("" if best.weights == "imagenet" else f" --weights {best.weights}"))


def accuracy_cost_svg(figures: list[BackboneFigures], cost_name: str) -> str:
    """An inline SVG: accuracy (± one standard error) against cost, the front joined and filled."""
    costs = [row.cost for row in figures]
    lows = [row.accuracy - row.accuracy_standard_error for row in figures]
    highs = [row.accuracy + row.accuracy_standard_error for row in figures]
    cost_low, cost_high = min(costs), max(costs)
    accuracy_low, accuracy_high = min(lows), max(highs)
    cost_pad = (cost_high - cost_low) * 0.1 or cost_high * 0.1 or 1.0
    accuracy_pad = (accuracy_high - accuracy_low) * 0.1 or 0.01
    cost_low, cost_high = cost_low - cost_pad, cost_high + cost_pad
    accuracy_low, accuracy_high = accuracy_low - accuracy_pad, accuracy_high + accuracy_pad

    def x(cost):
        return PLOT_MARGIN + (cost - cost_low) / (cost_high - cost_low) * (PLOT_WIDTH - 2 * PLOT_MARGIN)

    def y(accuracy):
        return PLOT_HEIGHT - PLOT_MARGIN - (accuracy - accuracy_low) / (accuracy_high - accuracy_low) * (PLOT_HEIGHT - 2 * PLOT_MARGIN)

    front = sorted((row for row in figures if row.on_front), key=lambda row: row.cost)
    parts = [f'<svg id="accuracy-cost" xmlns="http://www.w3.org/2000/svg" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" '
             f'role="img" aria-label="accuracy against cost">',
             f'<line x1="{PLOT_MARGIN}" y1="{PLOT_HEIGHT - PLOT_MARGIN}" x2="{PLOT_WIDTH - PLOT_MARGIN}" '
             f'y2="{PLOT_HEIGHT - PLOT_MARGIN}" stroke="black"/>',
             f'<line x1="{PLOT_MARGIN}" y1="{PLOT_MARGIN}" x2="{PLOT_MARGIN}" y2="{PLOT_HEIGHT - PLOT_MARGIN}" stroke="black"/>',
             f'<text x="{PLOT_WIDTH / 2}" y="{PLOT_HEIGHT - 15}" text-anchor="middle" font-size="12">'
             f'{html.escape(cost_name)} (lower is cheaper)</text>',
             f'<text x="15" y="{PLOT_HEIGHT / 2}" text-anchor="middle" font-size="12" '
             f'transform="rotate(-90 15 {PLOT_HEIGHT / 2})">k-fold accuracy (± one standard error)</text>']
    for accuracy in (accuracy_low + accuracy_pad, accuracy_high - accuracy_pad):
        parts.append(f'<text x="{PLOT_MARGIN - 5}" y="{y(accuracy) + 4:.1f}" text-anchor="end" font-size="11">'
                     f'{accuracy:.1%}</text>')
    for cost in (min(costs), max(costs)):
        parts.append(f'<text x="{x(cost):.1f}" y="{PLOT_HEIGHT - PLOT_MARGIN + 15}" text-anchor="middle" '
                     f'font-size="11">{cost:.3g}</text>')
    if len(front) > 1:
        points = " ".join(f"{x(row.cost):.1f},{y(row.accuracy):.1f}" for row in front)
        parts.append(f'<polyline class="front" points="{points}" fill="none" stroke="#1a7f37" stroke-dasharray="4 3"/>')
    for row in figures:
        cx, cy = x(row.cost), y(row.accuracy)
        parts.append(f'<line x1="{cx:.1f}" y1="{y(row.accuracy - row.accuracy_standard_error):.1f}" x2="{cx:.1f}" '
                     f'y2="{y(row.accuracy + row.accuracy_standard_error):.1f}" stroke="#555"/>')
        parts.append(f'<circle class="backbone{" on-front" if row.on_front else ""}" data-architecture='
                     f'"{html.escape(row.architecture)}" cx="{cx:.1f}" cy="{cy:.1f}" r="{7 if row.recommended else 5}" '
                     f'fill="{"#1a7f37" if row.on_front else "white"}" stroke="#1a7f37" stroke-width="2"/>')
        # Labels of points right of the middle run leftwards, so none leaves the plot.
        left = cx > PLOT_WIDTH / 2
        parts.append(f'<text x="{cx - 9 if left else cx + 9:.1f}" y="{cy - 8:.1f}" font-size="11" '
                     f'text-anchor="{"end" if left else "start"}">{html.escape(row.architecture)}'
                     f'{" (recommended)" if row.recommended else ""}</text>')
    parts.append("</svg>")
    return "".join(parts)


def compare_page(result: CompareResult) -> str:
    device = result.device_cost
    rows = "".join(
        f'<tr data-architecture="{html.escape(row.architecture)}"><td>{html.escape(row.architecture)}'
        f'{" <strong>(recommended)</strong>" if row.recommended else ""}</td>'
        f"<td>{percent(row.accuracy)} ± {percent(row.accuracy_standard_error)}</td>"
        f"<td>{html.escape(versus_best(row, result.figures))}</td><td>{html.escape(calibration_error(row))}</td>"
        f"<td>{row.bottleneck_ms:.1f}</td><td>{row.float32_bytes / 1e6:.2f}</td><td>{row.int8_bytes / 1e6:.2f}</td>"
        f"<td>{row.cost:.3g}</td>{f'<td>{row.cortex_a72_cost:.3g}</td>' if device.counted else ''}"
        f"<td>{'yes' if row.on_front else ''}</td></tr>" for row in result.figures)
    best = result.recommended
    sections = [
        f"<p>Each backbone's head was trained {result.folds} times on the cached bottlenecks of "
        f"{result.image_count} photos, each time scoring the fold it did not see, for each of "
        f"{plural(result.repeats, 'fold assignment')}. <strong>Recommended: {html.escape(best.architecture)}</strong>: "
        f"{html.escape(recommendation_reason(result))}. The rule: the cheapest backbone within one standard error of "
        f"the most accurate, the error being that of their per-photo difference, since every backbone is judged on "
        f"the same photos. Filled points are on the front: no other backbone is both cheaper and at least as "
        f"accurate.</p>",
        f"<p id=\"cost\">Cost: {html.escape(device.name)}. {html.escape(device.note)}</p>",
        accuracy_cost_svg(result.figures, device.name),
        "<table id=\"backbones\"><tr><th>backbone</th><th>k-fold accuracy ± s.e.</th>"
        "<th>minus the most accurate ± s.e. of the paired difference</th><th>out-of-fold ECE (a perfectly calibrated model's median on as many photos)</th>"
        "<th>bottleneck ms / image</th><th>float32 MB</th><th>int8 MB</th>"
        f"<th>{html.escape(device.name)}</th>"
        f"{'<th>Cortex-A72 (Pi 4) instructions per full-int8 invoke, millions</th>' if device.counted else ''}"
        f"<th>front</th></tr>{rows}</table>",
        f"<p>Train it: <code>{html.escape(train_command(result))}</code></p>",
    ]
    return html_page("retrain-edge compare", sections)
