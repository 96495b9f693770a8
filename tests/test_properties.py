"""Properties of the commands over generated inputs: exit 0 with complete outputs, or exit 2 with
one `error:` line; never a traceback, never a half-written output, never a crashed process.

`make test` runs a fixed, derandomised handful of examples (conftest's "bounded" profile);
`make fuzz` many more, at random. A failure Hypothesis shrinks becomes a plain test in
tests/test_robustness.py.
"""

from __future__ import annotations

import io
import json
import os
import selectors
import struct
import subprocess
import sys
import tempfile
import traceback
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_ARCHITECTURE, examples
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from edge.files import PARTIAL_NAME
from edge.model import parse_labels
from trainer.cli import app
from trainer.dataset import hash_percentage

runner = CliRunner()

DECODABLE_KINDS = ("jpeg", "png", "cmyk", "16-bit", "grey", "rgba", "palette", "exif-rotated")
UNUSABLE_KINDS = ("corrupt", "empty", "not-an-image", "bomb")
SUFFIX = {"png": ".png", "16-bit": ".png", "rgba": ".png", "palette": ".png", "bomb": ".png"}  # others: .jpg
CLASS_FOLDERS = ("cat", "dog", "red fish", "ünïcode", "x-y", "7")  # six: the most an example has
# Folders that collide as labels with one above ("Dog", "x_y"), give no label ("___") or are hidden.
ODD_FOLDERS = ("Dog", "x_y", "___", ".hidden")
NAME_QUANTILES = 100  # file names are drawn from this many, spread evenly over the split's 0-100%
TRAIN_OUTPUTS = ("model.keras", "labels.txt", "run.json")


