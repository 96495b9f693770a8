"""Frames kept on the device: bursts named so the split keeps them together, rate, cap, sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edge import UserError
from edge.collect import (BURST_ID, UNCERTAIN_BURST_GAP_S, UNCERTAIN_SIDECAR, BurstWriter, Collector,
                          CollectOptions, UncertainSaver, collect, folder_for_label)
from trainer.dataset import label_for_folder, set_for_file


def frame(value: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A BGR frame: a blue-to-red gradient offset by value, so frames differ."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    pixels[..., 2] = ((np.arange(height)[:, None] * 4 + value) % 256).astype(np.uint8)
    return pixels


def write_video(path, frames: int, fps: float = 10.0):
    """A video of `frames` gradient frames, each a little different, written by OpenCV (MJPG)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for index in range(frames):
        writer.write(frame(index * 8))
    writer.release()
    return path


def test_collect_from_a_video_keeps_its_pace_and_a_second_run_adds_a_burst(tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=30)  # 3 s at 10 fps
    saved = []
    summary = collect(CollectOptions(str(video), tmp_path / "data", "daisy", every=0.5), saved.append)
    # Video time, not wall time: frames 0, 5, 10, ... of the 30.
    assert summary.saved == 6 and summary.frames == 30 and not summary.interrupted
    assert saved == sorted((tmp_path / "data" / "daisy").iterdir())
    assert {set_for_file(path.name) for path in saved} == {set_for_file(f"{summary.burst_id}.jpg")}
    first = {path: path.read_bytes() for path in saved}

    again = collect(CollectOptions(str(video), tmp_path / "data", "daisy", every=0.0, max_frames=4))
    assert again.saved == 4 and again.frames == 4 and again.burst_id != summary.burst_id
    assert len(list((tmp_path / "data" / "daisy").iterdir())) == 10
    assert all(path.read_bytes() == data for path, data in first.items())
    assert f"4 frames saved to {tmp_path / 'data' / 'daisy'} as burst {again.burst_id}" in str(again)


def test_collector_saves_one_burst_at_the_interval_that_stays_in_one_split(tmp_path):
    collector = Collector(tmp_path, "Red Rose", every=1.0)
    saved = [collector.offer(frame(i), timestamp) for i, timestamp in enumerate([0, 0.3, 0.99, 1.0, 1.5, 2.2, 3.2])]
    kept = [path for path in saved if path is not None]
    assert [saved.index(path) for path in kept] == [0, 3, 5, 6]
    assert collector.saved == 4
    files = sorted((tmp_path / "Red Rose").iterdir())
    assert [path.name for path in files] == [path.name for path in kept]
    burst_id = collector.writer.burst_id
    assert BURST_ID.fullmatch(burst_id)
    assert [path.name for path in files] == [f"{burst_id}_nohash_{n:04d}.jpg" for n in range(4)]
    assert len({set_for_file(path.name) for path in files}) == 1
    assert label_for_folder("Red Rose") == "red rose"
    with Image.open(files[1]) as image:
        decoded = np.asarray(image.convert("RGB"))
    # Written as RGB from the BGR frame: red (BGR channel 2) must come back in RGB channel 0.
    assert np.abs(decoded[..., 0].astype(int) - frame(3)[..., 2]).mean() < 4
    assert not list(tmp_path.rglob("*.partial"))


def test_a_second_collector_adds_a_new_burst_without_touching_the_first(tmp_path):
    first = Collector(tmp_path, "cat", every=0)
    for i in range(3):
        first.offer(frame(i), i)
    before = {path: path.read_bytes() for path in (tmp_path / "cat").iterdir()}
    second = Collector(tmp_path, "cat", every=0)
    for i in range(3):
        second.offer(frame(100 + i), i)
    assert second.writer.burst_id != first.writer.burst_id
    after = sorted((tmp_path / "cat").iterdir())
    assert len(after) == 6
    assert all(path.read_bytes() == data for path, data in before.items())


def test_a_new_burst_never_reuses_an_id_found_on_disk(tmp_path, monkeypatch):
    writer = BurstWriter(tmp_path)
    writer.write(frame(0), "cat")
    taken = writer.burst_id
    draws = iter([taken.rsplit("-", 1)[1], "beef"])
    monkeypatch.setattr("edge.collect.time.strftime", lambda _: taken.rsplit("-", 1)[0])
    monkeypatch.setattr("edge.collect.secrets.token_hex", lambda _: next(draws))
    writer.new_burst()
    assert writer.burst_id == f"{taken.rsplit('-', 1)[0]}-beef"


