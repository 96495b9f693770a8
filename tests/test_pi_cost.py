"""Pi cost: finding the counter, judging and showing counts, convert --pi_cost; the real counter when built."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import broken_counter, load_script, shared_path
from trainer import UserError
from trainer.cli import app
from trainer.pi_cost import ModelCost, count, find_counter


def test_no_counter_until_every_part_is_there(tmp_path):
    assert find_counter(tmp_path) is None
    qemu, plugin = tmp_path / "qemu-aarch64", tmp_path / "pi_cost_plugin.so"
    roots = {cpu: tmp_path / "roots" / cpu for cpu in ("cortex-a72", "cortex-a76")}
    (tmp_path / "counter.json").write_text(json.dumps({
        "qemu": str(qemu), "library_path": str(tmp_path), "plugin": str(plugin), "site_path": "/opt/deps",
        "roots": {cpu: str(root) for cpu, root in roots.items()}}))
    assert find_counter(tmp_path) is None
    qemu.touch(), plugin.touch()
    for root in roots.values():
        (root / "opt" / "deps").mkdir(parents=True)
    counter = find_counter(tmp_path)
    assert counter is not None and counter.roots == roots
    (tmp_path / "counter.json").write_text("{not json")
    assert find_counter(tmp_path) is None


def test_counting_without_the_counter_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ARM64_CHECK_CACHE", str(tmp_path))
    result = CliRunner().invoke(app, ["convert", "--output_dir", str(tmp_path), "--pi-cost"])
    assert result.exit_code == 2
    assert "make pi-cost" in result.output and "Traceback" not in result.output

# The judging and the table of counts belong to the script that prints them.
script = load_script("pi_cost")
MAX_FRAME_SPREAD, MAX_SPREAD, problems, spread, table = (
    script.MAX_FRAME_SPREAD, script.MAX_SPREAD, script.problems, script.spread, script.table)


# What a broken counter's qemu does (conftest.broken_counter).
BROKEN_COUNTERS = {
    "empty stdout": "",
    "not JSON": "echo 'plugin v2 ready'",
    "no counts file": """echo '{"0": ["", "empty"]}'""",
    "region never recorded": """echo '{"0": ["", "empty"]}'; echo '0 100' > "$counts" """,
}


@pytest.mark.parametrize("broken", [*BROKEN_COUNTERS, "qemu not executable"])
def test_a_broken_counter_is_one_user_error(tmp_path, broken):
    counter = find_counter(broken_counter(tmp_path / "counter", BROKEN_COUNTERS.get(broken, "")))
    if broken == "qemu not executable":
        counter.qemu.chmod(0o644)
    model = tmp_path / "model.tflite"
    model.touch()
    with pytest.raises(UserError, match="the Pi counter") as raised:
        count([model], ("cortex-a76",), counter, repeats=1)
    assert "\n" not in str(raised.value)


def cost(path: str, cpu: str, invoke: int, frame: int, spread: float = 0.0) -> ModelCost:
    return ModelCost(Path(path), cpu, [invoke, invoke, round(invoke * (1 + spread))], [frame] * 3)


def test_problems_name_missing_zero_unrepeatable_and_implausible_counts():
    good = [cost("/d/interop/float32.tflite", "cortex-a76", 44_000_000, 60_000_000),
            cost("/d/pi_cost/int8_full.tflite", "cortex-a76", 23_000_000, 41_000_000)]
    assert problems(good, [c.model for c in good], ("cortex-a76",)) == []
    assert problems(good, [c.model for c in good], ("cortex-a72", "cortex-a76"))[0].startswith("no count for")
    zero = [cost("/d/interop/float32.tflite", "cortex-a76", 0, 1_000_000)]
    assert "invoke 0" in problems(zero, [zero[0].model], ("cortex-a76",))[0]
    shaky = [cost("/d/interop/float32.tflite", "cortex-a76", 44_000_000, 60_000_000, spread=MAX_SPREAD * 2)]
    assert "invoke counts differ by" in problems(shaky, [shaky[0].model], ("cortex-a76",))[0]
    dearer = [good[0], cost("/d/interop/int8.tflite", "cortex-a76", 45_000_000, 60_000_000)]
    assert "not below" in problems(dearer, [c.model for c in dearer], ("cortex-a76",))[0]


def test_table_shows_millions_and_the_frame_ratio():
    lines = table([cost("/d/interop/int8.tflite", "cortex-a72", 45_700_000, 60_000_000),
                   cost("/d/interop/int8.tflite", "cortex-a76", 22_600_000, 40_680_000)]).splitlines()
    assert lines[0].startswith("| model | cortex-a72 (Pi 4) invoke | cortex-a76 (Pi 5) invoke")
    assert lines[2] == "| interop/int8 | 45.7 M | 22.6 M | 40.7 M | 1.80x |"


def test_frame_cost_compares_each_preparation_with_the_trainers_pixels(tmp_path):
    frame_cost = load_script("frame_cost")
    rows = np.linspace(0, 255, 600)[:, np.newaxis, np.newaxis]
    columns = np.linspace(0, 255, 800)[np.newaxis, :, np.newaxis]
    for index, channels in enumerate(((1, 0, 0), (0, 1, 1))):
        (tmp_path / "class").mkdir(exist_ok=True)
        gradient = (rows * channels + columns * (1 - np.array(channels))).astype(np.uint8)
        Image.fromarray(gradient).save(tmp_path / "class" / f"{index}.png")
    lines = frame_cost.pixel_table(tmp_path, 10, None).splitlines()
    assert lines[0].startswith("2 photos from") and len(lines) == 3 + len(frame_cost.PREPARATIONS)
    means = {line.split(" | ")[0][2:]: float(line.split(" | ")[1]) for line in lines[3:]}
    assert set(means) == set(frame_cost.PREPARATIONS) and all(0 <= mean < 8 for mean in means.values())


def test_opencv_computes_the_pixels_of_edge_image():
    # The check scripts/frame_cost.py's guest makes on the emulated Pi 5 before counting, here on
    # this CPU: OpenCV's halving is Pillow's reduce(2), its INTER_LINEAR_EXACT edge.image.bilinear,
    # and resize_bgr the same with OpenCV as without, value for value.
    guest = load_script("frame_cost_guest")
    differences = guest.opencv_differences()
    kinds = {what.split()[0] for what in differences}
    assert kinds == {"INTER_AREA", "INTER_LINEAR_EXACT", "resize_bgr"}
    assert len(differences) > 2 * len(guest.FRAME_SHAPES) * len(guest.BILINEAR_SIZES) and set(differences.values()) == {0}


@pytest.mark.slow
def test_frame_cost_counts_the_preparations():
    if find_counter() is None:
        pytest.skip("the Pi instruction counter is not built (make arm64-check, then make pi-cost)")
    frame_cost = load_script("frame_cost")
    lines = frame_cost.cost_table(shared_path("thirdparty", "mobilenet_v2_1.0_224_quant.tflite")).splitlines()
    millions = {line.split(" | ")[0][2:]: float(line.split(" | ")[1].removesuffix(" M")) for line in lines[3:]}
    # The frame shrunk first costs less than resizing it whole, less again halved by OpenCV, and
    # less again with the exact bilinear step in OpenCV; all are well under the network.
    guest = load_script("frame_cost_guest")
    assert millions[frame_cost.CURRENT] < 0.6 * millions[guest.PREVIOUS] < 0.6 * millions[guest.PILLOW_SHRINK]
    assert 1 < millions[guest.PILLOW_SHRINK] < 0.8 * millions[frame_cost.BASELINE] < millions["bare invoke()"]


@pytest.mark.slow
def test_real_counts_repeat_and_include_the_frame():
    if find_counter() is None:
        pytest.skip("the Pi instruction counter is not built (make arm64-check, then make pi-cost)")
    model = shared_path("thirdparty", "mobilenet_v1_0.25_128_quant.tflite")
    first, again = (count([model], ("cortex-a76",), repeats=2)[0] for _ in range(2))
    assert 1_000_000 < first.invoke < first.frame
    assert spread(first.invoke_runs) <= MAX_SPREAD and spread(first.frame_runs) <= MAX_FRAME_SPREAD
    assert abs(again.invoke - first.invoke) <= MAX_SPREAD * first.invoke
    assert abs(again.frame - first.frame) <= MAX_SPREAD * first.frame


def test_convert_proof_table_shows_the_counts_or_how_to_get_them():
    from trainer.convert import ConversionReport

    report = ConversionReport(mode="int8", tflite_path=Path("m.tflite"), labels_path=Path("labels.txt"),
                              size_bytes=1, input_dtype="uint8", output_dtype="uint8", calibration_count=1,
                              conversion_seconds=1.0, test_count=0)
    assert "instructions per invoke, Pi 5 (cortex-a76)" in report.table()
    assert report.table().count("n/a (--pi_cost)") == 2
    report.pi_instructions = {"cortex-a72": 45_700_000, "cortex-a76": 22_600_000}
    rows = [line.split() for line in report.table().splitlines() if line.startswith("instructions per invoke")]
    assert [row[-2:] for row in rows] == [["45.7", "M"], ["22.6", "M"]]


def test_make_pi_cost_says_what_is_missing(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "pi_cost.py"
    for arguments, expected in ((["--demo", str(tmp_path), "--no-thirdparty"], "run `make demo` first"),
                                (["--no_demo", "--no_thirdparty"], "nothing to count")):
        result = subprocess.run([sys.executable, str(script), *arguments], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and result.stderr.startswith("error: ") and expected in result.stderr
