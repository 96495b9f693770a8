"""The dataset stage: listing, labels, the filename-hash split, bad files, errors and warnings."""

import hashlib
import logging
import os
import shutil

import pytest
from PIL import Image

from trainer import UserError
from trainer.dataset import SETS, hash_percentage, label_for_folder, list_images, set_for_file

# img_000.jpg ... img_029.jpg hash, with the defaults (10, 10), into validation at 004, 008, 017,
# 018, 023 and testing at 020, 025; the rest is training (computed by hand with the formula).
NUMBERED_VALIDATION = {"img_004.jpg", "img_008.jpg", "img_017.jpg", "img_018.jpg", "img_023.jpg"}
NUMBERED_TESTING = {"img_020.jpg", "img_025.jpg"}
# Base names whose percentage is >= 20: training with the defaults.
TRAINING_ONLY_NAMES = ["a.jpg", "leaf.jpg", "daisy.jpg", "photo2.jpg", "cat.png", "bird.jpeg"]


def write_image(path, colour=(200, 30, 30), image_format=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path, format=image_format)
    return path


def make_dataset(root, names_by_folder):
    for folder, names in names_by_folder.items():
        for name in names:
            write_image(root / folder / name)
    return root


def numbered(count, suffix=".jpg"):
    return [f"img_{index:03d}{suffix}" for index in range(count)]