def names_by_quantile(suffix: str) -> list[str]:
    """NAME_QUANTILES file names ending in suffix, the i-th hashing to about i% of the split, so a
    drawn name lands in validation, testing or training whatever the percentages."""
    candidates = sorted((f"p{index}{suffix}" for index in range(20 * NAME_QUANTILES)), key=hash_percentage)
    return candidates[:: len(candidates) // NAME_QUANTILES][:NAME_QUANTILES]


FILE_NAMES = {suffix: names_by_quantile(suffix) for suffix in (".jpg", ".png")}


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header claims width x height pixels, in a few dozen bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def image_bytes(kind: str, width: int, height: int, seed: int) -> bytes:
    """The content of a file of `kind` (DECODABLE_KINDS, UNUSABLE_KINDS), width x height where it is an image."""
    if kind == "empty":
        return b""
    if kind == "not-an-image":
        return b"these are not the pixels you are looking for\n"
    if kind == "bomb":
        return png_bomb()
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    if kind in ("jpeg", "corrupt"):
        rgb.save(buffer, "JPEG")
    elif kind == "png":
        rgb.save(buffer, "PNG")
    elif kind == "cmyk":
        rgb.convert("CMYK").save(buffer, "JPEG")
    elif kind == "16-bit":
        Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16)).save(buffer, "PNG")
    elif kind == "grey":
        rgb.convert("L").save(buffer, "JPEG")
    elif kind == "rgba":
        rgb.convert("RGBA").save(buffer, "PNG")
    elif kind == "palette":
        rgb.convert("P").save(buffer, "PNG")
    elif kind == "exif-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
        rgb.save(buffer, "JPEG", exif=exif)
    data = buffer.getvalue()
    return data[: len(data) // 2] if kind == "corrupt" else data


# Most images decode and most folders are classes, so most examples get as far as training.
image_specs = st.tuples(st.integers(0, NAME_QUANTILES - 1), st.sampled_from(DECODABLE_KINDS * 5 + UNUSABLE_KINDS),
                        st.integers(1, 40), st.integers(1, 40))
class_specs = st.lists(image_specs, min_size=1, max_size=30, unique_by=lambda spec: (spec[0], SUFFIX.get(spec[1], ".jpg")))


@st.composite
def datasets(draw) -> dict[str, list[tuple[int, str, int, int]]]:
    """class folder -> [(name quantile, kind, width, height)]: 1-6 folders of 1-30 files, sometimes
    an odd folder more (ODD_FOLDERS, or one with no files)."""
    folders = list(CLASS_FOLDERS[: draw(st.integers(1, len(CLASS_FOLDERS)))])
    odd = draw(st.sampled_from([None] * 2 * len(ODD_FOLDERS) + list(ODD_FOLDERS)))
    dataset = {folder: draw(class_specs) for folder in folders + ([odd] if odd else [])}
    if draw(st.integers(0, 9)) == 0:
        dataset["no images"] = []
    return dataset


def write_dataset(root: Path, dataset: dict[str, list[tuple[int, str, int, int]]]) -> Path:
    """root/<folder>/<name> for each drawn class and image; returns root."""
    for folder, images in dataset.items():
        (root / folder).mkdir(parents=True)
        for index, (quantile, kind, width, height) in enumerate(images):
            suffix = SUFFIX.get(kind, ".jpg")
            (root / folder / FILE_NAMES[suffix][quantile]).write_bytes(image_bytes(kind, width, height, index))
    return root


# Classic flags: (values in their legal range, values just past it). Each example draws every flag
# from its legal values, but for at most one, drawn from past the range: the error must name it.
# The split's edges: an empty set, all of it in one set, sums of 100 and more.
PERCENTAGES = st.sampled_from([10] * 12 + [0, 1, 25, 50, 99, 100])
TRAIN_FLAGS = {
    "--validation_percentage": (PERCENTAGES, st.sampled_from([-1, 101])),
    "--testing_percentage": (PERCENTAGES, st.sampled_from([-1, 101])),
    "--how_many_training_steps": (st.sampled_from([1, 2, 5]), st.sampled_from([0, -1])),
    "--train_batch_size": (st.sampled_from([1, 7, 1000]), st.sampled_from([0, -1])),
    "--validation_batch_size": (st.sampled_from([-1, 0, 1, 1000]), st.nothing()),
    "--test_batch_size": (st.sampled_from([-1, 0, 1, 1000]), st.nothing()),
    "--eval_step_interval": (st.sampled_from([1, 3, 1000]), st.sampled_from([0, -1])),
    "--learning_rate": (st.sampled_from([0.01] * 4 + [1e-3, 1e6, 1e300]), st.sampled_from([0.0, -1.0, float("inf"), float("nan")])),
    "--random_crop": (st.sampled_from([0, 50, 100]), st.just(101)),
    "--random_scale": (st.sampled_from([0, 100]), st.just(101)),
    "--random_brightness": (st.sampled_from([0, 100]), st.just(101)),
    "--distortion_variants": (st.sampled_from([0, 1, 2]), st.just(-1)),
}
TRAIN_SWITCHES = ("--flip_left_right", "--early_stopping", "--print_misclassified_test_images")
ILLEGAL_FLAGS = [flag for flag, (_, illegal) in TRAIN_FLAGS.items() if not illegal.is_empty]


@st.composite
def train_flags(draw, illegal: str | None = None) -> dict:
    """{flag: value, or None for a switch}: every flag in its legal range but `illegal`, past it."""
    flags = {flag: draw(values[flag == illegal]) for flag, values in TRAIN_FLAGS.items()}
    flags.update({switch: None for switch in TRAIN_SWITCHES if draw(st.booleans())})
    return flags


def flag_arguments(flags: dict) -> list[str]:
    """{flag: value, or None for a switch} -> the command line."""
    return [item for flag, value in flags.items() for item in ((flag,) if value is None else (flag, str(value)))]


def assert_one_line_or_complete(result, output_dir: Path, outputs: tuple[str, ...]) -> None:
    """The property: exit 0 with every output in place, or exit 2 with one `error:` line and no output."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{result.output}\n{''.join(traceback.format_exception(result.exception))}")
    assert "Traceback" not in result.output
    assert not [path for path in output_dir.rglob("*") if PARTIAL_NAME.match(path.name)], "a half-written output was left"
    if result.exit_code == 0:
        for name in outputs:
            assert (output_dir / name).is_file() and (output_dir / name).stat().st_size, f"{name} is missing"
        return
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    assert len(error_lines[0].split()) >= 5, f"the error does not say what to do: {error_lines[0]}"
    for name in outputs:
        assert not (output_dir / name).exists(), f"{name} was written by a failed run"


def outcome(result) -> str:
    """What an example came to, for --hypothesis-show-statistics: trained, or the error's first words."""
    if result.exit_code == 0:
        return "exit 0"
    error = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    return "exit 2, " + " ".join(error.split()[1:5]) if "/" not in error else "exit 2, " + error.split("/")[-1][:40]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One bottleneck cache for every example (keyed by content, so examples never see each other's)."""
    return tmp_path_factory.mktemp("property_cache")


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("property_examples")


def train_arguments(image_dir: Path, output_dir: Path, cache: Path) -> list[str]:
    return ["train", "--image_dir", str(image_dir), "--output_dir", str(output_dir), "--bottleneck_dir", str(cache),
            "--architecture", TINY_ARCHITECTURE, "--weights", "none"]


# Every kind of file in three classes, so each run trains at least twice whatever Hypothesis draws.
EVERY_KIND = {folder: [(quantile, kind, 9 + quantile % 7, 5 + quantile % 11)
                       for quantile, kind in zip(range(offset, NAME_QUANTILES, 7), UNUSABLE_KINDS + DECODABLE_KINDS * 2)]
              for offset, folder in enumerate(CLASS_FOLDERS[:3])}


@settings(max_examples=examples(10))
@given(dataset=datasets(), flags=train_flags())
@example(dataset=EVERY_KIND, flags={"--validation_percentage": 0, "--how_many_training_steps": 2, "--random_crop": 100,
                                    "--distortion_variants": 0, "--flip_left_right": None, "--early_stopping": None})
@example(dataset=EVERY_KIND, flags={"--testing_percentage": 0, "--how_many_training_steps": 1, "--train_batch_size": 1000,
                                    "--validation_batch_size": -1, "--learning_rate": 1e6})
def test_train_trains_or_says_why_in_one_line(dataset, flags, shared_cache, examples_dir):
    example = Path(tempfile.mkdtemp(dir=examples_dir))
    image_dir = write_dataset(example / "images", dataset)
    output_dir = example / "out"
    result = runner.invoke(app, [*train_arguments(image_dir, output_dir, shared_cache), *flag_arguments(flags)])
    assert_one_line_or_complete(result, output_dir, TRAIN_OUTPUTS)
    event(outcome(result))
    if result.exit_code == 0:
        run = json.loads((output_dir / "run.json").read_text())
        # The device reads back the labels the model was trained with, one per output.
        assert parse_labels((output_dir / "labels.txt").read_text()) == run["labels"] and all(run["labels"])
        assert np.isfinite(run["calibration"]["temperature"])


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("small"), {"cat": [(i, "jpeg", 8, 8) for i in range(0, 100, 9)],
                                                            "dog": [(i, "png", 8, 8) for i in range(0, 100, 9)]})


@settings(max_examples=examples(15))
@given(data=st.data(), illegal=st.sampled_from(ILLEGAL_FLAGS))
def test_a_flag_past_its_range_is_named_in_one_line(data, illegal, small_dataset, shared_cache, examples_dir):
    flags = data.draw(train_flags(illegal))
    output_dir = Path(tempfile.mkdtemp(dir=examples_dir)) / "out"
    result = runner.invoke(app, [*train_arguments(small_dataset, output_dir, shared_cache), *flag_arguments(flags)])
    assert_one_line_or_complete(result, output_dir, TRAIN_OUTPUTS)
    assert result.exit_code == 2 and illegal in result.stderr, f"{illegal} {flags[illegal]}: {result.output}"


pipeline_flags = st.fixed_dictionaries({
    "quantization": st.sampled_from(["float32", "dynamic", "float16", "int8"]),
    "calibration_images": st.sampled_from([-1, 0, 1, 1000]),
    "split": st.sampled_from([None, "test", "validation", "training", "all", "bogus"]),
    "evaluate_tflite": st.booleans(),
})


@settings(max_examples=examples(2))
@given(dataset=datasets(), validation=st.integers(0, 50), testing=st.integers(0, 50), flags=pipeline_flags)
def test_convert_and_evaluate_after_train(dataset, validation, testing, flags, shared_cache, examples_dir):
    example = Path(tempfile.mkdtemp(dir=examples_dir))
    image_dir = write_dataset(example / "images", dataset)
    output_dir = example / "out"
    result = runner.invoke(app, [*train_arguments(image_dir, output_dir, shared_cache), "--how_many_training_steps", "2",
                                 "--validation_percentage", str(validation), "--testing_percentage", str(testing)])
    assert_one_line_or_complete(result, output_dir, TRAIN_OUTPUTS)
    if result.exit_code:
        return
    model_before = (output_dir / "model.keras").read_bytes()
    result = runner.invoke(app, ["convert", "--output_dir", str(output_dir), "--quantization", flags["quantization"],
                                 "--calibration_images", str(flags["calibration_images"]), "--float_layers", "0"])
    assert_one_line_or_complete(result, output_dir, ("model.tflite",))
    event(f"convert {flags['quantization']}: {outcome(result)}")
    assert (output_dir / "model.keras").read_bytes() == model_before
    converted = result.exit_code == 0

    report_dir = example / "report"
    arguments = ["evaluate", "--output_dir", str(output_dir), "--report_dir", str(report_dir)]
    arguments += ["--split", flags["split"]] if flags["split"] else []
    arguments += ["--model", str(output_dir / "model.tflite")] if flags["evaluate_tflite"] and converted else []
    result = runner.invoke(app, arguments)
    assert_one_line_or_complete(result, report_dir, ("report.html", "confusion_matrix.png"))
    event(f"evaluate: {outcome(result)}")


# --- edge-classify, in a worker process: a crash inside LiteRT ends the worker, not the test run ---

EDGE_WORKER = """
import json, sys, traceback
from typer.testing import CliRunner
from edge.cli import app
runner = CliRunner()
for line in sys.stdin:
    result = runner.invoke(app, json.loads(line))
    error = result.exception
    crash = "" if error is None or isinstance(error, SystemExit) else "".join(traceback.format_exception(error))
    reply = {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr, "traceback": crash}
    print("RESULT " + json.dumps(reply), flush=True)
"""
EDGE_EXAMPLE_TIMEOUT_S = 60


class EdgeWorker:
    """A Python process running `edge-classify` commands sent to it, one per line, through CliRunner.

    Starting one process per example would cost an interpreter start each; a crash (a signal)
    ends this one, is reported as the example's failure, and the next example starts a new one.
    """

    def __init__(self):
        self.process = None

    def run(self, arguments: list[str]) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([sys.executable, "-c", EDGE_WORKER], cwd=REPO, text=True,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                            env={**os.environ, "PYTHONPATH": str(REPO)})
        self.process.stdin.write(json.dumps(arguments) + "\n")
        self.process.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while selector.select(EDGE_EXAMPLE_TIMEOUT_S):
                line = self.process.stdout.readline()
                if not line:
                    return {"crashed": self.process.wait()}
                if line.startswith("RESULT "):
                    return json.loads(line.removeprefix("RESULT "))
        self.close()
        return {"crashed": f"no answer within {EDGE_EXAMPLE_TIMEOUT_S} s"}

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="module")
def edge_worker():
    worker = EdgeWorker()
    yield worker
    worker.close()


