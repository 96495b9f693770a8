"""scripts/make_sample_data.py: the generated dataset the demo and the tests use."""

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edge.image import open_rgb
from trainer.dataset import list_images

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_sample_data.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_sample_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_sample_data = load_script()


def digests(root):
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest() for path in root.rglob("*.jpg")}


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    return make_sample_data.make_sample_dataset(tmp_path_factory.mktemp("sample"), images_per_class=8, size=64, seed=0)


def test_layout_count_and_decodable(sample_dir):
    assert sorted(path.name for path in sample_dir.iterdir()) == sorted(make_sample_data.CLASSES)
    for class_name in make_sample_data.CLASSES:
        files = sorted((sample_dir / class_name).iterdir())
        assert len(files) == 8
        for path in files:
            assert path.suffix == ".jpg" and path.name.startswith(f"{class_name}_") and len(path.stem) == len(class_name) + 11
            image = open_rgb(path)
            assert image.size == (64, 64)
            # Not a flat colour: there is a shape on a background.
            assert np.asarray(image).std() > 10
    images = list_images(sample_dir, 30, 30)
    assert images.skipped == []
    assert images.labels == sorted(make_sample_data.CLASSES)
    assert {len(images.examples(set_name)) for set_name in ("training", "validation", "testing")} != {0}


def test_same_seed_same_bytes_other_seed_other_images(sample_dir, tmp_path):
    again = make_sample_data.make_sample_dataset(tmp_path / "again", images_per_class=8, size=64, seed=0)
    assert digests(again) == digests(sample_dir)
    other = make_sample_data.make_sample_dataset(tmp_path / "other", images_per_class=8, size=64, seed=1)
    assert set(digests(other).values()).isdisjoint(digests(sample_dir).values())


def test_more_images_or_fewer_classes_keep_the_earlier_images(sample_dir, tmp_path):
    more = make_sample_data.make_sample_dataset(tmp_path / "more", images_per_class=10, size=64)
    assert digests(sample_dir).items() <= digests(more).items()
    subset = make_sample_data.make_sample_dataset(tmp_path / "subset", classes=["triangles"], images_per_class=8, size=64)
    assert digests(subset).items() <= digests(sample_dir).items()
    with pytest.raises(ValueError, match="unknown sample classes"):
        make_sample_data.make_sample_dataset(tmp_path / "bad", classes=["squirrels"])


def test_cli_writes_the_default_size(tmp_path, capsys):
    make_sample_data.main([str(tmp_path / "cli"), "--images-per-class", "2", "--seed", "3"])
    assert "wrote 2 images" in capsys.readouterr().out
    files = sorted((tmp_path / "cli").rglob("*.jpg"))
    assert len(files) == 2 * len(make_sample_data.CLASSES)
    assert open_rgb(files[0]).size == (make_sample_data.SIZE, make_sample_data.SIZE)
