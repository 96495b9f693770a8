"""Frames kept on the device: bursts named so the split keeps them together, rate, cap, sidecar."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from conftest import COLOR_BGR
from test_edge import invoke, json_lines

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
    assert {set_for_file(path.name) for path in saved} == {set_for_file(summary.burst_id)}
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
    assert not list(tmp_path.rglob("*.partial*"))
    # The umask's mode, as for any new file (0644 under 022), not a temporary file's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert all(path.stat().st_mode & 0o777 == 0o666 & ~umask for path in files)


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


# --- through the CLI, as a user types it ---------------------------------------------------------

def test_cli_collect_from_a_video_then_a_second_run_adds_without_overwriting(tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=30)  # 3 s at 10 fps
    result = invoke("--camera", video, "--collect", tmp_path / "data", "--label", "Red Rose", "--every", "0.5")
    assert result.exit_code == 0, result.output
    first = sorted((tmp_path / "data" / "Red Rose").iterdir())
    assert result.stdout.splitlines() == [f"saved {path}" for path in first] and len(first) == 6
    assert len({path.name.split("_nohash_")[0] for path in first}) == 1
    assert len({set_for_file(path.name) for path in first}) == 1
    assert "6 frames saved to" in result.stderr
    contents = {path: path.read_bytes() for path in first}

    result = invoke("--camera", video, "--collect", tmp_path / "data",
                    "--label", "Red Rose", "--every", "0", "--max-frames", "4")
    assert result.exit_code == 0, result.output
    after = sorted((tmp_path / "data" / "Red Rose").iterdir())
    assert len(after) == 10 and all(path.read_bytes() == data for path, data in contents.items())
    second = [path for path in after if path not in contents]
    assert len({path.name.split("_nohash_")[0] for path in second}) == 1
    assert second[0].name.split("_nohash_")[0] != first[0].name.split("_nohash_")[0]


@pytest.mark.parametrize("arguments, message", [
    (["--collect", "data"], "--collect needs --label"),
    (["--collect", "data", "--label", "cat"], "--collect needs --camera"),
    (["--collect", "data", "--label", "cat", "--camera", "clip.avi", "--save_uncertain", "u"], "--save, --display, --save_uncertain, --motion, --interval and --mqtt classify"),
    (["--collect", "data", "--label", "cat", "--camera", "clip.avi", "--mqtt", "mqtt://127.0.0.1"],
     "--save, --display, --save_uncertain, --motion, --interval and --mqtt classify"),
    (["--label", "cat", "--camera", "clip.avi"], "--label names the class for --collect"),
    (["--collect", "data", "--label", "..", "--camera", "clip.avi"], "the label '..' gives no usable folder name"),
])
def test_cli_collect_mistakes_are_one_line_errors(tmp_path, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "clip.avi", frames=3)
    result = invoke(*arguments)
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.output
    assert not (tmp_path / "data").exists()


def test_cli_save_uncertain_keeps_the_rate_and_the_cap_and_writes_the_sidecar(color_models, tmp_path):
    import cv2

    # 40 frames at 10 fps: red, then a purple the colour model splits between red and blue.
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for index in range(40):
        writer.write(np.full((48, 64, 3), COLOR_BGR["red"] if index < 10 else (200, 0, 200), np.uint8))
    writer.release()
    uncertain = tmp_path / "uncertain"
    result = invoke("--model", color_models["float"], "--camera", video, "--json", "--threshold", "0.9",
                    "--save_uncertain", uncertain, "--save_every", "1", "--save_max", "2")
    assert result.exit_code == 0, result.output
    lines = json_lines(result.stdout)
    unsure = [line["frame"] for line in lines if line["top_k"][0]["score"] < 0.9]
    assert unsure and unsure[0] >= 10 and all(line["top_k"][0]["score"] >= 0.9 for line in lines[:10])
    saved = [json.loads(line) for line in (uncertain / UNCERTAIN_SIDECAR).read_text().splitlines()]
    # One per second of video (10 frames) from the first unsure frame, and only 2 of them (--save_max).
    assert [record["frame"] for record in saved] == [unsure[0], unsure[0] + 10]
    assert all((uncertain / record["file"]).is_file() and record["file"].startswith(record["top_k"][0]["label"] + "/")
               for record in saved)
    assert len(list(uncertain.glob("*/*.jpg"))) == 2
    assert "--save_max 2" in result.stderr

    result = invoke("--model", color_models["float"], "--camera", video, "--threshold", "0.9",
                    "--save_uncertain", uncertain, "--save_max", "2")
    assert result.exit_code == 0 and len(list(uncertain.glob("*/*.jpg"))) == 2  # full: nothing more


def test_cli_save_uncertain_with_crop_saves_only_the_region_the_model_saw(color_models, tmp_path):
    import cv2

    # Left half red (sure), right half the purple the model is unsure of; --crop takes the right half.
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    picture = np.full((48, 64, 3), COLOR_BGR["red"], np.uint8)
    picture[:, 32:] = (200, 0, 200)
    for _ in range(5):
        writer.write(picture)
    writer.release()
    uncertain = tmp_path / "uncertain"
    result = invoke("--model", color_models["float"], "--camera", video, "--threshold", "0.9", "--crop", "32,0,32,48",
                    "--save_uncertain", uncertain, "--save_max", "1")
    assert result.exit_code == 0, result.output
    [saved] = uncertain.glob("*/*.jpg")
    with Image.open(saved) as image:
        assert image.size == (32, 48)
        red, green, blue = np.asarray(image.convert("RGB"), np.float32).mean(axis=(0, 1))
    assert red > 150 and blue > 150 and green < 60, (red, green, blue)  # purple only: no red half


def test_cli_save_uncertain_margin_needs_two_scores(color_models, tmp_path):
    result = invoke("--model", color_models["float"], "--camera", tmp_path / "clip.avi", "--save_uncertain",
                    tmp_path / "u", "--margin", "0.2", "--top_k", "1")
    assert result.exit_code == 2 and "--margin compares the top two scores" in result.stderr


def test_collect_with_serve_shows_the_label_and_the_count(tmp_path):
    import urllib.request

    video = write_video(tmp_path / "clip.avi", frames=6)
    urls, seen = [], []

    def on_saved(path):
        # The view holds the previous frame's state: read it from here, while the run goes on.
        if len(urls) and path.name.endswith("_0002.jpg"):
            with urllib.request.urlopen(f"{urls[0]}latest.json", timeout=10) as response:
                seen.append(json.loads(response.read()))

    summary = collect(CollectOptions(str(video), tmp_path / "data", "daisy", every=0, serve="127.0.0.1:0"),
                      on_saved, urls.append)
    assert summary.saved == 6 and urls[0].startswith("http://127.0.0.1:")
    assert seen[0]["label"] == "collecting daisy: 2 saved" and seen[0]["top_k"] == []
    # The annotated stream draws a result without scores too.
    from edge.results import Result, annotate

    drawn = annotate(frame(0), Result("clip", 0, 0.0, "collecting daisy: 0 saved", [], 0.0, 0.0))
    assert drawn.shape == frame(0).shape and not np.array_equal(drawn, frame(0))
