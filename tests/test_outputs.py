"""Outputs anyone can read (the umask's mode for every output and cache entry; stale temporaries
removed) and commands that print only their own lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer.bottlenecks import BottleneckCache
from trainer.outputs import RUN_STARTED, atomic_output, remove_stale_partials, write_bytes_atomic


def mode(path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_and_cache_entries_get_the_umask_mode(tmp_path, mask, expected):
    previous = os.umask(mask)
    try:
        write_bytes_atomic(tmp_path / "run.json", b"{}")
        with atomic_output(tmp_path / "model.keras") as temporary:
            temporary.write_bytes(b"model")  # as Keras does: it opens the given path again
        cache = BottleneckCache(tmp_path / "bottlenecks", 4)
        cache.write("key", np.arange(4, dtype=np.float32))
    finally:
        os.umask(previous)
    assert [mode(tmp_path / "run.json"), mode(tmp_path / "model.keras"), mode(cache.path("key"))] == [expected] * 3
    np.testing.assert_array_equal(cache.read("key"), np.arange(4))
    assert not list(tmp_path.glob("**/.*partial*"))


def test_everything_train_writes_gets_the_umask_mode(trained_dir):
    mask = os.umask(0)  # os.umask reads only by writing
    os.umask(mask)
    files = [path for path in trained_dir.rglob("*") if path.is_file()]
    assert {"model.keras", "labels.txt", "run.json"} <= {path.name for path in files}
    assert {str(path.relative_to(trained_dir)): mode(path) for path in files} == \
        {str(path.relative_to(trained_dir)): 0o666 & ~mask for path in files}


def test_stale_temporaries_of_a_killed_run_are_removed_never_a_live_runs(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        before_this_run = RUN_STARTED - 60
        stale = [tmp_path / f".model.{dead_pid}.0a1b2c3d.partial.keras", tmp_path / f".labels.{dead_pid}.99aabbcc.partial.txt"]
        kept = [tmp_path / f".model.{live.pid}.0a1b2c3d.partial.keras",  # another run, still writing
                tmp_path / ".notes.partial", tmp_path / f"model.{dead_pid}.0a1b2c3d.partial.keras"]  # not ours
        fresh = tmp_path / f".run.{dead_pid}.0a1b2c3d.partial.json"  # written after this run started
        for path in [*stale, *kept, fresh]:
            path.write_bytes(b"half")
        for path in [*stale, *kept]:
            os.utime(path, (before_this_run, before_this_run))

        write_bytes_atomic(tmp_path / "run.json", b"{}")  # the sweep comes with the first write into a folder

        assert [path.exists() for path in stale] == [False, False]
        assert all(path.exists() for path in [*kept, fresh])
        assert remove_stale_partials(tmp_path) == []
    finally:
        live.kill()
        live.wait()


RETRAIN_EDGE = str(Path(sys.executable).parent / "retrain-edge")


def test_retrain_edge_prints_no_tensorflow_start_up_lines(trained_dir, tmp_path):
    """The installed command, as a user runs it, with TensorFlow's own log threshold at its loudest.

    TF_ENABLE_ONEDNN_OPTS=1 makes TensorFlow print its oneDNN lines on any x86 CPU, as it does
    unasked on CPUs with AVX-512 VNNI or AMX.
    """
    command = [RETRAIN_EDGE, "evaluate", "--output_dir", str(trained_dir), "--report_dir", str(tmp_path)]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "1"}
    quiet = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert quiet.returncode == 0 and "accuracy" in quiet.stdout, quiet.stderr
    noise = re.compile(r"absl|oneDNN|cpu_feature_guard|^[IWEF]\d{4} ", re.MULTILINE)
    assert not noise.search(quiet.stderr), quiet.stderr
    verbose = subprocess.run([*command, "--verbose"], capture_output=True, text=True, env=environment, timeout=600)
    assert verbose.returncode == 0 and noise.search(verbose.stderr), verbose.stderr  # what the quiet run hides


def test_a_tensorflow_warning_at_start_up_still_reaches_the_user(tmp_path):
    """TensorFlow warns from C++, straight to fd 2 as it loads, of a TF_ENABLE_ONEDNN_OPTS it cannot read:
    that line is the user's to see, while the start-up lines around it are not."""
    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "maybe"}
    completed = subprocess.run([RETRAIN_EDGE, "evaluate", "--output_dir", str(tmp_path / "absent")],
                               capture_output=True, text=True, env=environment, timeout=600)
    lines = completed.stderr.splitlines()
    assert completed.returncode == 2 and lines[-1].startswith("error: no run.json in "), completed.stderr
    assert lines[:-1] and all(re.match(r"W\d{4} .* port\.cc:\d+\] TF_ENABLE_ONEDNN_OPTS is not set to either", line)
                              for line in lines[:-1]), completed.stderr