EDGE_IMAGE_KINDS = ("1x1", "10000x10", "grey", "cmyk", "16-bit", "truncated", "rgba", "palette", "not-an-image")


def edge_image(kind: str, seed: int) -> tuple[str, bytes]:
    """(suffix, content) of an image file of `kind` (one of EDGE_IMAGE_KINDS)."""
    sizes = {"1x1": (1, 1), "10000x10": (10000, 10)}
    base = {"1x1": "jpeg", "10000x10": "png", "truncated": "corrupt"}.get(kind, kind)
    width, height = sizes.get(kind, (24, 16))
    return SUFFIX.get(base, ".jpg"), image_bytes(base, width, height, seed)


model_damage = st.one_of(
    st.just(None),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("overwrite"), st.floats(0, 1), st.integers(0, 255)),
)
edge_inputs = st.fixed_dictionaries({
    "model": st.sampled_from(["float", "int8"]),
    "damage": model_damage,
    "labels": st.sampled_from([None, "right", "too few", "too many", "empty"]),
    "images": st.lists(st.sampled_from(EDGE_IMAGE_KINDS), min_size=1, max_size=4),
    "top_k": st.sampled_from([3] * 6 + [1, 10, 0, -1]),
    "threshold": st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]),
})


def damaged(content: bytes, damage) -> bytes:
    """content truncated at, or with one byte overwritten at, a fraction of its length."""
    if damage is None:
        return content
    position = min(int(damage[1] * len(content)), len(content) - 1)
    if damage[0] == "truncate":
        return content[:position]
    return content[:position] + bytes([damage[2]]) + content[position + 1:]


