"""edge-classify as a device service: live sources that reconnect, fresh frames, signals, --emit, --delegate.

The camera is a stand-in MJPEG server on 127.0.0.1 (scripts/soak_edge.py's), read by the real OpenCV.
"""

from __future__ import annotations

import ctypes.util
import json
import logging
import shlex
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import COLOR_BGR, REPO, TEST_TIMEOUT_S, load_script
from test_edge import count_frames, invoke, json_lines, write_video

from edge.classify import ClassifyOptions, run
from edge.model import Model

soak = load_script("soak_edge")
FRAME_SIZE = (64, 48)  # (width, height) of the stand-in camera's frames


def solid_jpeg(color: str) -> bytes:
    return soak.encode_jpeg(np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), COLOR_BGR[color], np.uint8))


@pytest.fixture
def camera():
    camera = soak.StandInCamera([solid_jpeg("red")], fps=50)
    yield camera
    camera.close()


def test_stream_that_drops_and_comes_back_keeps_the_run_alive(camera, color_models, deadline, caplog):
    results = []

    def drop_after_five(result):
        results.append(result)
        if len(results) == 5:
            camera.drop()
            threading.Timer(1.0, camera.restore).start()
            camera.show([solid_jpeg("blue")])  # what it sends once it is back

    with caplog.at_level(logging.WARNING, logger="edge"):
        summary = run(ClassifyOptions(camera=camera.url, model=color_models["float"], max_frames=15), drop_after_five)
    assert not summary.terminated, "the run did not end in time"
    assert len(results) == 15 and summary.outages == 1 and not summary.source_lost
    assert [result.frame for result in results] == list(range(15))
    assert results[0].label == "red" and results[-1].label == "blue"
    messages = [record.getMessage() for record in caplog.records]
    assert sum(f"camera {camera.url} lost" in message for message in messages) == 1, messages
    assert sum(f"camera {camera.url} is back after" in message for message in messages) == 1, messages
    assert "1 outage survived" in str(summary)


def test_cli_exits_1_when_the_camera_is_gone_for_good(color_models, camera, deadline):
    threading.Timer(2.0, camera.drop).start()  # after the run opened it
    result = invoke("--model", color_models["float"], "--camera", camera.url, "--max_reconnects", "1", "--json")
    assert result.exit_code == 1, result.output
    assert "giving up after 1 attempts to reopen it" in result.stderr
    assert result.stderr.strip().endswith("(camera lost)")
    assert all(line["label"] == "red" for line in json_lines(result.stdout))


def test_slow_model_classifies_fresh_frames_and_video_files_are_data(camera, color_models, deadline, monkeypatch, tmp_path):
    infer = Model.infer
    inference_s = 0.1  # 10 frames/s against a 50 frames/s camera

    def slow_infer(model, tensor):
        time.sleep(inference_s)
        return infer(model, tensor)

    monkeypatch.setattr(Model, "infer", slow_infer)
    results = []
    summary = run(ClassifyOptions(camera=camera.url, model=color_models["float"], max_frames=20), results.append)
    ages = [result.frame_age_ms for result in results]
    assert len(results) == 20
    # The frame classified is at most one camera interval old when inference starts: its age is
    # about one inference, not the growing backlog a FIFO buffer would give (20 x 0.1 s by the end).
    assert max(ages[5:]) < 3 * inference_s * 1000, ages
    assert summary.stream.dropped >= 20, summary.stream.dropped
    assert " dropped" in str(summary) and "age " in str(summary)

    video = write_video(tmp_path / "clip.avi", ["green"] * 8)
    results.clear()
    summary = run(ClassifyOptions(camera=str(video), model=color_models["float"]), results.append)
    assert [result.frame for result in results] == list(range(8)) and summary.stream.dropped == 0


@pytest.mark.parametrize("signal_number, exit_code, ending", [(signal.SIGTERM, 0, "(terminated)"),
                                                               (signal.SIGINT, 130, "(interrupted)")])
