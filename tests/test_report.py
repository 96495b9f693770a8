"""retrain-edge evaluate and audit: figures checked by hand, the report's HTML and images, the audit's finds."""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_ARCHITECTURE, load_script, shared_path
from edge.image import load_rgb
from trainer.calibration import expected_calibration_error, perfect_calibration_ece, precision_coverage
from trainer.cli import app
from trainer.dataset import list_images, set_for_file
from trainer.audit import AuditOptions, audit, cross_validated_probabilities, small_classes, suspected_mislabels
from trainer.evaluate import EvaluateOptions, class_figures, confusion_matrix, evaluate
from trainer.report import percent
from trainer.review import ReviewOptions, ReviewSession

runner = CliRunner()
PRETRAINED_WEIGHTS = ("weights", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
# The audit's sample data: 20% buckets give every class at least 3 validation and test images.
AUDIT_PERCENTAGES = ["--validation_percentage", "20", "--testing_percentage", "20"]


@pytest.fixture(scope="module")
def keras_scores(trained_dir) -> dict[str, np.ndarray]:
    """Relative path -> scores (classes,) straight from model.keras on the shared preprocessing, every image."""
    import keras

    run = json.loads((trained_dir / "run.json").read_text())
    paths = [path for files in run["split"]["files"].values() for label_paths in files.values() for path in label_paths]
    model = keras.saving.load_model(trained_dir / "model.keras", compile=False)
    pixels = np.stack([load_rgb(Path(run["image_dir"]) / path, tuple(run["input_size"])) for path in paths])
    return dict(zip(paths, model.predict((pixels.astype(np.float32) - 127.5) / 127.5, verbose=0)))


class ImageSources(HTMLParser):
    """Collects every <img src> of a page and checks that tags open and close in order."""

    VOID = {"img", "meta", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.sources, self.open_tags = [], []

    def handle_starttag(self, tag, attributes):
        if tag == "img":
            self.sources.append(dict(attributes)["src"])
        elif tag not in self.VOID:
            self.open_tags.append(tag)

    def handle_endtag(self, tag):
        assert self.open_tags and self.open_tags.pop() == tag, f"</{tag}> closes nothing open"


def embedded_images(page: Path) -> list[Image.Image]:
    """Parse the page as HTML; decode every embedded image (all must be data: URLs)."""
    parser = ImageSources()
    parser.feed(page.read_text())
    parser.close()
    assert parser.open_tags == []
    images = []
    for source in parser.sources:
        header, data = source.split(",", 1)
        assert header in ("data:image/png;base64", "data:image/jpeg;base64")
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        images.append(image)
    return images


# --- evaluate ------------------------------------------------------------------------------------

def test_confusion_matrix_and_figures_by_hand():
    true = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0])
    confusion = confusion_matrix(true, predicted, 3)
    assert confusion.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    figures = class_figures(confusion)
    np.testing.assert_allclose(figures["precision"][:2], [2 / 3, 2 / 3])
    np.testing.assert_allclose(figures["recall"], [2 / 3, 1, 0])
    np.testing.assert_allclose(figures["f1"][:2], [2 / 3, 0.8])
    assert np.isnan(figures["precision"][2]) and np.isnan(figures["f1"][2])  # never predicted
    assert figures["support"].tolist() == [3, 2, 1]


@pytest.fixture(scope="module")
def evaluated(trained_dir, tmp_path_factory):
    """`retrain-edge evaluate --split all` on the session's tiny model, report in its own folder."""
    report_dir = tmp_path_factory.mktemp("report")
    result = runner.invoke(app, ["evaluate", "--output_dir", str(trained_dir), "--split", "all",
                                 "--report_dir", str(report_dir)])
    assert result.exit_code == 0, result.output
    return report_dir, result.output