def write_edge_example(folder: Path, inputs: dict, color_models: dict[str, Path]) -> list[str]:
    """The model, labels and images of one example in folder; returns edge-classify's arguments."""
    folder.mkdir(parents=True)
    model = folder / "model.tflite"
    model.write_bytes(damaged(color_models[inputs["model"]].read_bytes(), inputs["damage"]))
    arguments = ["--model", str(model), "--top_k", str(inputs["top_k"]), "--threshold", str(inputs["threshold"])]
    labels = {"right": "red\ngreen\nblue\n", "too few": "red\ngreen\n", "too many": "red\ngreen\nblue\nmauve\n",
              "empty": ""}.get(inputs["labels"])
    if labels is not None:
        (folder / "labels.txt").write_text(labels)
        arguments += ["--labels", str(folder / "labels.txt")]
    for index, kind in enumerate(inputs["images"]):
        suffix, content = edge_image(kind, index)
        (folder / f"image{index}{suffix}").write_bytes(content)
        arguments.append(str(folder / f"image{index}{suffix}"))
    return arguments


@settings(max_examples=examples(25))
@given(inputs=edge_inputs)
def test_edge_classify_answers_or_says_why_in_one_line(inputs, color_models, edge_worker, examples_dir):
    arguments = write_edge_example(Path(tempfile.mkdtemp(dir=examples_dir)) / "edge", inputs, color_models)
    result = edge_worker.run(arguments)
    assert "crashed" not in result, f"edge-classify {' '.join(arguments)} crashed the process: {result}"
    assert not result["traceback"], result["traceback"]
    assert "Traceback" not in result["stderr"]
    errors = [line.replace(str(Path(arguments[1]).parent), "DIR") for line in result["stderr"].splitlines() if line.startswith("error: ")]
    event(f"exit {result['exit_code']}, " + " ".join(" ".join(errors).split()[:6]))
    if result["exit_code"] == 0:
        answers = result["stdout"].splitlines()
        readable = [kind for kind in inputs["images"] if kind not in ("truncated", "not-an-image")]
        assert len(answers) == len(readable), result
        return
    assert result["exit_code"] == 2, result
    error_lines = [line for line in result["stderr"].splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and result["stdout"] == "", result
