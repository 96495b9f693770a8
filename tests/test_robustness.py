"""Inputs at the edges of the legal range: each works or says why in one line, never a traceback.

The plain regression tests of issue 22, and the failures tests/test_properties.py found, shrunk.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import REPO, TINY_ARCHITECTURE
from edge.cli import app as edge_app
from edge.model import _CheckedTable, load_model
from trainer.cli import app
from trainer.dataset import set_for_file

runner = CliRunner()


def names_in_set(set_name: str, count: int, prefix: str, validation_percentage: float = 10,
                 testing_percentage: float = 10) -> list[str]:
    """`count` file names that the filename-hash split puts in set_name."""
    names = (f"{prefix}_{index}.jpg" for index in range(100_000))
    chosen = [name for name in names if set_for_file(name, validation_percentage, testing_percentage) == set_name]
    return chosen[:count]


def write_images(folder: Path, names: list[str], colour: tuple[int, int, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    for name in names:
        noise = rng.integers(-30, 30, (32, 32, 3))
        Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(folder / name)


def test_validation_percentage_0_trains_and_calibrates_on_every_training_photo(tiny_train_args, tmp_path):
    """The temperature comes from k-fold heads over training and validation (issue 18), so an
    empty validation split skips nothing."""
    result = runner.invoke(app, [*tiny_train_args, "--output_dir", str(tmp_path), "--validation_percentage", "0"])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run.json").read_text())
    calibration = run["calibration"]
    assert calibration["fitted_on"] == "out_of_fold" and calibration["temperature"] > 0
    assert calibration["image_count"] == sum(map(len, run["split"]["files"]["training"].values()))
    assert run["accuracy"]["validation"] is None and run["accuracy"]["test"] is not None
    assert run["skipped_steps"] == {} and "skipped" not in result.output
    assert "out-of-fold expected calibration error" in result.output
    assert (tmp_path / "model.keras").is_file() and (tmp_path / "labels.txt").is_file()


def test_a_small_dataset_with_no_image_hashed_into_validation_trains(tmp_path):
    """Two classes of 12 photos, none of whose names hashes into validation: the crash of issue 22."""
    images = tmp_path / "images"
    write_images(images / "red", names_in_set("training", 10, "red") + names_in_set("testing", 2, "red"), (200, 30, 30))
    write_images(images / "blue", names_in_set("training", 10, "blue") + names_in_set("testing", 2, "blue"), (30, 30, 200))
    output_dir = tmp_path / "out"
    result = runner.invoke(app, [
        "train", "--image_dir", str(images), "--architecture", TINY_ARCHITECTURE, "--weights", "none",
        "--how_many_training_steps", "20", "--bottleneck_dir", str(tmp_path / "cache"), "--output_dir", str(output_dir),
        "--early_stopping"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    run = json.loads((output_dir / "run.json").read_text())
    assert set(run["skipped_steps"]) == {"early_stopping"} and run["calibration"]["fitted_on"] == "out_of_fold"
    assert "no file name hashes into its 10%" in run["skipped_steps"]["early_stopping"]
    assert run["kept_step"] == 20 and run["test_count"] == 4
    assert "skipped early stopping: the validation split is empty" in result.output


def test_with_validation_images_nothing_is_skipped(trained_dir):
    run = json.loads((trained_dir / "run.json").read_text())
    assert run["skipped_steps"] == {}


# --- shrunk examples of tests/test_properties.py: train ---------------------------------------

def small_dataset(root: Path, folders: tuple[str, ...] = ("red", "blue")) -> Path:
    for folder, colour in zip(folders, ((200, 30, 30), (30, 30, 200), (30, 200, 30))):
        write_images(root / folder, [f"{folder}_{index}.jpg" for index in range(12)], colour)
    return root


def train_small(tmp_path: Path, *arguments: str, folders: tuple[str, ...] = ("red", "blue")):
    return runner.invoke(app, [
        "train", "--image_dir", str(small_dataset(tmp_path / "images", folders)), "--architecture", TINY_ARCHITECTURE,
        "--weights", "none", "--how_many_training_steps", "3", "--bottleneck_dir", str(tmp_path / "cache"),
        "--output_dir", str(tmp_path / "out"), *arguments])


def assert_one_error_line(result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and expected in error_lines[0], result.stderr
    assert "Traceback" not in result.output and "╭" not in result.output


def test_a_learning_rate_that_overflows_the_weights_is_an_error_not_a_nan_model(tmp_path):
    result = train_small(tmp_path, "--learning_rate", "1e300")
    assert_one_error_line(result, "training diverged: the weights overflowed at --learning_rate 1e+300; lower it")
    assert "RuntimeWarning" not in result.output
    assert not (tmp_path / "out" / "model.keras").exists()


@pytest.mark.parametrize("rate", ["inf", "nan", "-1"])
def test_a_learning_rate_that_is_not_a_positive_number_is_refused(tmp_path, rate):
    assert_one_error_line(train_small(tmp_path, "--learning_rate", rate), "--learning_rate must be a positive number")


def test_a_folder_whose_name_gives_no_label_is_refused(tmp_path):
    """`___` gave the label "": an empty line in labels.txt, which the device drops."""
    assert_one_error_line(train_small(tmp_path, folders=("red", "___")), "The folder '___'")


@pytest.mark.parametrize("arguments, expected", [
    (["--validation_percentage", "101"], "error: Invalid value for '--validation_percentage'"),
    (["--random_crop", "101"], "error: Invalid value for '--random_crop'"),
    (["--distortion_variants", "-1"], "error: Invalid value for '--distortion_variants'"),
    (["--how_many_training_steps", "x"], "error: Invalid value for '--how_many_training_steps'"),
])
def test_a_flag_past_its_range_is_one_error_line(tmp_path, arguments, expected):
    result = runner.invoke(app, ["train", "--image_dir", str(tmp_path), *arguments])
    assert_one_error_line(result, expected)
    assert result.stderr.rstrip().endswith(" train --help)")


def test_help_without_arguments_is_still_help():
    result = runner.invoke(app, [])
    assert "Usage: " in result.output and "COMMAND" in result.output and "error:" not in result.output


# --- shrunk examples of tests/test_properties.py: edge-classify ------------------------------

def classify(*arguments):
    return CliRunner().invoke(edge_app, [str(argument) for argument in arguments])


@pytest.fixture
def red_image(tmp_path) -> Path:
    Image.new("RGB", (10, 10), (255, 0, 0)).save(tmp_path / "red.jpg")
    return tmp_path / "red.jpg"


def test_a_usage_error_of_edge_classify_is_one_line(red_image):
    assert_one_error_line(classify("--top_k", "x", red_image), "error: Invalid value for '--top_k'")


def flatbuffer_model(buffer_offset: int = 0, buffer_size: int = 0, graph_inputs: tuple[int, ...] = ()) -> bytes:
    """A minimal TFLite Model flatbuffer: one buffer (its data kept after the flatbuffer at
    buffer_offset when given), one subgraph without tensors whose inputs are graph_inputs."""
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.StartObject(3)  # Buffer
    builder.PrependUint64Slot(1, buffer_offset, 0)
    builder.PrependUint64Slot(2, buffer_size, 0)
    buffer = builder.EndObject()
    builder.StartVector(4, 1, 4)
    builder.PrependUOffsetTRelative(buffer)
    buffers = builder.EndVector()
    builder.StartVector(4, len(graph_inputs), 4)
    for index in reversed(graph_inputs):
        builder.PrependInt32(index)
    inputs = builder.EndVector()
    builder.StartObject(5)  # SubGraph
    builder.PrependUOffsetTRelativeSlot(1, inputs, 0)
    subgraph = builder.EndObject()
    builder.StartVector(4, 1, 4)
    builder.PrependUOffsetTRelative(subgraph)
    subgraphs = builder.EndVector()
    builder.StartObject(8)  # Model
    builder.PrependUint32Slot(0, 3, 0)
    builder.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    builder.PrependUOffsetTRelativeSlot(4, buffers, 0)
    builder.Finish(builder.EndObject(), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tensor_field_position(content: bytes, tensor: int, field: int) -> int:
    """Where in a .tflite file the given field of the first subgraph's tensor is stored."""
    model = _CheckedTable(content, struct.unpack_from("<I", content, 0)[0])
    return model.tables(2)[0].tables(0)[tensor]._field(field)


