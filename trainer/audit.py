"""The data audit, before training: duplicates and near-duplicates, bursts split across sets,
likely mislabelled images, classes too small.

Reads the images (and the bottleneck cache) and writes only audit.html and audit.json (the
findings for programs: `retrain-edge review --audit` lists the likely mislabelled photos from it).
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.collect import BURST_ID
from edge.image import load_rgb
from trainer import UserError
from trainer.backbones import DEFAULT_ARCHITECTURE
from trainer.bottlenecks import DECODE_THREADS, default_bottleneck_dir
from trainer.calibration import softmax
from trainer.crossval import DEFAULT_FOLDS, hash_folds
from trainer.dataset import MIN_IMAGES_PER_CLASS, SETS, list_images
from trainer.outputs import AUDIT_JSON, write_bytes_atomic
from trainer.report import GALLERY_IMAGES, gallery, html_page, thumbnail_card

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.html"
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
# The perceptual hash (pHash): the signs, against their median, of the 16x16 lowest-frequency
# DCT coefficients of the image shrunk to 64x64 grey pixels: 256 bits that survive resizing and
# recompression. The classic pHash keeps 8x8 of 32x32 (64 bits); on plain synthetic images two
# unrelated pictures came within 6 bits, as close as resized copies of a photo.
HASH_IMAGE_SIZE = (64, 64)  # (height, width) px
HASH_FREQUENCIES = 16  # per axis: 256 bits
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma
# DCT-II basis (unnormalised: a constant factor does not change a sign against the median).
DCT_BASIS = np.cos(np.pi * np.arange(HASH_FREQUENCIES)[:, None] * (2 * np.arange(HASH_IMAGE_SIZE[0])[None, :] + 1)
                   / (2 * HASH_IMAGE_SIZE[0])).astype(np.float32)
BIT_COUNTS = np.array([bin(value).count("1") for value in range(256)], np.uint8)
# Near-duplicates differ in at most this many pHash bits. See scripts/bench_near_duplicates.py:
# on the 600 flower photos with 240 planted copies, it finds every resized and recompressed copy
# with no false pair, in the middle of a wide margin.
DEFAULT_NEAR_DUPLICATE_BITS = 32
# Hash rows compared against all images at once: 128 x 10,000 images x 32 bytes = 41 MB.
HASH_BLOCK_ROWS = 128


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
    near_duplicate_bits: int = DEFAULT_NEAR_DUPLICATE_BITS  # pHash bits (of 256) two near-copies differ in at most
    report_dir: Path = Path("retrain_output")  # where audit.html goes


@dataclass
class AuditResult:
    """Likely problems in a dataset; every path is relative to image_dir."""

    image_dir: Path
    image_count: int
    # One group per set of identical files: [{"path", "label", "set"}], two or more.
    duplicates: list[list[dict]]
    # Groups of near-copies (pHashes close, directly or through others) that are not all identical
    # files: [{"path", "label", "set"}], two or more.
    near_duplicates: list[list[dict]]
    # {"burst": burst id, "files": [{"path", "label", "set"}]}: one burst's files in several sets.
    straddling_bursts: list[dict]
    # {"path", "label", "predicted", "confidence"}: the cross-validated head's other class, most confident first.
    suspected_mislabels: list[dict]
    # {"label", "images", "validation", "testing", "reason"}
    small_classes: list[dict]
    report_path: Path

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.near_duplicates or self.straddling_bursts or self.suspected_mislabels
                    or self.small_classes)


def audit(options: AuditOptions) -> AuditResult:
    """Duplicates, near-duplicates, split bursts, likely mislabelled images and too-small classes; writes audit.html."""
    from trainer.backbones import build_backbone, get_backbone, weights_id
    from trainer.bottlenecks import BottleneckCache, file_keys, image_bottlenecks, make_forward

    if options.folds < 2:
        raise UserError("--folds must be at least 2")
    if not 0 < options.mislabel_confidence <= 1:
        raise UserError("--mislabel_confidence must be in (0, 1]")
    if not 0 <= options.near_duplicate_bits < HASH_FREQUENCIES**2:
        raise UserError(f"--near_duplicate_bits must be from 0 to {HASH_FREQUENCIES**2 - 1}")
    images = list_images(options.image_dir, options.validation_percentage, options.testing_percentage)
    entries = [{"path": path, "label": label, "set": set_name}
               for set_name in SETS for label, paths in images.files[set_name].items() for path in paths]
    entries.sort(key=lambda entry: entry["path"])
    paths = [images.image_dir / entry["path"] for entry in entries]
    keys = file_keys(paths)
    hashes = perceptual_hashes(paths)

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
        probabilities = cross_validated_probabilities(bottlenecks, label_indices, [path.name for path in paths],
                                                      len(images.labels), options.folds)
        suspects = suspected_mislabels(entries, probabilities, images.labels, label_indices,
                                       options.mislabel_confidence)
    result = AuditResult(
        images.image_dir, len(entries), duplicate_groups(entries, keys),
        near_duplicate_groups(entries, keys, hashes, options.near_duplicate_bits), straddling_bursts(entries),
        suspects,
        small_classes(images.files, images.labels, options.validation_percentage, options.testing_percentage),
        Path(options.report_dir) / AUDIT_FILE)
    write_audit_report(result)
    write_audit_json(result)
    return result


def duplicate_groups(entries: list[dict], keys: list[str]) -> list[list[dict]]:
    """Entries whose files have the same content hash, grouped; groups in path order."""
    by_key = defaultdict(list)
    for entry, key in zip(entries, keys):
        by_key[key].append(entry)
    return sorted((group for group in by_key.values() if len(group) > 1), key=lambda group: group[0]["path"])


def perceptual_hash(path: Path) -> np.ndarray:
    """(32,) uint8: the 256-bit pHash of an image file."""
    grey = load_rgb(path, HASH_IMAGE_SIZE).astype(np.float32) @ GREY_WEIGHTS
    low_frequencies = DCT_BASIS @ grey @ DCT_BASIS.T
    return np.packbits(low_frequencies > np.median(low_frequencies))


def perceptual_hashes(paths: Sequence[Path]) -> np.ndarray:
    """(len(paths), 32) uint8: perceptual_hash of each file, decoded in worker threads."""
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        return np.stack(list(pool.map(perceptual_hash, paths))).reshape(len(paths), -1)


def hamming_distances(hashes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(n, b), (m, b) uint8 packed hashes -> (n, m) int32: the bits in which each pair differs."""
    return BIT_COUNTS[hashes[:, None, :] ^ others[None, :, :]].sum(axis=2, dtype=np.int32)


