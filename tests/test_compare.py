"""`retrain-edge compare`: backbones judged by k-fold heads on the bottleneck cache, as a user types it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import TINY_ARCHITECTURE
from trainer import compare as compare_module
from trainer.cli import app
from trainer.compare import BackboneFigures, mark_front_and_recommendation

runner = CliRunner()
OTHER_TINY_ARCHITECTURE = "mobilenet_v1_0.25_128"


def figures(name: str, accuracy: float, standard_error: float, cost: float) -> BackboneFigures:
    return BackboneFigures(name, "imagenet", [accuracy], accuracy, standard_error, 0.02, 1.5, 1.0, 1000, 400, cost)


@pytest.fixture(scope="module")
def compared(sample_dir, tmp_path_factory):
    """One `compare` run of two tiny random backbones on the sample data: (arguments, result, report_dir)."""
    report_dir = tmp_path_factory.mktemp("compare")
    arguments = ["compare", "--image_dir", str(sample_dir), "--architectures",
                 f"{TINY_ARCHITECTURE},{OTHER_TINY_ARCHITECTURE}", "--weights", "none", "--folds", "3",
                 "--how_many_training_steps", "60", "--bottleneck_dir", str(tmp_path_factory.mktemp("cache")),
                 "--report_dir", str(report_dir)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    return arguments, result, report_dir


def test_compare_writes_the_table_the_page_and_the_json_and_recommends_one(compared, sample_dir):
    _, result, report_dir = compared
    summary = json.loads((report_dir / "compare.json").read_text())
    assert summary["image_count"] == 160 and summary["folds"] == 3
    rows = summary["backbones"]
    assert [row["architecture"] for row in rows] == [TINY_ARCHITECTURE, OTHER_TINY_ARCHITECTURE]
    for row in rows:
        assert len(row["fold_accuracies"]) == 3 and 0 <= row["accuracy"] <= 1
        assert 0 < row["int8_bytes"] < row["float32_bytes"] and row["cost"] > 0 and row["bottleneck_ms"] > 0
        assert 0 <= row["out_of_fold_ece"] <= 1 and row["temperature"] > 0
    assert [row["architecture"] for row in rows if row["recommended"]] == [summary["recommended"]]
    assert "x86" in summary["cost_name"]  # said as such until the Pi instruction counter is installed
    for architecture in (TINY_ARCHITECTURE, OTHER_TINY_ARCHITECTURE):
        assert architecture in result.output
    assert f"recommended: {summary['recommended']}" in result.output
    assert f"retrain-edge train --image_dir {sample_dir} --architecture {summary['recommended']}" in result.output


def test_a_rerun_builds_no_backbone_and_computes_no_bottleneck(compared, monkeypatch):
    arguments, first, report_dir = compared
    before = json.loads((report_dir / "compare.json").read_text())

    def refuse(*_):
        raise AssertionError("a rerun on a warm cache built a backbone")

    monkeypatch.setattr(compare_module, "build_backbone", refuse)
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    after = json.loads((report_dir / "compare.json").read_text())
    assert after == before  # same folds, same seed, same cached costs: the same figures


def test_the_page_in_headless_chromium_has_the_plot_and_the_table(compared, chromium_page):
    _, _, report_dir = compared
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


def test_the_recommendation_is_the_cheapest_within_one_standard_error_of_the_best():
    rows = [figures("big", 0.90, 0.02, 10.0), figures("middle", 0.885, 0.01, 5.0), figures("small", 0.80, 0.01, 1.0)]
    mark_front_and_recommendation(rows)
    assert [row.architecture for row in rows if row.recommended] == ["middle"]
    assert [row.on_front for row in rows] == [True, True, True]
    # A backbone both dearer and less accurate than another is off the front and never recommended.
    rows = [figures("good", 0.90, 0.005, 2.0), figures("worse", 0.85, 0.005, 3.0)]
    mark_front_and_recommendation(rows)
    assert [(row.on_front, row.recommended) for row in rows] == [(True, True), (False, False)]