@pytest.mark.parametrize("damage, expected", [
    ("truncated", "runs past the end of the file"),
    ("name not text", "is damaged (a name at byte"),
    ("buffer past the end", "is damaged (buffer 0 ends at byte 1100, past the end of the file"),
    ("tensor that is not there", "is damaged (an operator or the graph names a tensor the model does not have)"),
    ("field past its table", "lies past the end of its table"),
    ("constant without its data", "could not run (Input tensor 1 lacks data)"),
])
def test_a_damaged_model_is_one_error_line_never_a_crash(damage, expected, color_models, red_image, tmp_path):
    content = color_models["float"].read_bytes()
    if damage == "truncated":
        content = content[: len(content) // 2]
    elif damage == "name not text":
        content = content.replace(b"serving_default", b"\xfferving_default")
    elif damage == "buffer past the end":
        content = flatbuffer_model(buffer_offset=1000, buffer_size=100)
    elif damage == "tensor that is not there":
        content = flatbuffer_model(graph_inputs=(5,))
    elif damage == "field past its table":  # the buffer's offset field moved far past the end of the file
        content = flatbuffer_model(buffer_offset=1000, buffer_size=100)
        buffer = _CheckedTable(content, struct.unpack_from("<I", content, 0)[0]).tables(4)[0]
        entry = buffer.vtable + 4 + 2 * 1
        content = content[:entry] + struct.pack("<H", 0xFFF0) + content[entry + 2:]
    else:  # the Dense layer's weights (tensor 1) pointed at the input's empty buffer (that of tensor 0)
        weights_buffer = tensor_field_position(content, 1, 2)
        input_buffer = struct.unpack_from("<I", content, tensor_field_position(content, 0, 2))[0]
        content = content[:weights_buffer] + struct.pack("<I", input_buffer) + content[weights_buffer + 4:]
    (tmp_path / "model.tflite").write_bytes(content)
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    # In a process of its own: were the check to miss, LiteRT's crash must fail this test, not end the run.
    result = subprocess.run([sys.executable, "-c", "from edge.cli import main; main()", "--model", tmp_path / "model.tflite",
                             red_image],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("INFO: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


def test_metadata_whose_label_zip_is_damaged_falls_back_to_labels_beside(color_models, red_image, tmp_path, caplog):
    content = color_models["float"].read_bytes()
    directory = content.rindex(b"PK\x01\x02")  # the zip's central directory entry of the labels file
    content = content[: directory + 10] + struct.pack("<H", 99) + content[directory + 12:]  # an unknown compression
    (tmp_path / "model.tflite").write_bytes(content)
    (tmp_path / "labels.txt").write_text("r\ng\nb\n")
    model = load_model(tmp_path / "model.tflite")
    assert model.labels == ["r", "g", "b"]
    assert "does not hold" in caplog.text