def near_duplicate_groups(entries: list[dict], keys: list[str], hashes: np.ndarray, max_bits: int) -> list[list[dict]]:
    """Entries linked, directly or through others, by (n, 32) uint8 pHashes differing in at most max_bits.

    A group whose files are all identical is left out: duplicate_groups reports it. Groups in path order.
    """
    parent = list(range(len(entries)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for start in range(0, len(entries), HASH_BLOCK_ROWS):
        near = hamming_distances(hashes[start:start + HASH_BLOCK_ROWS], hashes) <= max_bits
        for row, column in zip(*np.nonzero(near)):
            first, second = root(start + int(row)), root(int(column))
            if first != second:
                parent[max(first, second)] = min(first, second)
    members = defaultdict(list)
    for index in range(len(entries)):
        members[root(index)].append(index)
    return sorted(([entries[index] for index in group] for group in members.values()
                   if len({keys[index] for index in group}) > 1), key=lambda group: group[0]["path"])


def straddling_bursts(entries: list[dict]) -> list[dict]:
    """Bursts whose files fall in more than one set: [{"burst": burst id, "files": entries}].

    A burst is the files whose names carry one burst id (edge-classify --collect and
    --save_uncertain write `<burst id>_nohash_<n>.jpg`). Named so, a burst always lands in one
    set, since the split hashes the name without its `_nohash_` part; it straddles sets only when
    renaming cut that part (`<burst id>_3.jpg`) or added to the front (`copy of <burst id>_...`),
    and then its near-identical frames train and test each other.
    """
    by_burst = defaultdict(list)
    for entry in entries:
        found = BURST_ID.search(entry["path"].rsplit("/", 1)[-1])
        if found:
            by_burst[found.group()].append(entry)
    return [{"burst": burst, "files": files} for burst, files in sorted(by_burst.items())
            if len({entry["set"] for entry in files}) > 1]


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


def cross_validated_probabilities(bottlenecks: np.ndarray, labels: np.ndarray, file_names: Sequence[str],
                                  class_count: int, folds: int) -> np.ndarray:
    """(n, d), (n,), n base file names -> (n, classes): each image scored by a head fitted on the other folds.

    Folds are `train`'s (trainer.crossval.hash_folds): a burst's frames are held out together, so
    a mislabelled burst is not confirmed by its own siblings. An image whose class has no image in
    the other folds (a class smaller than two) cannot be judged: its row stays all zeros.
    """
    fold_of = hash_folds(file_names, folds)
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
    """What a group of identical or near-identical files means for training, in words."""
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
    for group in result.near_duplicates:
        members = ", ".join(f"{entry['path']} ({entry['set']})" for entry in group)
        lines.append(f"near-duplicate {duplicate_kind(group)}: {members}")
    for burst in result.straddling_bursts:
        members = ", ".join(f"{entry['path']} ({entry['set']})" for entry in burst["files"])
        lines.append(f"burst {burst['burst']} across sets: inflates measured accuracy: {members}")
    for suspect in result.suspected_mislabels:
        lines.append(f"likely mislabelled: {suspect['path']} is labelled {suspect['label']!r} but looks like "
                     f"{suspect['predicted']!r} ({suspect['confidence']:.2f})")
    for small in result.small_classes:
        lines.append(f"small class: {small['label']!r} has {small['images']} images ({small['reason']})")
    if result.clean:
        lines.append("no problems found")
    return "\n".join(lines)


def write_audit_json(result: AuditResult) -> None:
    """audit.json beside audit.html: every finding; each path in it is relative to its image_dir, which is absolute."""
    findings = {name: getattr(result, name) for name in ("image_count", "duplicates", "near_duplicates",
                                                        "straddling_bursts", "suspected_mislabels", "small_classes")}
    write_bytes_atomic(result.report_path.with_name(AUDIT_JSON),
                       json.dumps({"image_dir": str(Path(result.image_dir).resolve()), **findings}, indent=1).encode())


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
    # Every member of a near-duplicate group is shown: how alike they look is the question.
    near_cards = [[thumbnail_card(result.image_dir / entry["path"], entry["path"],
                                  f"group {number}: {html.escape(duplicate_kind(group))} ({entry['set']})")
                   for entry in group] for number, group in enumerate(result.near_duplicates, start=1)]
    shown_cards = [card for cards in near_cards for card in cards][:GALLERY_IMAGES]
    sections.append(f"<h2>Near-duplicates ({len(result.near_duplicates)} groups)</h2>"
                    "<p>Resized or recompressed copies of one photo.</p>"
                    + gallery(shown_cards, sum(map(len, near_cards))))
    burst_rows = "".join(
        f"<tr><td>{html.escape(burst['burst'])}</td><td>{html.escape(', '.join(sorted({entry['set'] for entry in burst['files']})))}"
        f"</td><td>{html.escape(', '.join(entry['path'] for entry in burst['files']))}</td></tr>"
        for burst in result.straddling_bursts)
    sections.append(f"<h2>Bursts across sets ({len(result.straddling_bursts)})</h2>" + (
        "<p>Frames of one burst were renamed out of the <code>_nohash_</code> convention, so the split "
        "scattered them: they train and test each other.</p>"
        "<table><tr><th>burst</th><th>sets</th><th>files</th></tr>" f"{burst_rows}</table>" if burst_rows else ""))
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
