"""Where the project installs: pyproject.toml's markers, the CLI's message, pip_as and docs/platforms.md agree.

The resolutions themselves need PyPI and run in `make install-check`; these tests need no network.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import COLOR_BGR, REPO, load_script
from packaging.requirements import Requirement
from PIL import Image

from trainer.cli import INSTALL_TRAIN_EXTRA, TENSORFLOW_PLATFORMS, TENSORFLOW_PYTHONS, missing_tensorflow_message

# Imported, not loaded with load_script: their dataclasses need a module registered in sys.modules.
sys.path.insert(0, str(REPO / "scripts"))
import install_check  # noqa: E402
from pip_as import TARGETS, marker_environment  # noqa: E402

PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def applying(requirements: list[str], target, python: str, extra: str = "") -> set[str]:
    """The names of the requirements whose markers hold on `target` under `python`."""
    environment = {**marker_environment(target, python), "extra": extra}
    parsed = map(Requirement, requirements)
    return {requirement.name for requirement in parsed if requirement.marker is None or requirement.marker.evaluate(environment)}


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS)
@pytest.mark.parametrize("python", PYTHONS)
def test_train_extra_takes_tensorflow_exactly_where_the_cli_says_it_has_a_wheel(target, python):
    taken = applying(PROJECT["optional-dependencies"]["train"], target, python, "train") & {"tensorflow", "tensorflow-cpu"}
    oldest, newest = TENSORFLOW_PYTHONS
    has_wheel = (target.platform_system, target.platform_machine) in TENSORFLOW_PLATFORMS and \
        oldest <= tuple(map(int, python.split("."))) <= newest
    assert len(taken) == has_wheel
    if taken:  # the CPU-only package where it exists, the full one elsewhere (PyPI's wheels, 2.21)
        cpu_only = target.name in ("linux-x86_64", "windows-x86_64")
        assert taken == {"tensorflow-cpu" if cpu_only else "tensorflow"}


def test_the_device_runtime_takes_litert_everywhere_but_intel_macs():
    for target in TARGETS.values():
        assert ("ai-edge-litert" in applying(PROJECT["dependencies"], target, "3.14")) == (target.name != "macos-x86_64")


def test_requires_python_admits_3_14_for_the_device_runtime():
    from packaging.specifiers import SpecifierSet

    assert "3.14" in SpecifierSet(PROJECT["requires-python"]) and "3.9" not in SpecifierSet(PROJECT["requires-python"])


@pytest.mark.parametrize("system, machine, python, expected", [
    ("Darwin", "x86_64", (3, 12), "no wheel for Darwin x86_64"),
    ("Windows", "ARM64", (3, 12), "no wheel for Windows ARM64"),
    ("Linux", "x86_64", (3, 14), "no wheel for Python 3.14"),
    ("Linux", "aarch64", (3, 11), INSTALL_TRAIN_EXTRA),
    ("Darwin", "arm64", (3, 13), INSTALL_TRAIN_EXTRA),
])
def test_missing_tensorflow_says_whether_a_wheel_exists(system, machine, python, expected):
    message = missing_tensorflow_message(system, machine, python)
    assert expected in message
    assert ("Rosetta" in message) == (system == "Darwin" and machine == "x86_64")


@pytest.mark.parametrize("target, taken", [("linux-x86_64", False), ("macos-arm64", True)])
def test_pip_as_evaluates_markers_for_the_target_not_this_host(target, taken):
    # No index: a requirement whose marker holds is looked for (and not found); one that does not is ignored.
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "pip_as.py"), target, "3.12", "install", "--isolated", "--dry-run",
         "--ignore-installed", "--no-index", "no-such-package-on-any-index; sys_platform == 'darwin'"],
        capture_output=True, text=True, timeout=120)
    assert (result.returncode != 0) == taken, result.stderr
    assert ("No matching distribution found for no-such-package-on-any-index" in result.stderr) == taken


def test_docs_claim_what_install_check_checks():
    """docs/platforms.md's install table: the same platforms, Pythons and claims install_check.py fails on."""
    page = (REPO / "docs" / "platforms.md").read_text()
    claims = {}
    for line in page.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0] in TARGETS and re.fullmatch(r"3\.\d+", cells[1]):
            claims[cells[0], cells[1]] = cells[-1]
    expected = {(row.target, row.python): ", ".join(row.claimed) or "nothing" for row in install_check.ROWS}
    assert claims == expected


def test_arm64_train_compare_passes_the_same_model_and_fails_beyond_its_tolerance(color_models, tmp_path, capsys):
    images = []
    for color, (blue, green, red) in COLOR_BGR.items():
        images.append(tmp_path / f"{color}.png")
        Image.new("RGB", (16, 16), (red, green, blue)).save(images[-1])
    compare = load_script("arm64_train_compare")
    edge_classify = str(Path(sys.executable).parent / "edge-classify")
    arguments = ["--x86", edge_classify, "--reference", str(color_models["float"]),
                 "--candidate", str(color_models["float"]), "--images", *map(str, images)]
    assert compare.main(arguments) == 0
    assert "3/3 images: same top-1" in capsys.readouterr().out
    compare.SCORE_TOLERANCE = -1.0  # no difference passes: every image becomes a mismatch
    assert compare.main(arguments) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_without_litert_edge_classify_says_where_it_has_wheels(color_models, tmp_path):
    image = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(image)
    code = ("import sys; sys.modules['ai_edge_litert'] = sys.modules['tflite_runtime'] = None; "
            f"from edge.cli import main; sys.argv = ['edge-classify', '--model', {str(color_models['float'])!r}, "
            f"{str(image)!r}]; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "pip install ai-edge-litert, which has wheels for" in result.stderr and "Traceback" not in result.stderr


def test_install_check_fails_on_a_claim_pip_contradicts():
    Row, Resolution = install_check.Row, install_check.Resolution
    row = Row("linux-aarch64", "3.12", ("base", "train"), ("base", "train"), "tensorflow")
    unclaimed = Row("linux-armv7l", "3.11", ("base",), ())
    resolved = Resolution(True, "tensorflow", 1.0)
    assert install_check.broken_claims((row, unclaimed), {row: {"base": resolved, "train": resolved},
                                                          unclaimed: {"base": Resolution(False, "no wheel: numpy", 1.0)}}) == []
    wrong_tensorflow = {"base": resolved, "train": Resolution(True, "tensorflow-cpu", 1.0)}
    assert install_check.broken_claims((row,), {row: wrong_tensorflow}) == [
        "linux-aarch64 Python 3.12: the train extra brings tensorflow-cpu, not tensorflow"]
    missing = {"base": Resolution(False, "no wheel: ai-edge-litert", 1.0), "train": resolved}
    assert install_check.broken_claims((row,), {row: missing}) == [
        "linux-aarch64 Python 3.12: the base install does not resolve (no wheel: ai-edge-litert)"]
