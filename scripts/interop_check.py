"""MediaPipe Tasks reads our models' standard metadata and classifies as edge-classify does.

Runs in the interop venv (scripts/interop_check.sh), beside the real `mediapipe` package and
never inside the project's venv: MediaPipe brings its own OpenCV. For each model:
- its TFLITE_METADATA is parsed with MediaPipe's own schema module (normalisation, the label
  file and its type, the minimum parser version);
- MediaPipe's ImageClassifier loads it and classifies every image, with all categories;
- the project's `edge-classify` classifies the same files (--json, every class) in a subprocess;
then one table: category names present and equal to labels.txt, top-1 agreement, the largest
score difference. Exits 1 when a model misses a target: names in every model, and for our models
the agreement targets below. The third-party models' agreement is reported, not judged: on
their three test images a hosted model's top two are sometimes within MediaPipe's resizing
difference of each other, and one image is a third of the figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mediapipe import Image
from mediapipe.tasks.metadata import metadata_schema_py_generated as metadata_schema
from mediapipe.tasks.metadata import schema_py_generated as tflite_schema
from mediapipe.tasks.python import BaseOptions, vision

OUR_MODES = ("float32", "dynamic", "float16", "int8")
# Top-1 agreement targets: MediaPipe decodes and resizes in its own way, and int8 magnifies that.
AGREEMENT_TARGET = {"float32": 0.99, "dynamic": 0.99, "float16": 0.99, "int8": 0.97}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
THIRDPARTY_LABELS = "imagenet_labels.txt"  # beside the hosted ImageNet classifiers
_QUANTIZED_TYPES = (tflite_schema.TensorType.UINT8, tflite_schema.TensorType.INT8)


@dataclass
class Row:
    model: str
    mode: str
    names: str  # "yes" when every category has a name and the names equal labels.txt in order
    agreement: float
    max_difference: float
    images: int
    schema: str  # what MediaPipe's schema module read
    target: float | None  # least top-1 agreement; None: reported only

    @property
    def passed(self) -> bool:
        return self.names == "yes" and not self.schema.startswith("FAIL") and \
            (self.target is None or self.agreement >= self.target)


def standard_metadata(model_bytes: bytes):
    """(ModelMetadataT from MediaPipe's schema module, input tensor type), or (None, type)."""
    model = tflite_schema.Model.GetRootAsModel(model_bytes, 0)
    graph = model.Subgraphs(0)
    input_type = graph.Tensors(graph.Inputs(0)).Type()
    for index in range(model.MetadataLength()):
        if model.Metadata(index).Name() == b"TFLITE_METADATA":
            content = model.Buffers(model.Metadata(index).Buffer()).DataAsNumpy().tobytes()
            if not metadata_schema.ModelMetadata.ModelMetadataBufferHasIdentifier(content, 0):
                raise ValueError("TFLITE_METADATA lacks the M001 identifier")
            return metadata_schema.ModelMetadataT.InitFromObj(
                metadata_schema.ModelMetadata.GetRootAsModelMetadata(content, 0)), input_type
    return None, input_type


def describe_schema(path: Path, metadata, labels: list[str]) -> str:
    """The standard fields MediaPipe's schema module reads, checked against labels.txt."""
    graph = metadata.subgraphMetadata[0]
    image, probability = graph.inputTensorMetadata[0], graph.outputTensorMetadata[0]
    normalisation = [unit.options for unit in image.processUnits or []
                     if unit.optionsType == metadata_schema.ProcessUnitOptions.NormalizationOptions]
    label_files = [file for file in probability.associatedFiles or []
                   if file.type == metadata_schema.AssociatedFileType.TENSOR_AXIS_LABELS]
    problems = []
    if image.content.contentPropertiesType != metadata_schema.ContentProperties.ImageProperties or \
            image.content.contentProperties.colorSpace != metadata_schema.ColorSpaceType.RGB:
        problems.append("input not an RGB image")
    if not normalisation:
        problems.append("no NormalizationOptions")
    if not label_files:
        problems.append("no TENSOR_AXIS_LABELS file")
    else:
        with zipfile.ZipFile(path) as archive:
            if archive.read(label_files[0].name.decode()).decode().splitlines() != labels:
                problems.append(f"{label_files[0].name.decode()} differs from labels.txt")
    if problems:
        return "FAIL: " + ", ".join(problems)
    mean, std = normalisation[0].mean.tolist(), normalisation[0].std.tolist()
    return (f"mean {mean} std {std}, {label_files[0].name.decode()} TENSOR_AXIS_LABELS = labels.txt, "
            f"parser {metadata.minParserVersion.decode()}")


def mediapipe_scores(path: Path, images: list[Path], num_labels: int) -> tuple[np.ndarray, list[list[str]]]:
    """MediaPipe ImageClassifier scores (len(images), num_labels) and the category names per image."""
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=-1)
    scores = np.zeros((len(images), num_labels), np.float32)
    names = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for row, image in enumerate(images):
            categories = classifier.classify(Image.create_from_file(str(image))).classifications[0].categories
            by_index = {category.index: category for category in categories}
            for index, category in by_index.items():
                scores[row, index] = category.score
            names.append([by_index[index].category_name or "" if index in by_index else "" for index in range(num_labels)])
    return scores, names


