"""--crop and --motion/--interval on generated images and clips, through the CLI as a user types it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import COLOR_BGR
from PIL import Image
from test_edge import count_frames, invoke, json_lines

from edge.health import Health
from edge.motion import BACKGROUND_RATE, PIXEL_DELTA

CLIP_SIZE = (128, 96)  # (width, height)
CLIP_FPS = 10.0
# The right half of the clip (the crop) is still but for two changes of colour; the left half has
# a square moving on every frame, which the crop must keep out of the motion check.
CHANGES = {0: "red", 100: "green", 200: "blue"}  # first frame of each colour
CLIP_FRAMES = 300
INTERVAL_S = 4.0
RIGHT_HALF = "0.5,0,0.5,1"
# Frames after a change that still count as moving while the background takes the new scene in:
# a full-scale step decays below PIXEL_DELTA after this many frames.
SETTLING_FRAMES = int(np.ceil(np.log(PIXEL_DELTA / 255) / np.log(1 - BACKGROUND_RATE))) + 1


def color_at(index: int) -> str:
    return CHANGES[max(start for start in CHANGES if start <= index)]


def write_clip(path, frames: int = CLIP_FRAMES):
    """The clip described above, with a camera's pixel noise, written by OpenCV (MJPG)."""
    width, height = CLIP_SIZE
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), CLIP_FPS, CLIP_SIZE)
    assert writer.isOpened()
    for index in range(frames):
        frame = np.full((height, width, 3), 128, np.uint8)
        frame[:, width // 2:] = COLOR_BGR[color_at(index)]
        x = (index * 3) % (width // 2 - 16)
        frame[40:56, x:x + 16] = (255, 255, 255)
        noise = rng.normal(0, 3, frame.shape)
        writer.write(np.clip(frame + noise, 0, 255).astype(np.uint8))
    writer.release()
    return path


def test_motion_classifies_every_change_and_still_stretches_only_at_the_interval(color_models, tmp_path):
    clip, saved = write_clip(tmp_path / "clip.avi"), tmp_path / "saved.avi"
    result = invoke("--model", color_models["float"], "--camera", clip, "--crop", RIGHT_HALF, "--motion",
                    "--interval", INTERVAL_S, "--json", "--save", saved)
    assert result.exit_code == 0, result.output
    lines = json_lines(result.stdout)
    frames = [line["frame"] for line in lines]
    assert all(line["label"] == color_at(line["frame"]) for line in lines)
    assert all(line["region"] == [64, 0, 64, 96] for line in lines)
    # Every change is classified at the frame it happens, as motion.
    by_frame = {line["frame"]: line for line in lines}
    assert by_frame[0]["trigger"] == "first"
    for change in (100, 200):
        assert by_frame[change]["trigger"] == "motion", by_frame.get(change)
    # Motion only while the region changes and settles; the square moving beside the crop is not motion.
    for line in lines:
        if line["trigger"] == "motion":
            assert any(0 <= line["frame"] - change < SETTLING_FRAMES for change in (100, 200)), line
    # A still stretch is classified only at the interval: 40 frames of video time after the last.
    interval_frames = round(INTERVAL_S * CLIP_FPS)
    for previous, line in zip(lines, lines[1:]):
        if line["trigger"] == "interval":
            assert line["frame"] - previous["frame"] == interval_frames, (previous, line)
        else:
            assert line["frame"] - previous["frame"] < interval_frames
    assert len(frames) < CLIP_FRAMES // 6
    # The summary counts what was skipped; --save got every frame, skipped ones with the last result.
    summary = result.stderr.splitlines()[-1]
    assert summary.startswith(f"{CLIP_FRAMES} frames: ") and f", {CLIP_FRAMES - len(frames)} skipped" in summary
    assert " | motion " in summary
    assert count_frames(saved) == CLIP_FRAMES


def test_max_frames_and_interval_alone_count_classified_frames(color_models, tmp_path):
    """Without --motion, --interval alone classifies one frame every so often; --max_frames counts those."""
    clip = write_clip(tmp_path / "clip.avi", frames=120)
    result = invoke("--model", color_models["float"], "--camera", clip, "--interval", INTERVAL_S, "--max_frames", 3,
                    "--json")
    assert result.exit_code == 0, result.output
    assert [(line["frame"], line["trigger"]) for line in json_lines(result.stdout)] == [
        (0, "first"), (40, "interval"), (80, "interval")]
    assert result.stderr.splitlines()[-1].startswith("81 frames: ")


def halves(path, size=(64, 48), left="red", right="blue"):
    """An image whose left half is one colour and right half another."""
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:, : size[0] // 2] = tuple(reversed(COLOR_BGR[left]))
    image[:, size[0] // 2:] = tuple(reversed(COLOR_BGR[right]))
    Image.fromarray(image).save(path)
    return path


def test_crop_of_files_in_pixels_and_fractions(color_models, tmp_path):
    photo, small = halves(tmp_path / "photo.png"), halves(tmp_path / "small.png", size=(20, 10))
    for crop, label, region in (("0,0,32,48", "red", [0, 0, 32, 48]), ("0.5,0,0.5,1", "blue", [32, 0, 32, 48])):
        result = invoke("--model", color_models["float"], "--crop", crop, "--json", photo)
        assert result.exit_code == 0, result.output
        [line] = json_lines(result.stdout)
        assert (line["label"], line["region"]) == (label, region)
    # Files may differ in size: one the region does not fit is a warning, as an unreadable file is.
    result = invoke("--model", color_models["float"], "--crop", "0,0,32,48", photo, small)
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "small.png: --crop 0,0,32,48 does not fit in the 20x10 frame" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("1 image classified, 1 unreadable")


def test_crop_of_a_stream_and_of_collected_frames(color_models, tmp_path):
    clip = tmp_path / "halves.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), CLIP_FPS, (64, 48))
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :32], frame[:, 32:] = COLOR_BGR["red"], COLOR_BGR["green"]
    for _ in range(5):
        writer.write(frame)
    writer.release()
    result = invoke("--model", color_models["float"], "--camera", clip, "--crop", "32,0,32,48", "--json")
    assert result.exit_code == 0, result.output
    assert [line["label"] for line in json_lines(result.stdout)] == ["green"] * 5

    result = invoke("--collect", tmp_path / "data", "--label", "door", "--camera", clip, "--every", 0,
                    "--crop", "0,0,0.5,1")
    assert result.exit_code == 0, result.output
    saved = sorted((tmp_path / "data" / "door").glob("*.jpg"))
    assert len(saved) == 5
    for path in saved:  # what the model will see: the region, at the camera's resolution
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (48, 32, 3)
        red, green, blue = np.median(pixels.reshape(-1, 3), axis=0)
        assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize(("args", "expected"), [
    (["--crop", "1,2,3"], "--crop takes X,Y,W,H: four numbers"),
    (["--crop", "a,b,c,d"], "--crop takes X,Y,W,H: four numbers"),
    (["--crop", "-1,0,10,10"], "--crop -1,0,10,10: X and Y must be 0 or more"),
    (["--crop", "0,0,0,10"], "--crop 0,0,0,10: X and Y must be 0 or more, W and H more than 0"),
    (["--crop", "0.5,0,0.6,1"], "--crop 0.5,0,0.6,1: as fractions of the frame, X+W and Y+H must be at most 1"),
    (["--crop", "10.5,0,10,10"], "--crop 10.5,0,10,10: pixels are whole numbers"),
    (["--crop", "0,0,100,10"], "--crop 0,0,100,10 does not fit in the 64x48 frame: it reaches x=100, y=10"),
    (["--crop", "0,40,10,10", "--collect", "data", "--label", "door"], "--crop 0,40,10,10 does not fit in the 64x48"),
    (["--motion", "--motion_threshold", "0"], "--motion_threshold is a fraction of the region's pixels"),
    (["--interval", "0"], "--interval must be more than 0 seconds"),
    (["--motion", "--collect", "data", "--label", "door"], "--save, --display, --save_uncertain, --motion, --interval and --mqtt"),
])
def test_bad_crop_and_motion_options_are_one_error_line(args, expected, color_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clip = tmp_path / "small.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), CLIP_FPS, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    result = invoke("--model", color_models["float"], "--camera", clip, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {expected}") and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


def test_motion_needs_a_stream(color_models, tmp_path):
    result = invoke("--model", color_models["float"], "--motion", halves(tmp_path / "photo.png"))
    assert result.exit_code == 2 and result.stderr.startswith("error: --motion and --interval choose which --camera")


def test_health_reads_a_pis_temperature_and_throttling_from_its_files(tmp_path):
    """The files as a Raspberry Pi's kernel writes them: millidegrees, and the firmware's hex bit field."""
    (tmp_path / "temp").write_text("61234\n")
    (tmp_path / "get_throttled").write_text("50005\n")  # under-voltage and throttled, now and since boot
    health = Health(tmp_path / "temp", tmp_path / "get_throttled").snapshot()
    assert health["cpu_temperature_c"] == 61.2
    assert health["throttled"] == {"now": ["under-voltage", "throttled"], "since_boot": ["under-voltage", "throttled"]}
    (tmp_path / "get_throttled").write_text("0x20000\n")  # frequency capped once, not now
    assert Health(tmp_path / "temp", tmp_path / "get_throttled").snapshot()["throttled"] == {
        "now": [], "since_boot": ["frequency capped"]}
    elsewhere = Health(tmp_path / "no_temp", tmp_path / "no_throttled").snapshot()  # not a Pi
    assert elsewhere["cpu_temperature_c"] is None and elsewhere["throttled"] is None and elsewhere["mqtt"] is None
