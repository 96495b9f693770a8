"""`retrain-edge bottlenecks` on Beam's DirectRunner: the same cache entries as the local pipeline.

One pipeline run (module fixture) serves most tests: Beam's start-up is the slow part.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import REPO, TINY_ARCHITECTURE, load_script
from edge.image import load_rgb
from trainer.backbones import build_backbone, get_backbone, weights_id
from trainer.bottlenecks import BottleneckCache, file_keys, image_bottlenecks, make_forward
from trainer.cli import app

runner = CliRunner()
CLASSES = ("circles", "stripes", "checkers")
IMAGES_PER_CLASS = 6
PRESEEDED_CLASS = "stripes"  # its entries come from the local pipeline before Beam runs


def bottlenecks_args(image_dir: Path, bottleneck_dir: Path) -> list[str]:
    return ["bottlenecks", "--image_dir", str(image_dir), "--architecture", TINY_ARCHITECTURE, "--weights", "none",
            "--bottleneck_dir", str(bottleneck_dir)]


def entry_times(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


@pytest.fixture(scope="module")
def beam_run(tmp_path_factory) -> SimpleNamespace:
    """Local entries for every image; a Beam cache pre-seeded with one class of them; one Beam run."""
    work = tmp_path_factory.mktemp("beam")
    image_dir = load_script("make_sample_data").make_sample_dataset(
        work / "images", classes=CLASSES, images_per_class=IMAGES_PER_CLASS, size=64)
    (image_dir / "circles" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    images = sorted(path for path in image_dir.glob("*/*.jpg") if path.name != "corrupt.jpg")

    backbone = get_backbone(TINY_ARCHITECTURE)
    local = BottleneckCache.for_backbone(work / "local", backbone, weights_id("none", 0))
    keys = file_keys(images)
    image_bottlenecks(images, keys, backbone.input_size, make_forward(build_backbone(backbone, "none", 0)), local)

    beam = BottleneckCache.for_backbone(work / "beam", backbone, weights_id("none", 0))
    beam.folder.mkdir(parents=True)
    preseeded = {key for path, key in zip(images, keys) if path.parent.name == PRESEEDED_CLASS}
    for key in preseeded:
        shutil.copy2(local.path(key), beam.path(key))
    preseeded_times = entry_times(beam.folder)

    result = runner.invoke(app, bottlenecks_args(image_dir, work / "beam"))
    return SimpleNamespace(work=work, image_dir=image_dir, images=images, keys=keys, local=local, beam=beam,
                           preseeded_times=preseeded_times, result=result)


def test_beam_writes_the_local_pipelines_entries(beam_run):
    assert beam_run.result.exit_code == 0, beam_run.result.output
    assert sorted(path.name for path in beam_run.beam.folder.iterdir()) == \
        sorted(path.name for path in beam_run.local.folder.iterdir())  # one entry per image, no leftovers
    for key in beam_run.keys:
        np.testing.assert_allclose(beam_run.beam.read(key), beam_run.local.read(key), rtol=0, atol=1e-5)


def test_entries_the_local_pipeline_wrote_are_reused_and_a_corrupt_image_is_counted(beam_run):
    preseeded = IMAGES_PER_CLASS
    computed = len(beam_run.images) - preseeded
    assert (f"{len(beam_run.images) + 1} images: {preseeded} already cached, {computed} computed, 1 skipped"
            in beam_run.result.output)
    times = entry_times(beam_run.beam.folder)
    assert {name: times[name] for name in beam_run.preseeded_times} == beam_run.preseeded_times


def test_train_on_the_beam_cache_computes_nothing(beam_run):
    before = entry_times(beam_run.beam.folder)
    result = runner.invoke(app, [
        "train", "--image_dir", str(beam_run.image_dir), "--architecture", TINY_ARCHITECTURE, "--weights", "none",
        "--bottleneck_dir", str(beam_run.work / "beam"), "--how_many_training_steps", "5",
        "--output_dir", str(beam_run.work / "trained"), "--verbose"])
    assert result.exit_code == 0, result.output
    assert f"all {len(beam_run.images)} cached" in result.output
    assert entry_times(beam_run.beam.folder) == before


def test_a_rerun_computes_nothing(beam_run):
    before = entry_times(beam_run.beam.folder)
    result = runner.invoke(app, [*bottlenecks_args(beam_run.image_dir, beam_run.work / "beam"),
                                 "--direct_running_mode", "in_memory"])  # pipeline options pass through to Beam
    assert result.exit_code == 0, result.output
    assert f"{len(beam_run.images) + 1} images: {len(beam_run.images)} already cached, 0 computed, 1 skipped" \
        in result.output
    assert entry_times(beam_run.beam.folder) == before


def test_bytes_decode_as_the_file_does(beam_run):
    path = beam_run.images[0]
    np.testing.assert_array_equal(load_rgb(path.read_bytes(), (96, 96)), load_rgb(path, (96, 96)))


def test_a_bad_dataset_is_one_error_line_before_any_pipeline(tmp_path):
    image_dir = load_script("make_sample_data").make_sample_dataset(
        tmp_path / "images", classes=["circles"], images_per_class=2, size=32)
    result = runner.invoke(app, bottlenecks_args(image_dir, tmp_path / "cache"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == \
        f"error: --image_dir {image_dir} has only one class folder ('circles'); a classifier needs at least two."
    assert not (tmp_path / "cache").exists()
    result = runner.invoke(app, bottlenecks_args(tmp_path / "missing", tmp_path / "cache"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_help_documents_every_flag_in_both_spellings():
    result = runner.invoke(app, ["bottlenecks", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--image_dir", "--image-dir", "--bottleneck_dir", "--bottleneck-dir", "--architecture", "--weights",
                 "--seed", "--runner", "--verbose", "pipeline option"):
        assert flag in result.output


def test_without_beam_the_cli_says_how_to_install_it_and_the_device_never_imports_it(tmp_path):
    code = ("import sys; sys.modules['apache_beam'] = None; from trainer.cli import main; "
            f"sys.argv = ['retrain-edge', 'bottlenecks', '--image_dir', {str(tmp_path)!r}]; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert "pip install 'retrain-edge[train,beam]'" in result.stderr and "Traceback" not in result.stderr

    code = ("import sys, edge, edge.cli, edge.classify, edge.image, edge.model, edge.sources; "
            "assert 'apache_beam' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60).returncode == 0