def warnings_in(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


@pytest.mark.parametrize(
    "folder_name, label",
    [
        ("roses", "roses"),
        ("Roses", "roses"),
        ("red_roses", "red roses"),
        ("Red--Roses!!", "red roses"),
        ("daisy 2", "daisy 2"),
        ("__x__", "x"),
        ("Café", "caf"),
    ],
)
def test_label_is_the_classic_normalisation(folder_name, label):
    assert label_for_folder(folder_name) == label


def test_hash_percentage_is_the_classic_formula():
    for name in ["rose.jpg", "IMG_0001.JPG"]:
        by_hand = (int(hashlib.sha1(name.encode()).hexdigest(), 16) % 2**27) * (100.0 / (2**27 - 1))
        assert hash_percentage(name) == by_hand


@pytest.mark.parametrize(
    "name, percentage, set_name",
    [
        ("rose.jpg", 4.83567, "validation"),
        ("IMG_0002.JPG", 1.14553, "validation"),
        ("img_020.jpg", 13.58393, "testing"),
        ("photo1.jpg", 17.74950, "testing"),
        ("a.jpg", 81.58616, "training"),
        ("IMG_0001.JPG", 52.61247, "training"),
    ],
)
def test_fixed_names_fall_in_fixed_sets(name, percentage, set_name):
    assert hash_percentage(name) == pytest.approx(percentage, abs=1e-5)
    assert set_for_file(name) == set_name


def test_percentages_move_the_boundaries():
    assert set_for_file("a.jpg", 0, 0) == "training"
    assert set_for_file("a.jpg", 81, 0.5) == "training"
    assert set_for_file("a.jpg", 81, 0.6) == "testing"
    assert set_for_file("a.jpg", 82, 0) == "validation"
    assert set_for_file("rose.jpg", 0, 10) == "testing"


def test_nohash_suffix_groups_files():
    key = "leaf_photo"
    percentage = hash_percentage(key)
    for name in ["leaf_photo_nohash_1.jpg", "leaf_photo_nohash_2.JPG", "leaf_photo_nohash_x_nohash_y.png"]:
        assert hash_percentage(name) == percentage
    assert hash_percentage("leaf_photo.jpg") != percentage


def test_unicode_normalisation_keeps_a_name_in_its_set():
    assert hash_percentage("cafe\u0301.jpg") == hash_percentage("caf\u00e9.jpg")


def test_list_images_layout_labels_and_split(tmp_path):
    root = tmp_path / "photos"
    make_dataset(root, {"Tulips": numbered(30), "red_roses": ["x.JPG", "y.jpeg", "z.PNG", "w.Jpg"]})
    write_image(root / "red_roses" / "q.png", image_format="PNG")
    (root / "red_roses" / "notes.txt").write_text("not an image")
    (root / "red_roses" / "image.gif").write_bytes(b"GIF89a")
    write_image(root / "red_roses" / ".hidden.jpg")
    write_image(root / "red_roses" / "nested" / "deep.jpg")
    write_image(root / ".thumbnails" / "t.jpg")
    write_image(root / "loose.jpg")

    images = list_images(root)

    assert images.image_dir == root.resolve() and images.image_dir.is_absolute()
    assert images.labels == ["red roses", "tulips"]
    assert images.skipped == []
    assert set(images.files) == set(SETS)
    assert images.files["validation"]["tulips"] == sorted(f"Tulips/{name}" for name in NUMBERED_VALIDATION)
    assert images.files["testing"]["tulips"] == sorted(f"Tulips/{name}" for name in NUMBERED_TESTING)
    assert len(images.files["training"]["tulips"]) == 30 - len(NUMBERED_VALIDATION) - len(NUMBERED_TESTING)
    roses = sorted(path for set_name in SETS for path in images.files[set_name]["red roses"])
    assert roses == ["red_roses/q.png", "red_roses/w.Jpg", "red_roses/x.JPG", "red_roses/y.jpeg", "red_roses/z.PNG"]
    for set_name in SETS:
        for label, paths in images.files[set_name].items():
            assert paths == sorted(paths)
            assert all(set_for_file(path.split("/")[1]) == set_name for path in paths)

    testing = images.examples("testing")
    assert testing == [(path, 0) for path in images.files["testing"]["red roses"]] + [
        (path, 1) for path in images.files["testing"]["tulips"]
    ]


def test_files_keep_their_set_when_files_are_added(tmp_path):
    make_dataset(tmp_path, {"a": numbered(15), "b": numbered(15, ".png")})
    before = list_images(tmp_path)
    make_dataset(tmp_path, {"a": numbered(60)[15:], "b": ["new_nohash_1.jpg", "other.jpeg"]})
    after = list_images(tmp_path)
    for set_name in SETS:
        for label in before.labels:
            assert set(before.files[set_name][label]) <= set(after.files[set_name][label])


def test_split_does_not_depend_on_how_image_dir_is_spelled(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data" / "photos", {"a": numbered(25), "b": TRAINING_ONLY_NAMES + ["rose.jpg"]})
    monkeypatch.chdir(tmp_path / "data")
    spellings = ["photos", "./photos/", str(root), str(root) + "/", str(root / ".." / "photos")]
    listed = [list_images(spelling) for spelling in spellings]
    assert all(images == listed[0] for images in listed)

    moved = shutil.copytree(root, tmp_path / "elsewhere" / "renamed")
    assert list_images(moved).files == listed[0].files


def test_every_bad_file_is_skipped_with_a_warning(tmp_path, caplog):
    make_dataset(tmp_path, {"a": numbered(30), "b": numbered(30)})
    jpeg_bytes = (tmp_path / "a" / "img_000.jpg").read_bytes()
    (tmp_path / "a" / "empty.jpg").write_bytes(b"")
    (tmp_path / "a" / "truncated.jpg").write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    (tmp_path / "b" / "text.jpg").write_text("this is not a photo\n")
    (tmp_path / "b" / "broken.PNG").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    write_image(tmp_path / "b" / "real.png", image_format="PNG")
    write_image(tmp_path / "b" / "png_named.jpg", image_format="PNG")

    with caplog.at_level(logging.WARNING, logger="trainer.dataset"):
        images = list_images(tmp_path)

    bad = ["a/empty.jpg", "a/truncated.jpg", "b/broken.PNG", "b/text.jpg"]
    assert sorted(entry["path"] for entry in images.skipped) == bad
    assert all(entry["reason"] for entry in images.skipped)
    messages = warnings_in(caplog)
    assert len(messages) == len(bad)
    for path in bad:
        assert sum(path in message for message in messages) == 1
    listed = {path for set_name in SETS for paths in images.files[set_name].values() for path in paths}
    assert listed.isdisjoint(bad)
    assert {"b/real.png", "b/png_named.jpg"} <= listed
    assert len(listed) == 62


def assert_user_error(image_dir, match, **percentages):
    with pytest.raises(UserError, match=match) as raised:
        list_images(image_dir, **percentages)
    message = str(raised.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_errors(tmp_path):
    assert_user_error(tmp_path / "missing", "does not exist")
    write_image(tmp_path / "file.jpg")
    assert_user_error(tmp_path / "file.jpg", "not a folder")

    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(empty, "no class folders")
    write_image(empty / "loose.jpg")
    (empty / ".git").mkdir()
    assert_user_error(empty, "no class folders")

    one_class = make_dataset(tmp_path / "one", {"roses": numbered(3)})
    message = assert_user_error(one_class, "only one class folder")
    assert "'roses'" in message

    clash = make_dataset(tmp_path / "clash", {"Red Roses": ["a.jpg"], "red_roses": ["b.jpg"], "tulips": ["c.jpg"]})
    message = assert_user_error(clash, "both give the label 'red roses'")
    assert "'Red Roses'" in message and "'red_roses'" in message

    no_usable = make_dataset(tmp_path / "no_usable", {"roses": ["a.jpg"]})
    (no_usable / "tulips").mkdir()
    (no_usable / "tulips" / "broken.jpg").write_bytes(b"")
    (no_usable / "tulips" / "readme.txt").write_text("x")
    message = assert_user_error(no_usable, "no usable")
    assert "'tulips'" in message

    (no_usable / "daisy").mkdir()
    assert_user_error(no_usable, "'daisy', 'tulips' in .* have no usable")

    dataset = make_dataset(tmp_path / "fine", {"a": ["a.jpg"], "b": ["b.jpg"]})
    assert_user_error(dataset, "add up to at most 100", validation_percentage=60, testing_percentage=50)
    assert_user_error(dataset, "between 0 and 100", validation_percentage=-1)


def test_warnings_for_small_classes_and_empty_buckets(tmp_path, caplog):
    make_dataset(tmp_path, {"big": numbered(30), "small": TRAINING_ONLY_NAMES})
    with caplog.at_level(logging.WARNING, logger="trainer.dataset"):
        list_images(tmp_path)
    messages = warnings_in(caplog)
    assert len(messages) == 3
    assert "'small' has only 6 usable images" in messages[0]
    assert "'small' has no images in the validation set" in messages[1] and "other classes only" in messages[1]
    assert "'small' has no images in the testing set" in messages[2]


def test_warning_when_a_whole_set_is_empty(tmp_path, caplog):
    make_dataset(tmp_path, {"a": TRAINING_ONLY_NAMES[:3], "b": TRAINING_ONLY_NAMES[3:]})
    with caplog.at_level(logging.WARNING, logger="trainer.dataset"):
        images = list_images(tmp_path, validation_percentage=10, testing_percentage=0)
    assert images.examples("validation") == [] and images.examples("testing") == []
    empty_set = [message for message in warnings_in(caplog) if "set" in message]
    assert empty_set == ["the validation set is empty (no file name hashes into its 10%), so there is no validation accuracy."]


def test_no_warnings_for_a_healthy_dataset(tmp_path, caplog):
    make_dataset(tmp_path, {"a": numbered(30), "b": numbered(30)})
    with caplog.at_level(logging.WARNING, logger="trainer.dataset"):
        list_images(tmp_path)
    assert warnings_in(caplog) == []


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinked_image_dir_lists_the_same_files(tmp_path):
    root = make_dataset(tmp_path / "real", {"a": numbered(5), "b": numbered(5)})
    (tmp_path / "link").symlink_to(root)
    assert list_images(tmp_path / "link").files == list_images(root).files
