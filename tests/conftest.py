"""Shared fixtures: one generated dataset and one tiny trained model for the whole session."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_ARCHITECTURE = "mobilenet_v2_0.35_96"


def load_script(name: str):
    """Import a script from scripts/ (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test when the shared folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not beside the repo)")
    return path


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """4 classes x 40 generated images: every class has validation and test images."""
    return load_script("make_sample_data").make_sample_dataset(
        tmp_path_factory.mktemp("data") / "images", images_per_class=40, size=128)


@pytest.fixture(scope="session")
def tiny_train_args(sample_dir, tmp_path_factory) -> list[str]:
    """`retrain-edge train` arguments for a fast run on the sample data (random weights)."""
    return ["train", "--image_dir", str(sample_dir), "--architecture", TINY_ARCHITECTURE, "--weights", "none",
            "--how_many_training_steps", "60", "--bottleneck_dir", str(tmp_path_factory.mktemp("bottlenecks"))]


@pytest.fixture(scope="session")
def trained_dir(tiny_train_args, tmp_path_factory) -> Path:
    """An output folder from a real `retrain-edge train` on the sample data: do not modify it."""
    from typer.testing import CliRunner

    from trainer.cli import app

    output_dir = tmp_path_factory.mktemp("trained")
    result = CliRunner().invoke(app, [*tiny_train_args, "--output_dir", str(output_dir)])
    assert result.exit_code == 0, result.output
    return output_dir
