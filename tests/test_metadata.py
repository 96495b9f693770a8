"""The edge runtime reads standard TFLite Model Metadata from any model: the hosted Coral ones here.

Our own converted models' metadata is checked in test_convert.py (every mode) and by
`make interop-check`, where MediaPipe's own schema module and Tasks ImageClassifier read it.
The hosted models' metadata was written by Google's MetadataPopulator, so reading it proves the
reader's field numbers, which the writer (trainer/metadata.py) shares, against the real layout.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile

import numpy as np
from conftest import shared_path
from typer.testing import CliRunner

from edge.cli import app
from edge.model import load_model, parse_labels, quantization_table, read_metadata

CORAL_MODEL = "mobilenet_v1_0.25_128_quant.tflite"


def test_a_coral_models_labels_and_normalisation_come_from_its_standard_metadata(tmp_path):
    model = shutil.copy(shared_path("thirdparty", CORAL_MODEL), tmp_path / "model.tflite")
    imagenet_labels = parse_labels(shared_path("thirdparty", "imagenet_labels.txt").read_text())
    metadata = read_metadata(model)
    assert metadata["labels"] == imagenet_labels and len(imagenet_labels) == 1001
    assert (metadata["input_mean"], metadata["input_std"]) == ([127.5], [127.5])
    runtime = load_model(model)  # nothing beside it
    assert runtime.labels == imagenet_labels and (runtime.input_mean, runtime.input_std) == (127.5, 127.5)


def test_edge_classify_labels_a_model_whose_label_file_is_missing_from_its_metadata(tmp_path, caplog):
    source = shared_path("thirdparty", CORAL_MODEL)
    with zipfile.ZipFile(source) as archive:
        flatbuffer_end = min(member.header_offset for member in archive.infolist())
    model = tmp_path / "model.tflite"
    model.write_bytes(source.read_bytes()[:flatbuffer_end])  # metadata names imagenet_labels.txt; no zip holds it
    with caplog.at_level(logging.WARNING, logger="edge"):
        metadata = read_metadata(model)
    assert "labels" not in metadata and metadata["input_mean"] == [127.5]
    assert "names the label file imagenet_labels.txt" in caplog.text

    shutil.copy(shared_path("thirdparty", "imagenet_labels.txt"), tmp_path / "labels.txt")
    image = str(shared_path("thirdparty", "grace_hopper.bmp"))
    result, with_metadata = (CliRunner().invoke(app, ["--model", str(path), "--json", image]) for path in (model, source))
    assert result.exit_code == with_metadata.exit_code == 0, result.output
    assert json.loads(result.stdout)["top_k"] == json.loads(with_metadata.stdout)["top_k"]
    assert not json.loads(result.stdout)["label"].isdigit()


def test_per_channel_normalisation_gives_a_table_per_channel():
    # q = (pixel - mean) / std * 255, per channel: the identity, half, and [-1, 1] scaled and clipped.
    table = quantization_table(np.uint8, 1 / 255, 0, (0.0, 0.0, 127.5), (255.0, 510.0, 127.5))
    assert table.shape == (256, 3)
    assert table[255].tolist() == [255, 128, 255] and table[100].tolist() == [100, 50, 0]