@pytest.mark.parametrize("label, folder", [("red rose", "red rose"), ("crane/bird", "crane_bird"),
                                           ('a:b*c?"d', "a_b_c_d"), (" .hidden. ", "hidden")])
def test_folder_for_label_is_a_safe_name(label, folder):
    assert folder_for_label(label) == folder


def test_a_label_with_no_usable_name_is_refused(tmp_path):
    with pytest.raises(UserError, match="no usable folder name"):
        Collector(tmp_path, "..", every=1)
    assert not list(tmp_path.iterdir())


def uncertain_top(best: float, second: float) -> list[tuple[str, float]]:
    return [("daisy", best), ("tulips", second)]


def test_save_uncertain_keeps_low_scores_at_the_rate_and_writes_the_sidecar(tmp_path):
    saver = UncertainSaver(tmp_path, threshold=0.6, every=2.0, max_files=10)
    offers = [(0.0, 0.9), (0.5, 0.4), (1.0, 0.3), (2.6, 0.5), (3.0, 0.95), (5.0, 0.59)]
    saved = [saver.offer(frame(i), timestamp, uncertain_top(best, (1 - best) / 2), {"frame": i})
             for i, (timestamp, best) in enumerate(offers)]
    assert [i for i, path in enumerate(saved) if path is not None] == [1, 3, 5]
    lines = [json.loads(line) for line in (tmp_path / UNCERTAIN_SIDECAR).read_text().splitlines()]
    assert [line["frame"] for line in lines] == [1, 3, 5]
    assert [line["file"] for line in lines] == [saved[i].as_posix() for i in (1, 3, 5)]
    assert all(line["file"].startswith("daisy/") and (tmp_path / line["file"]).is_file() for line in lines)
    assert "threshold 0.6" in lines[0]["reason"]
    # Two seconds apart: one burst, so one split.
    assert len({path.name.split("_nohash_")[0] for path in (tmp_path / "daisy").iterdir()}) == 1


def test_save_uncertain_margin_catches_a_close_second(tmp_path):
    saver = UncertainSaver(tmp_path, threshold=0.0, margin=0.2, every=0)
    assert saver.offer(frame(0), 0, uncertain_top(0.7, 0.3), {}) is None
    assert saver.offer(frame(1), 1, uncertain_top(0.55, 0.45), {}) is not None
    assert "margin 0.100 < 0.2" in json.loads((tmp_path / UNCERTAIN_SIDECAR).read_text())["reason"]


def test_save_uncertain_stops_at_the_cap_counting_images_already_there(tmp_path, caplog):
    (tmp_path / "tulips").mkdir()
    for n in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "tulips" / f"old_{n}.jpg")
    saver = UncertainSaver(tmp_path, threshold=0.5, every=0, max_files=5)
    saved = [saver.offer(frame(i), i, uncertain_top(0.3, 0.2), {}) for i in range(6)]
    assert sum(path is not None for path in saved) == 2
    assert len(list(tmp_path.glob("*/*.jpg"))) == 5
    assert len((tmp_path / UNCERTAIN_SIDECAR).read_text().splitlines()) == 2
    assert sum("--save_max 5" in record.getMessage() for record in caplog.records) == 1


def test_save_uncertain_starts_a_new_burst_after_a_long_gap(tmp_path):
    saver = UncertainSaver(tmp_path, threshold=0.5, every=0)
    first = saver.offer(frame(0), 0, uncertain_top(0.3, 0.2), {})
    near = saver.offer(frame(1), 10, uncertain_top(0.3, 0.2), {})
    later = saver.offer(frame(2), 10 + UNCERTAIN_BURST_GAP_S + 1, uncertain_top(0.3, 0.2), {})
    prefixes = [path.name.split("_nohash_")[0] for path in (first, near, later)]
    assert prefixes[0] == prefixes[1] != prefixes[2]


@pytest.mark.parametrize("arguments, message", [
    ({"threshold": 0.0}, "needs --threshold"), ({"threshold": 0.5, "max_files": 0}, "--save_max"),
    ({"threshold": 0.5, "every": -1}, "--save_every"), ({"threshold": 0.0, "margin": 1.5}, "--margin")])
def test_save_uncertain_refuses_bad_options(tmp_path, arguments, message):
    with pytest.raises(UserError, match=message):
        UncertainSaver(tmp_path, **arguments)
