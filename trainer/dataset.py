"""The dataset stage: image_dir/<class>/*.jpg → labels and a stable training/validation/testing split.

A file's set depends on its base name alone (the classic retrain.py hash), so it never changes
sets when the dataset moves to another folder or machine, when --image_dir is spelled another
way, or when files are added. Every file is decoded once here, so the later stages only ever see
images that decode; the others are skipped with a warning and listed in ImageList.skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edge.image import IMAGE_SUFFIXES, ImageError, open_rgb
from trainer import UserError

SETS = ("training", "validation", "testing")
# The classic retrain.py's split, bit for bit: percentage = (int(sha1(key)) % (MAX + 1)) * 100 / MAX
# with MAX = 2^27 - 1, i.e. "modulo 2^27, times 100 / (2^27 - 1)". Only the key differs: the classic
# script hashed the path as typed, this hashes the base name.
MAX_NUM_IMAGES_PER_CLASS = 2**27 - 1
# Files named like "a_nohash_1.jpg" and "a_nohash_2.jpg" (e.g. several photos of one object) share
# the key "a", so they all land in one set and never leak between training and testing.
NOHASH_SUFFIX = re.compile(r"_nohash_.*$")
NON_LABEL_CHARACTERS = re.compile(r"[^a-z0-9]+")
# Fewer images than this per class gives unreliable accuracy figures (the classic script's threshold).
MIN_IMAGES_PER_CLASS = 20
# (width, height) px: the decodability check lets the JPEG decoder scale down by up to 8 while
# decoding. It still reads the whole stream, so truncated files are caught, at a fraction of the cost.
DECODE_CHECK_SIZE = (64, 64)
# Pillow releases the GIL while decoding, so a few threads check files in parallel.
DECODE_CHECK_THREADS = min(8, os.cpu_count() or 1)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageList:
    """The usable images of a dataset, by set and label.

    image_dir: absolute. labels: sorted; a label's index is the model's output index.
    files: set name → label → sorted paths relative to image_dir (posix); every label is present
    in every set, possibly with no paths. skipped: [{"path": relative path, "reason": why}] for the
    files that did not decode.
    """

    image_dir: Path
    labels: list[str]
    files: dict[str, dict[str, list[str]]]
    skipped: list[dict]

    def examples(self, set_name: str) -> list[tuple[str, int]]:
        """(relative path, label index) for every image of set_name, by label index then path."""
        by_label = self.files[set_name]
        return [(path, index) for index, label in enumerate(self.labels) for path in by_label[label]]


def label_for_folder(folder_name: str) -> str:
    """The classic label of a class folder: lower case, each run of characters outside [a-z0-9] → one space.

    Unlike the classic script, leading and trailing spaces are dropped: a label file line
    ending in a space is invisible and gets stripped by readers.
    """
    return NON_LABEL_CHARACTERS.sub(" ", folder_name.lower()).strip()


def burst_key(file_name: str) -> str:
    """What a file's set is hashed from: its base name with any `_nohash_...` suffix removed, so
    the frames of one burst share it."""
    # macOS stores names decomposed (NFD), Linux and Windows as typed (usually NFC): one form
    # keeps an accented name in the same set on every machine. ASCII names are unchanged.
    return unicodedata.normalize("NFC", NOHASH_SUFFIX.sub("", file_name))


def hash_bucket(file_name: str) -> int:
    """A file's bucket in [0, MAX_NUM_IMAGES_PER_CLASS], from its burst key."""
    digest = hashlib.sha1(burst_key(file_name).encode("utf-8", "surrogateescape")).hexdigest()
    return int(digest, 16) % (MAX_NUM_IMAGES_PER_CLASS + 1)


def hash_percentage(file_name: str) -> float:
    """Where a file falls in [0, 100], from its base name with any `_nohash_...` suffix removed."""
    return hash_bucket(file_name) * (100.0 / MAX_NUM_IMAGES_PER_CLASS)