def edge_scores(edge_classify: Path, path: Path, images: list[Path], num_labels: int) -> np.ndarray:
    """edge-classify's scores (len(images), num_labels); class indices as labels, so scores map by index."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as index_labels:
        index_labels.write("".join(f"{index}\n" for index in range(num_labels)))
        index_labels.flush()
        result = subprocess.run(
            [str(edge_classify), "--model", str(path), "--labels", index_labels.name, "--json",
             "--top_k", str(num_labels), *map(str, images)],
            capture_output=True, text=True, timeout=1800)
    if result.returncode:
        raise RuntimeError(f"edge-classify failed on {path}: {result.stderr.strip()}")
    scores = np.zeros((len(images), num_labels), np.float32)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    rows = {str(image): row for row, image in enumerate(images)}
    for line in lines:
        for entry in line["top_k"]:
            scores[rows[line["source"]], int(entry["label"])] = entry["score"]
    return scores


def top1_agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Share of images whose top-1 class in one is also a top-scoring class in the other (ties agree)."""
    rows = np.arange(len(first))
    agree = (second[rows, first.argmax(axis=1)] == second.max(axis=1)) | \
            (first[rows, second.argmax(axis=1)] == first.max(axis=1))
    return float(agree.mean())


def check(edge_classify: Path, path: Path, mode: str | None, labels: list[str], images: list[Path]) -> Row | None:
    metadata, input_type = standard_metadata(path.read_bytes())
    if metadata is None and mode is None:
        print(f"skipped {path.name}: no standard metadata (not a classifier)")
        return None
    if metadata is None:
        return Row(model=path.name, mode=mode, names="NO", agreement=0.0, max_difference=float("nan"),
                   images=0, schema="FAIL: no TFLITE_METADATA", target=AGREEMENT_TARGET[mode])
    target = AGREEMENT_TARGET[mode] if mode else None
    mode = mode or ("int8" if input_type in _QUANTIZED_TYPES else "float32")
    schema = describe_schema(path, metadata, labels)
    mp_scores, mp_names = mediapipe_scores(path, images, len(labels))
    own_scores = edge_scores(edge_classify, path, images, len(labels))
    names_ok = all(names == labels for names in mp_names) and all(labels)
    return Row(model=path.name, mode=mode, names="yes" if names_ok else "NO", images=len(images),
               agreement=top1_agreement(mp_scores, own_scores),
               max_difference=float(np.abs(mp_scores - own_scores).max()), schema=schema, target=target)


def image_files(folders: list[Path], per_folder: int | None) -> list[Path]:
    """Image files directly in each folder or one class sub-folder down, sorted, at most per_folder from each."""
    found = []
    for folder in folders:
        if folder.is_file():
            found.append(folder)
            continue
        for directory in [folder, *sorted(path for path in folder.iterdir() if path.is_dir())]:
            files = sorted(path for path in directory.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
            found.extend(files[:per_folder])
    return found


def table(rows: list[Row]) -> str:
    header = ("model", "mode", "names = labels.txt", "top-1 agreement", "target", "largest score difference", "images")
    lines = [header] + [(row.model, row.mode, row.names, f"{row.agreement:.1%}",
                         "-" if row.target is None else f">= {row.target:.0%}",
                         f"{row.max_difference:.3g}", str(row.images)) for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text.append("")
    text += [f"{row.model}: {row.schema}" for row in rows]
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge_classify", type=Path, required=True, help="the project's edge-classify command")
    parser.add_argument("--models", type=Path, required=True,
                        help="folder with float32/dynamic/float16/int8.tflite and labels.txt (retrain-edge convert)")
    parser.add_argument("--images", type=Path, required=True, help="images for our models (class sub-folders)")
    parser.add_argument("--thirdparty", type=Path,
                        help=f"folder of third-party .tflite classifiers, their {THIRDPARTY_LABELS} and test images")
    parser.add_argument("--thirdparty_images", type=Path, nargs="*", default=[],
                        help="more images for the third-party models (files or class folders)")
    parser.add_argument("--thirdparty_per_class", type=int, default=20, help="images from each class folder given")
    arguments = parser.parse_args()

    labels = (arguments.models / "labels.txt").read_text().splitlines()
    images = image_files([arguments.images], None)
    rows = [check(arguments.edge_classify, arguments.models / f"{mode}.tflite", mode, labels, images) for mode in OUR_MODES]
    if arguments.thirdparty and (arguments.thirdparty / THIRDPARTY_LABELS).is_file():
        thirdparty_labels = (arguments.thirdparty / THIRDPARTY_LABELS).read_text().splitlines()
        extra = image_files([arguments.thirdparty, *arguments.thirdparty_images], arguments.thirdparty_per_class)
        rows += [check(arguments.edge_classify, path, None, thirdparty_labels, extra)
                 for path in sorted(arguments.thirdparty.glob("*.tflite"))]
    else:
        print("third-party models: skipped (no ../shared/data/thirdparty)")
    rows = [row for row in rows if row is not None]
    print(table(rows))
    failed = [row.model for row in rows if not row.passed]
    if failed:
        print(f"interop check FAILED for {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
    print(f"interop check passed: {len(rows)} models")


if __name__ == "__main__":
    main()
