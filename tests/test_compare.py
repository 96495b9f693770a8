"""`retrain-edge compare`: backbones judged by k-fold heads on the bottleneck cache, as a user types it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY_ARCHITECTURE
from trainer import compare as compare_module
from trainer.cli import app
from trainer.compare import (
    COST_CACHE_FOLDER, BackboneFigures, mark_front_and_recommendation, read_costs, set_paired_differences,
)
from trainer.crossval import hash_folds, mean_and_clustered_standard_error, paired_difference, repeat_folds
from trainer.pi_cost import find_counter

runner = CliRunner()
OTHER_TINY_ARCHITECTURE = "mobilenet_v1_0.25_128"


def figures(name: str, accuracy: float, cost: float, difference_to_best: float = 0.0,
            difference_standard_error: float = 0.0, standard_error: float = 0.02) -> BackboneFigures:
    return BackboneFigures(name, "imagenet", [accuracy], accuracy, standard_error, 0.02, 1.5, 1.0, 1000, 400, cost,
                           difference_to_best=difference_to_best, difference_standard_error=difference_standard_error)


def without_counter(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """Hide the Pi instruction counter, whether or not this machine has built it."""
    monkeypatch.setenv("ARM64_CHECK_CACHE", str(tmp_path_factory.mktemp("no-counter")))


@pytest.fixture(scope="module")
def compared(sample_dir, tmp_path_factory):
    """One `compare` run of two tiny random backbones on the sample data, without the Pi counter:
    (arguments, result, report_dir, bottleneck_dir)."""
    report_dir, bottleneck_dir = tmp_path_factory.mktemp("compare"), tmp_path_factory.mktemp("cache")
    arguments = ["compare", "--image_dir", str(sample_dir), "--architectures",
                 f"{TINY_ARCHITECTURE},{OTHER_TINY_ARCHITECTURE}", "--weights", "none", "--folds", "3", "--repeats", "2",
                 "--how_many_training_steps", "60", "--bottleneck_dir", str(bottleneck_dir),
                 "--report_dir", str(report_dir)]
    with pytest.MonkeyPatch.context() as monkeypatch:
        without_counter(monkeypatch, tmp_path_factory)
        result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    return arguments, result, report_dir, bottleneck_dir


def test_compare_writes_the_table_the_page_and_the_json_and_recommends_one(compared, sample_dir):
    _, result, report_dir, _ = compared
    summary = json.loads((report_dir / "compare.json").read_text())
    assert summary["image_count"] == 160 and summary["folds"] == 3 and summary["repeats"] == 2
    rows = summary["backbones"]
    assert [row["architecture"] for row in rows] == [TINY_ARCHITECTURE, OTHER_TINY_ARCHITECTURE]
    for row in rows:
        assert len(row["fold_accuracies"]) == 3 and 0 <= row["accuracy"] <= 1
        assert len(row["repeat_accuracies"]) == 2 and row["accuracy"] == pytest.approx(np.mean(row["repeat_accuracies"]))
        assert row["difference_to_best"] >= 0 and row["difference_standard_error"] >= 0
        assert row["tied_with_best"] == (row["difference_to_best"] <= row["difference_standard_error"])
        assert 0 < row["int8_bytes"] < row["float32_bytes"] and row["cost"] > 0 and row["bottleneck_ms"] > 0
        assert row["cortex_a72_cost"] is None
        assert 0 <= row["out_of_fold_ece"] <= 1 and row["temperature"] > 0
        assert 0 < row["out_of_fold_ece_floor"] < 1  # 160 photos: a perfectly calibrated model shows some ECE too
        assert f"{row['out_of_fold_ece']:.1%} ({row['out_of_fold_ece_floor']:.1%})" in result.output
    assert sum(row["difference_to_best"] == 0 for row in rows) >= 1
    assert "3-fold cross-validation, 2 fold assignments, on 160 photos" in result.output
    assert [row["architecture"] for row in rows if row["recommended"]] == [summary["recommended"]]
    # Said as such, with how to get the Pi counts, when the Pi instruction counter is not built.
    assert summary["cost_kind"] == "x86-latency" and "x86" in summary["cost_name"]
    assert "cost: x86 full-int8 latency" in result.output and "make pi-cost" in result.output
    assert "--float_layers 0" in result.output
    assert "Pi 4 (A72)" not in result.output
    for architecture in (TINY_ARCHITECTURE, OTHER_TINY_ARCHITECTURE):
        assert architecture in result.output
    assert f"recommended: {summary['recommended']}" in result.output
    assert f"retrain-edge train --image_dir {sample_dir} --architecture {summary['recommended']}" in result.output


def test_a_rerun_builds_no_backbone_and_computes_no_bottleneck(compared, monkeypatch, tmp_path_factory):
    arguments, first, report_dir, _ = compared
    before = json.loads((report_dir / "compare.json").read_text())

    def refuse(*_):
        raise AssertionError("a rerun on a warm cache built a backbone")

    monkeypatch.setattr(compare_module, "build_backbone", refuse)
    without_counter(monkeypatch, tmp_path_factory)
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    after = json.loads((report_dir / "compare.json").read_text())
    assert after == before  # same folds, same seed, same cached costs: the same figures


@pytest.mark.parametrize("damage", ["no int8 size", "a device cost without its figure"])
def test_a_damaged_cost_cache_file_is_measured_again(compared, monkeypatch, tmp_path_factory, damage):
    arguments, _, report_dir, bottleneck_dir = compared
    cost_path = sorted((bottleneck_dir / COST_CACHE_FOLDER).glob("*.json"))[0]
    whole = json.loads(cost_path.read_text())
    damaged = json.loads(cost_path.read_text())
    if damage == "no int8 size":
        del damaged["int8_bytes"]
    else:
        damaged["device_costs"]["x86-latency"] = {"cost": "fast"}
    cost_path.write_text(json.dumps(damaged))
    assert read_costs(cost_path) is None or "x86-latency" not in read_costs(cost_path)["device_costs"]
    without_counter(monkeypatch, tmp_path_factory)
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    remeasured = json.loads(cost_path.read_text())
    assert set(remeasured) == set(whole) and remeasured["int8_bytes"] > 0
    assert remeasured["device_costs"]["x86-latency"]["cost"] > 0


def test_with_the_pi_counter_built_the_cost_is_the_a76_count_and_the_recommendation_uses_it(compared, monkeypatch,
                                                                                           tmp_path_factory):
    if find_counter() is None:
        pytest.skip("the Pi instruction counter is not built (make arm64-check, then make pi-cost)")
    arguments, _, report_dir, bottleneck_dir = compared
    latencies = json.loads((report_dir / "compare.json").read_text())

    def refuse(*_):
        raise AssertionError("counting a cached int8 model built a backbone")

    # The first run cached x86 latencies: with the counter built since, the same cache yields counts.
    monkeypatch.setattr(compare_module, "build_backbone", refuse)
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    summary = json.loads((report_dir / "compare.json").read_text())
    assert summary["cost_kind"] == "pi-instructions" and summary["cost_name"].startswith("Cortex-A76 (Pi 5)")
    assert "cost: Cortex-A76 (Pi 5) instructions per full-int8 invoke" in result.output and "Pi 4 (A72)" in result.output
    rows = summary["backbones"]
    for row in rows:  # tiny int8 MobileNets run a few million instructions per invoke on either Pi
        assert 0.5 < row["cost"] < 100 and 0.5 < row["cortex_a72_cost"] < 100
    cached = [json.loads(path.read_text())["device_costs"] for path in (bottleneck_dir / COST_CACHE_FOLDER).glob("*.json")]
    # Each kind of cost under its own key, never one read as the other.
    assert len(cached) == 2 and all(set(costs) == {"x86-latency", "pi-instructions"} for costs in cached)
    assert sorted(row["cost"] for row in rows) == sorted(costs["pi-instructions"]["cost"] for costs in cached)
    within = [row for row in rows if row["tied_with_best"]]
    assert summary["recommended"] == min(within, key=lambda row: (row["cost"], -row["accuracy"]))["architecture"]
    page = (report_dir / "compare.html").read_text()
    assert "Cortex-A72 (Pi 4) instructions per full-int8 invoke" in page and "a count, not a time" in page

    # Hidden again, the counter's counts are not read as latencies either.
    without_counter(monkeypatch, tmp_path_factory)
    assert runner.invoke(app, arguments).exit_code == 0
    assert json.loads((report_dir / "compare.json").read_text()) == latencies


def test_the_page_in_headless_chromium_has_the_plot_and_the_table(compared, chromium_page):
    _, _, report_dir, _ = compared
    summary = json.loads((report_dir / "compare.json").read_text())
    chromium_page.goto((report_dir / "compare.html").as_uri())
    plot = chromium_page.locator("svg#accuracy-cost")
    assert plot.is_visible() and plot.bounding_box()["width"] > 300
    assert chromium_page.locator("svg#accuracy-cost circle.backbone").count() == 2
    on_front = sum(row["on_front"] for row in summary["backbones"])
    assert chromium_page.locator("svg#accuracy-cost circle.on-front").count() == on_front >= 1
    assert chromium_page.locator("table#backbones tr[data-architecture]").count() == 2
    recommended = chromium_page.locator(f"table#backbones tr[data-architecture='{summary['recommended']}']")
    assert "recommended" in recommended.inner_text()


@pytest.mark.parametrize("arguments, message", [
    (["--architectures", "mobilenet_v2_0.35_96,resnet_50"], "error: unknown architecture 'resnet_50'"),
    (["--architectures", "mobilenet_v2_0.35_96", "--weights", "missing.h5"], "error: --weights missing.h5: no such file"),
    (["--architectures", "mobilenet_v2_0.35_96,mobilenet_v1_0.25_128", "--weights", "none,none,none"],
     "error: --weights: give one value for every backbone or one per backbone (2), not 3"),
    (["--architectures", "mobilenet_v2_0.35_96,mobilenet_v2_0.35_100"],
     "error: Keras has no ImageNet weights for mobilenet_v2_0.35_100 at 100 px"),
])
def test_bad_input_is_one_error_line_before_any_work(sample_dir, tmp_path, arguments, message):
    result = runner.invoke(app, ["compare", "--image_dir", str(sample_dir), "--bottleneck_dir", str(tmp_path / "cache"),
                                 "--report_dir", str(tmp_path / "report"), *arguments])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith(message), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "report").exists()


def test_the_recommendation_is_the_cheapest_within_one_standard_error_of_the_paired_difference_to_the_best():
    rows = [figures("big", 0.90, 10.0), figures("middle", 0.885, 5.0, 0.015, 0.02),
            figures("small", 0.80, 1.0, 0.10, 0.02)]
    mark_front_and_recommendation(rows)
    assert [row.architecture for row in rows if row.recommended] == ["middle"]
    assert [row.on_front for row in rows] == [True, True, True]
    # A backbone both dearer and less accurate than another is off the front and never recommended.
    rows = [figures("good", 0.90, 2.0), figures("worse", 0.85, 3.0, 0.05, 0.005)]
    mark_front_and_recommendation(rows)
    assert [(row.on_front, row.recommended) for row in rows] == [(True, True), (False, False)]


def generated_correctness(photos: int = 600, accuracy: float = 0.85, lost: int = 8, seed: int = 0):
    """Per-photo correctness of two backbones judged on the same photos: the second is the first
    with `lost` of its right answers wrong."""
    rng = np.random.default_rng(seed)
    first = rng.random(photos) < accuracy
    second = first.copy()
    second[rng.choice(np.flatnonzero(first), lost, replace=False)] = False
    return first, second


def test_a_paired_difference_is_detected_where_the_per_backbone_standard_errors_overlap():
    names = [f"photo{index}.jpg" for index in range(600)]
    dear, cheap = generated_correctness()
    dear_accuracy, dear_error = mean_and_clustered_standard_error(dear, names)
    cheap_accuracy, cheap_error = mean_and_clustered_standard_error(cheap, names)
    assert dear_accuracy - dear_error < cheap_accuracy + cheap_error  # the two accuracies' own errors overlap
    difference, difference_error = paired_difference(dear, cheap, names)
    assert difference == pytest.approx(8 / 600) and difference > 2 * difference_error
    # compare's decision: the per-backbone rule took the cheaper; the paired one keeps the better.
    rows = [figures("dear", dear_accuracy, 2.0, standard_error=dear_error),
            figures("cheap", cheap_accuracy, 1.0, standard_error=cheap_error)]
    assert cheap_accuracy >= dear_accuracy - dear_error
    set_paired_differences(rows, [dear[None], cheap[None]], names)
    mark_front_and_recommendation(rows)
    assert [row.recommended for row in rows] == [True, False] and not rows[1].tied_with_best
    # The same two, on photos where they disagree both ways as often: tied, and the cheaper is taken.
    tied = cheap.copy()
    tied[np.flatnonzero(~dear)[:8]] = True
    set_paired_differences(rows, [dear[None], tied[None]], names)
    rows[1].accuracy = float(tied.mean())
    mark_front_and_recommendation(rows)
    assert rows[1].tied_with_best and [row.recommended for row in rows] == [False, True]


def test_a_burst_counts_once_in_a_standard_error():
    values = np.random.default_rng(1).random(200) < 0.8
    names = [f"photo{index}.jpg" for index in range(200)]
    _, single = mean_and_clustered_standard_error(values, names)
    # Every photo twice, as two frames of a burst: no more information, so no smaller error.
    bursts = [f"photo{index}_nohash_{frame}.jpg" for index in range(200) for frame in (1, 2)]
    _, doubled = mean_and_clustered_standard_error(np.repeat(values, 2), bursts)
    assert doubled == pytest.approx(single)
    assert single == pytest.approx(np.std(values, ddof=1) / np.sqrt(200))


def test_repeated_folds_keep_bursts_together_and_cut_the_photos_differently():
    names = [f"photo{index}.jpg" for index in range(500)] + [f"cat_nohash_{frame}.jpg" for frame in range(4)]
    assignments = [repeat_folds(names, 5, repeat) for repeat in range(4)]
    assert np.array_equal(assignments[0], hash_folds(names, 5))  # the first is train's folds
    for fold_of in assignments:
        assert len(set(fold_of[-4:])) == 1  # a burst in one fold, in every assignment
        assert np.bincount(fold_of, minlength=5).min() > 60  # about a fifth each
    for first, second in zip(assignments, assignments[1:]):
        assert np.mean(first == second) < 0.4  # another cut: about a fifth of the photos stay together by chance
    assert np.array_equal(repeat_folds(names[:10], 5, 2), assignments[2][:10])  # a photo's fold: its name alone