def set_for_file(file_name: str, validation_percentage: float = 10, testing_percentage: float = 10) -> str:
    """The set ("training", "validation" or "testing") a file with this base name belongs to."""
    percentage = hash_percentage(file_name)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def list_images(image_dir: str | Path, validation_percentage: float = 10, testing_percentage: float = 10) -> ImageList:
    """Find the classes and images under image_dir, check every image decodes, and split them.

    Raises UserError when image_dir is missing or not a folder, has fewer than two class folders,
    has two folders with the same label, or has a class without a usable image.
    """
    if not (0 <= validation_percentage <= 100 and 0 <= testing_percentage <= 100) or (
        validation_percentage + testing_percentage > 100
    ):
        raise UserError(
            f"--validation_percentage ({validation_percentage}) and --testing_percentage ({testing_percentage}) "
            "must each be between 0 and 100 and add up to at most 100."
        )
    folder = Path(image_dir).expanduser()
    if not folder.exists():
        raise UserError(f"--image_dir {image_dir} does not exist.")
    if not folder.is_dir():
        raise UserError(f"--image_dir {image_dir} is a file, not a folder of class folders.")
    folder = folder.resolve()

    folder_by_label = _class_folders(folder)
    candidates = {
        label: [f"{folder_name}/{file_name}" for file_name in _image_file_names(folder / folder_name)]
        for label, folder_name in folder_by_label.items()
    }
    all_paths = [path for paths in candidates.values() for path in paths]
    with ThreadPoolExecutor(DECODE_CHECK_THREADS) as pool:
        problems = dict(zip(all_paths, pool.map(lambda path: _decode_problem(folder / path), all_paths)))
    skipped = [{"path": path, "reason": reason} for path, reason in problems.items() if reason is not None]
    for entry in skipped:
        log.warning("skipping %s: %s", entry["path"], entry["reason"])
    usable = {label: [path for path in paths if problems[path] is None] for label, paths in candidates.items()}

    empty_folders = [folder_by_label[label] for label, paths in usable.items() if not paths]
    if empty_folders:
        names = ", ".join(repr(name) for name in empty_folders)
        raise UserError(
            f"The class folder{'s' if len(empty_folders) > 1 else ''} {names} in {folder} "
            f"{'have' if len(empty_folders) > 1 else 'has'} no usable .jpg, .jpeg or .png image."
        )

    labels = sorted(usable)
    files = {set_name: {label: [] for label in labels} for set_name in SETS}
    for label in labels:
        for path in usable[label]:
            files[set_for_file(path.rsplit("/", 1)[1], validation_percentage, testing_percentage)][label].append(path)
    _warn_about_small_sets(files, labels, {"validation": validation_percentage, "testing": testing_percentage})
    return ImageList(image_dir=folder, labels=labels, files=files, skipped=skipped)


def _class_folders(image_dir: Path) -> dict[str, str]:
    """label → class folder name, for the sub-folders of image_dir, sorted by label."""
    return class_folders([entry.name for entry in os.scandir(image_dir) if entry.is_dir()], image_dir)


def class_folders(folder_names: list[str], image_dir: str | Path) -> dict[str, str]:
    """label → class folder name for the visible names among folder_names, sorted by label.

    folder_names are image_dir's sub-folders however they were listed (os.scandir here, Beam's
    FileSystems for a bucket). Raises UserError for no class folder, one, or two with the same label.
    """
    folder_names = sorted(name for name in set(folder_names) if not name.startswith("."))
    if not folder_names:
        raise UserError(
            f"--image_dir {image_dir} has no class folders; put each class's images in a sub-folder named after the class."
        )
    folder_by_label: dict[str, str] = {}
    for folder_name in folder_names:
        label = label_for_folder(folder_name)
        if not label:
            raise UserError(f"The folder {folder_name!r} in {image_dir} gives an empty label (a label keeps only the "
                            "letters a-z and digits of its folder's name); rename it.")
        if label in folder_by_label:
            raise UserError(
                f"The folders {folder_by_label[label]!r} and {folder_name!r} in {image_dir} both give the label "
                f"{label!r}; rename one of them."
            )
        folder_by_label[label] = folder_name
    if len(folder_by_label) == 1:
        raise UserError(
            f"--image_dir {image_dir} has only one class folder ({folder_names[0]!r}); a classifier needs at least two."
        )
    return dict(sorted(folder_by_label.items()))


def is_image_file_name(file_name: str) -> bool:
    """Whether a file in a class folder is one of its images: visible, with an image suffix (others are ignored, as classically)."""
    return not file_name.startswith(".") and Path(file_name).suffix.lower() in IMAGE_SUFFIXES


def _image_file_names(class_dir: Path) -> list[str]:
    """Sorted names of the image files in class_dir."""
    return sorted(entry.name for entry in os.scandir(class_dir) if entry.is_file() and is_image_file_name(entry.name))


def _decode_problem(path: Path) -> str | None:
    """Why the file at path is not a usable image, or None when it decodes."""
    try:
        open_rgb(path, draft_size=DECODE_CHECK_SIZE)
    except ImageError as error:
        return str(error).removeprefix(f"{path}: ")
    return None


def _warn_about_small_sets(files: dict[str, dict[str, list[str]]], labels: list[str], percentages: dict[str, float]) -> None:
    for label in labels:
        count = sum(len(files[set_name][label]) for set_name in SETS)
        if count < MIN_IMAGES_PER_CLASS:
            log.warning(
                "class %r has only %d usable images; with fewer than %d per class the accuracy figures are unreliable.",
                label, count, MIN_IMAGES_PER_CLASS,
            )
    # The classic script divided by zero here; an empty bucket only narrows what evaluation measures.
    for set_name, percentage in percentages.items():
        if percentage == 0:
            continue
        empty = [label for label in labels if not files[set_name][label]]
        if len(empty) == len(labels):
            log.warning(
                "the %s set is empty (no file name hashes into its %g%%), so there is no %s accuracy.",
                set_name, percentage, set_name,
            )
            continue
        for label in empty:
            log.warning(
                "class %r has no images in the %s set, so %s accuracy covers the other classes only.",
                label, set_name, set_name,
            )