def test_evaluate_matrix_matches_keras_predictions_counted_by_hand(trained_dir, evaluated, keras_scores):
    run = json.loads((trained_dir / "run.json").read_text())
    labels = run["labels"]
    expected = [[0] * len(labels) for _ in labels]
    for files in run["split"]["files"].values():
        for label, paths in files.items():
            for path in paths:
                expected[labels.index(label)][int(keras_scores[path].argmax())] += 1
    correct = sum(expected[i][i] for i in range(len(labels)))

    output = evaluated[1]
    printed = output.split("predicted label):\n", 1)[1].splitlines()[1:1 + len(labels)]
    assert [[int(cell) for cell in line.split()[-len(labels):]] for line in printed] == expected
    assert f"accuracy: {correct / len(keras_scores):.1%} ({correct}/{len(keras_scores)})" in output

    # The calibration figures are those of the Keras scores, computed by trainer.calibration.
    paths = [path for files in run["split"]["files"].values() for label, paths in files.items() for path in paths]
    scores = np.stack([keras_scores[path] for path in paths])
    truth = np.array([labels.index(label) for files in run["split"]["files"].values()
                      for label, paths in files.items() for _ in paths])
    assert f"expected calibration error: {expected_calibration_error(scores, truth):.3f}" in output
    # Beside it, the out-of-fold figure train measured on every training and validation photo.
    out_of_fold = run["calibration"]["out_of_fold_ece"]["after"]
    assert f"out-of-fold expected calibration error at training: {out_of_fold:.3f}" in output
    # Each beside the ECE a perfectly calibrated model would show: the split's from its own scores.
    perfect = perfect_calibration_ece(scores)
    assert f"would show {perfect['median']:.3f} on as many images (at most {perfect['percentile_95']:.3f}" in output
    perfect = run["calibration"]["out_of_fold_ece"]["perfectly_calibrated"]
    assert f"would show {perfect['median']:.3f} on as many images (at most {perfect['percentile_95']:.3f}" in output
    table = output.split("--threshold  answers kept that are right  images kept\n", 1)[1].splitlines()
    for line, row in zip(table, precision_coverage(scores, truth)):
        assert line.split() == [f"{row.threshold:g}", percent(row.precision), percent(row.coverage)]

    # Any folder of class sub-folders: the same images, found afresh, give the same matrix.
    result = evaluate(EvaluateOptions(output_dir=trained_dir, image_dir=Path(run["image_dir"]),
                                      report_dir=evaluated[0]))
    assert result.split == "all" and result.confusion.tolist() == expected
    np.testing.assert_allclose(result.scores, [keras_scores[path] for path in result.paths], atol=1e-5)


def test_report_is_valid_html_with_decodable_images(evaluated, trained_dir):
    report_dir, output = evaluated
    assert (trained_dir / "report.html").exists() is False  # --report_dir: nothing written into the run
    assert f"wrote {report_dir / 'report.html'}" in output
    with Image.open(report_dir / "confusion_matrix.png") as matrix:
        assert matrix.format == "PNG" and min(matrix.size) > 200
    images = embedded_images(report_dir / "report.html")
    correct, total = map(int, output.split("accuracy: ")[1].split("(")[1].split(")")[0].split("/"))
    # The confusion matrix, precision/coverage by threshold, the training curves, one thumbnail per mistake.
    assert len(images) == 3 + min(total - correct, 100)
    assert [image.format for image in images[:3]] == ["PNG", "PNG", "PNG"]
    assert all(image.format == "JPEG" and max(image.size) <= 160 for image in images[3:])
    assert "Choosing --threshold" in (report_dir / "report.html").read_text()
    page = (report_dir / "report.html").read_text()
    assert page.count("a perfectly calibrated model with these scores would show") == 2  # the split's, out of fold
    assert "http" not in page.replace("<!DOCTYPE html>", "")  # nothing to fetch