def test_signal_during_save_leaves_a_complete_video(camera, color_models, tmp_path, signal_number, exit_code, ending):
    saved = tmp_path / "out.avi"
    process = subprocess.Popen(
        [sys.executable, "-c", "from edge.cli import main; main()", "--model", str(color_models["float"]),
         "--camera", camera.url, "--json", "--save", str(saved)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(TEST_TIMEOUT_S, process.kill)  # the reads below wait at most this long
    watchdog.start()
    try:
        lines = [process.stdout.readline() for _ in range(10)]
        assert all(lines), process.stderr.read()
        process.send_signal(signal_number)
        # Read through the same buffered files as readline: communicate() reads the raw descriptors
        # and would lose the lines readline has already buffered.
        stdout, stderr = process.stdout.read(), process.stderr.read()
        process.wait(TEST_TIMEOUT_S)
    finally:
        watchdog.cancel()
        process.kill()
    assert process.returncode == exit_code, stderr
    results = [json.loads(line) for line in lines + stdout.splitlines() if line.strip()]
    assert stderr.strip().splitlines()[-1].endswith(ending), stderr
    assert "Traceback" not in stderr
    assert count_frames(saved) == len(results) and [r["frame"] for r in results] == list(range(len(results)))


def test_emit_changes_on_a_clip_with_one_scene_change(color_models, tmp_path):
    video = write_video(tmp_path / "clip.avi", ["red"] * 12 + ["blue"] * 9)
    result = invoke("--model", color_models["float"], "--camera", video, "--json", "--emit", "changes")
    assert result.exit_code == 0, result.output
    assert [(line["frame"], line["label"]) for line in json_lines(result.stdout)] == [(0, "red"), (12, "blue")]
    assert "21 frames:" in result.stderr
    # Smoothed over 5 frames, the label changes when blue outweighs red: frame 14.
    result = invoke("--model", color_models["float"], "--camera", video, "--emit", "changes", "--smooth", "5")
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [f"{video}#0", f"{video}#14"]


@pytest.mark.parametrize("case", ["missing", "not a delegate", "bad emit", "negative reconnects", "bad serve"])
def test_errors(case, color_models):
    libm = ctypes.util.find_library("m")
    args, expected = {
        "missing": (["--delegate", "/nonexistent/libedgetpu.so.1"], "cannot load the delegate /nonexistent/libedgetpu.so.1"),
        "not a delegate": (["--delegate", libm], f"{libm} is not a TFLite delegate"),
        "bad emit": (["--emit", "sometimes"], "--emit must be one of all, changes"),
        "negative reconnects": (["--max_reconnects", "-1"], "--max_reconnects must be 0 or more"),
        "bad serve": (["--serve", "host:port"], "--serve takes [HOST:]PORT"),
    }[case]
    result = invoke("--model", color_models["float"], "--camera", "0", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {expected}") and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


def read_unit(path) -> dict[str, list[str]]:
    """A systemd unit's settings as {"Section.Key": [values, in order]}."""
    settings, section = {}, ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def test_systemd_unit_runs_the_command_it_names(color_models, tmp_path):
    unit = read_unit(REPO / "scripts" / "edge-classify.service")
    assert unit["Service.Restart"] == ["on-failure"] and unit["Service.KillSignal"] == ["SIGTERM"]
    assert unit["Service.User"][0] not in ("", "root") and "video" in unit["Service.SupplementaryGroups"][0].split()
    environment = dict(assignment.split("=", 1) for line in unit["Service.Environment"] for assignment in shlex.split(line))
    assert set(environment) == {"EDGE_CLASSIFY_MODEL", "EDGE_CLASSIFY_CAMERA", "EDGE_CLASSIFY_OPTIONS"}
    # The unit's command line as systemd expands it (${X} one word, $X split on spaces), with a test
    # model, a video for the camera and a free port, is valid and runs.
    environment.update(EDGE_CLASSIFY_MODEL=str(color_models["float"]),
                       EDGE_CLASSIFY_CAMERA=str(write_video(tmp_path / "clip.avi", ["red"] * 3)))
    command = shlex.split(unit["Service.ExecStart"][0])
    assert command[0].endswith("/edge-classify")
    args = []
    for word in command[1:]:
        if word.startswith("${"):
            args.append(environment[word[2:-1]])
        elif word.startswith("$"):
            args += environment[word[1:]].split()
        else:
            args.append(word)
    assert "--serve" in args
    args[args.index("--serve") + 1] = "127.0.0.1:0"
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["label"] == "red"
    assert "live view at http://127.0.0.1:" in result.stderr
