"""Inputs at the edges of the legal range: each trains or says why in one line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_ARCHITECTURE
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