def test_any_tflite_runs_through_the_edge_runtime_and_matches_keras(sample_dir, tmp_path):
    """A model from elsewhere, with labels.txt beside it and no run.json, on a folder of class sub-folders."""
    import keras
    import tensorflow as tf

    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(features))
    model.save(tmp_path / "model.keras")
    (tmp_path / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    (tmp_path / "labels.txt").write_text("".join(f"{label}\n" for label in list_images(sample_dir).labels))

    results = [evaluate(EvaluateOptions(output_dir=tmp_path / "none", model=tmp_path / name, image_dir=sample_dir,
                                        report_dir=tmp_path / name.replace(".", "_")))
               for name in ("model.keras", "model.tflite")]
    assert results[0].paths == results[1].paths and len(results[1].paths) == 160
    np.testing.assert_allclose(results[1].scores, results[0].scores, atol=1e-5)
    assert len(embedded_images(tmp_path / "model_tflite" / "report.html")) >= 1  # no run.json: no curves


@pytest.mark.parametrize("arguments, message", [
    (["--split", "everything"], "--split everything"),
    (["--model", "nowhere.tflite"], "does not exist"),
])
def test_evaluate_mistakes_are_one_line_errors(trained_dir, tmp_path, arguments, message):
    result = runner.invoke(app, ["evaluate", "--output_dir", str(trained_dir), "--report_dir", str(tmp_path),
                                 *arguments])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_evaluate_without_a_run_says_to_train_first(tmp_path):
    result = runner.invoke(app, ["evaluate", "--output_dir", str(tmp_path)])
    assert result.exit_code == 2 and "retrain-edge train" in result.output


# --- audit ---------------------------------------------------------------------------------------

def test_small_classes_are_those_with_few_validation_or_test_images(sample_dir):
    images = list_images(sample_dir, 10, 10)
    found = small_classes(images.files, images.labels, 10, 10)
    expected = {label for label in images.labels
                if min(len(images.files["validation"][label]), len(images.files["testing"][label])) < 3}
    assert {entry["label"] for entry in found} == expected and expected  # the 10% buckets are too small here
    assert small_classes(images.files, images.labels, 0, 0) == []


@pytest.fixture(scope="module")
def audit_arguments(tmp_path_factory) -> list[str]:
    """Pretrained weights (random ones give no signal to find mislabels with) at the tiny input size."""
    weights = shared_path(*PRETRAINED_WEIGHTS)
    return ["--architecture", TINY_ARCHITECTURE, "--weights", str(weights), *AUDIT_PERCENTAGES,
            "--bottleneck_dir", str(tmp_path_factory.mktemp("audit_bottlenecks"))]


def test_audit_of_a_clean_set_reports_nothing(sample_dir, audit_arguments, tmp_path):
    options = dict(zip(audit_arguments[::2], audit_arguments[1::2]))
    result = audit(AuditOptions(
        image_dir=sample_dir, architecture=TINY_ARCHITECTURE, weights=options["--weights"],
        bottleneck_dir=Path(options["--bottleneck_dir"]), validation_percentage=20, testing_percentage=20,
        report_dir=tmp_path))
    assert (result.duplicates, result.near_duplicates, result.straddling_bursts, result.suspected_mislabels,
            result.small_classes) == ([], [], [], [], [])
    assert result.image_count == 160
    assert len(embedded_images(tmp_path / "audit.html")) == 0


def test_audit_finds_a_planted_duplicate_and_mislabelled_image(sample_dir, audit_arguments, tmp_path):
    image_dir = tmp_path / "images"
    shutil.copytree(sample_dir, image_dir)
    # A copy of a circle under a name that the split puts in another set: a leak into evaluation.
    original = sorted((image_dir / "circles").iterdir())[0]
    original_set = set_for_file(original.name, 20, 20)
    copy_name = next(name for name in (f"circles_copy{i}.jpg" for i in range(100))
                     if set_for_file(name, 20, 20) != original_set)
    shutil.copyfile(original, image_dir / "circles" / copy_name)
    # A new circle image filed under stripes.
    stray = load_script("make_sample_data").make_sample_dataset(tmp_path / "stray", classes=["circles"],
                                                                images_per_class=1, size=128, seed=5)
    planted = next((stray / "circles").iterdir())
    shutil.copyfile(planted, image_dir / "stripes" / planted.name)

    result = runner.invoke(app, ["audit", "--image_dir", str(image_dir), *audit_arguments,
                                 "--report_dir", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("duplicate", "likely", "small"))]
    assert len(lines) == 2, result.output
    assert lines[0].startswith("duplicate within a class; across sets")
    assert f"circles/{original.name}" in lines[0] and f"circles/{copy_name}" in lines[0]
    assert lines[1].startswith(f"likely mislabelled: stripes/{planted.name} is labelled 'stripes' but looks like 'circles'")
    # One thumbnail per duplicate group and per suspect.
    assert len(embedded_images(tmp_path / "report" / "audit.html")) == 2
    # audit.json has the same findings, for `retrain-edge review --audit`, which lists the suspect.
    findings = json.loads((tmp_path / "report" / "audit.json").read_text())
    assert findings["image_dir"] == str(image_dir.resolve()) and len(findings["duplicates"]) == 1
    assert [(entry["path"], entry["predicted"]) for entry in findings["suspected_mislabels"]] == [
        (f"stripes/{planted.name}", "circles")]
    with ReviewSession(ReviewOptions(audit=tmp_path / "report", thumbnail_dir=tmp_path / "thumbnails")) as session:
        assert [photo["name"] for photo in json.loads(session.listing())["photos"]] == [planted.name]


def name_in_other_set(stem: str, other_than: str) -> str:
    """A file name starting with stem that the 10/10 split puts in another set than other_than."""
    return next(name for name in (f"{stem}{i}.jpg" for i in range(200)) if set_for_file(name) != other_than)


def test_audit_finds_a_near_duplicate_planted_across_sets_and_not_the_ordinary_photos(tmp_path):
    flowers = shared_path("flowers")
    image_dir = tmp_path / "images"
    for label in ("daisy", "roses"):
        (image_dir / label).mkdir(parents=True)
        for photo in sorted((flowers / label).glob("*.jpg"))[:30]:
            shutil.copyfile(photo, image_dir / label / photo.name)
    original = sorted((image_dir / "roses").iterdir())[3]
    copy_name = name_in_other_set("resized_copy", set_for_file(original.name))
    with Image.open(original) as image:
        image.convert("RGB").resize((image.width // 2, image.height // 2)).save(image_dir / "roses" / copy_name,
                                                                                quality=60)

    result = runner.invoke(app, ["audit", "--image_dir", str(image_dir), "--weights", "none",
                                 "--report_dir", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    found = [line for line in result.output.splitlines() if line.startswith("near-duplicate")]
    assert found == [f"near-duplicate within a class; across sets ({', '.join(sorted({set_for_file(original.name), set_for_file(copy_name)}))}): "
                     "inflates measured accuracy: "
                     + ", ".join(f"roses/{name} ({set_for_file(name)})" for name in sorted([original.name, copy_name]))]
    assert not any(line.startswith("duplicate") for line in result.output.splitlines())
    assert len(embedded_images(tmp_path / "report" / "audit.html")) == 2


def test_audit_reports_a_burst_renamed_across_sets(sample_dir, tmp_path):
    from edge.collect import Collector

    image_dir = tmp_path / "images"
    shutil.copytree(sample_dir, image_dir)
    collector = Collector(image_dir, "circles", every=0)
    for value in range(3):
        collector.offer(np.full((40, 40, 3), value * 60, np.uint8), value)
    burst = collector.writer.burst_id
    kept = image_dir / "circles" / f"{burst}_nohash_0000.jpg"
    # Renamed out of the convention: each name is hashed on its own, and this one lands elsewhere.
    renamed = name_in_other_set(f"{burst}_", set_for_file(kept.name))
    (image_dir / "circles" / f"{burst}_nohash_0001.jpg").rename(image_dir / "circles" / renamed)

    result = runner.invoke(app, ["audit", "--image_dir", str(image_dir), "--weights", "none",
                                 "--report_dir", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    found = [line for line in result.output.splitlines() if line.startswith("burst")]
    assert len(found) == 1 and found[0].startswith(f"burst {burst} across sets"), result.output
    assert f"circles/{renamed}" in found[0] and f"circles/{kept.name}" in found[0]
    assert f"{burst}_nohash_0002.jpg" in found[0]


def test_audit_with_random_weights_checks_files_only(sample_dir, tmp_path):
    result = runner.invoke(app, ["audit", "--image_dir", str(sample_dir), "--weights", "none", *AUDIT_PERCENTAGES,
                                 "--report_dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "does not look for mislabelled images" in result.output and "no problems found" in result.output


def test_a_mislabelled_burst_is_not_confirmed_by_its_own_frames():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (2, 64))
    labels = np.repeat([0, 1], 40)
    names = [f"{index}.jpg" for index in range(80)]
    # Four near-identical frames of a class 0 object, all filed under class 1.
    burst = (centres[0] + rng.normal(0, 0.3, 64) + rng.normal(0, 0.02, (4, 64))).astype(np.float32)
    bottlenecks = np.vstack([(centres[labels] + rng.normal(0, 0.3, (80, 64))).astype(np.float32), burst])
    given = np.append(labels, [1] * 4)
    names += [f"burst_nohash_{index}.jpg" for index in range(4)]
    entries = [{"path": name, "label": str(label)} for name, label in zip(names, given)]
    probabilities = cross_validated_probabilities(bottlenecks, given, names, 2, folds=5)
    suspects = suspected_mislabels(entries, probabilities, ["0", "1"], given, 0.8)
    assert sorted(suspect["path"] for suspect in suspects) == names[-4:]


def test_audit_rejects_a_single_fold(sample_dir, tmp_path):
    result = runner.invoke(app, ["audit", "--image_dir", str(sample_dir), "--folds", "1", "--report_dir", str(tmp_path)])
    assert result.exit_code == 2 and "--folds" in result.output


def test_cross_validation_flags_a_swapped_label_and_never_a_class_of_one():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 64))
    labels = np.repeat([0, 1, 2], 30)
    bottlenecks = (centres[labels] + rng.normal(0, 0.3, (90, 64))).astype(np.float32)
    given = labels.copy()
    given[5] = 1  # a class 0 image filed under class 1
    bottlenecks = np.vstack([bottlenecks, rng.normal(0, 1, (1, 64)).astype(np.float32)])
    given = np.append(given, 3)  # a class with a single image: nothing to judge it by
    entries = [{"path": f"{index}.jpg", "label": str(label)} for index, label in enumerate(given)]
    probabilities = cross_validated_probabilities(bottlenecks, given, [entry["path"] for entry in entries], 4, folds=5)
    suspects = suspected_mislabels(entries, probabilities, ["0", "1", "2", "3"], given, 0.8)
    assert [(suspect["path"], suspect["label"], suspect["predicted"]) for suspect in suspects] == [("5.jpg", "1", "0")]
