"""Native libraries' start-up lines out of stderr without --verbose; every other line still through.

The lines are written by C++ straight to fd 2, so each test watches a process's real fd 2 from the
outside. The lines themselves are written here with os.write, as the C++ code does, so that the
tests do not depend on the CPU (TensorFlow prints its oneDNN line only on some); the commands are
run as well, with TF_ENABLE_ONEDNN_OPTS=1, in tests/test_outputs.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

START_UP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795995394.373801   22455 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
REAL = [
    "W0000 00:00:1795995394.373755   22455 port.cc:148] TF_ENABLE_ONEDNN_OPTS is not set to either '0', 'false', "
    "'1', or 'true'. Using the default setting: true",
    "E0000 00:00:1795995394.5   22460 from_another_thread.cc:1] an error from another thread",
    "ERROR: a LiteRT error",
    "warning: one of ours",
]


def run_in_block(verbose: bool, after_block: str) -> subprocess.CompletedProcess:
    """A process writing START_UP and REAL, interleaved, to fd 2 inside start_up_lines_hidden()."""
    code = f"""
import os, sys, threading
from edge.logs import setup_logging, start_up_lines_hidden
setup_logging({verbose})
start_up, real = {START_UP!r}, {REAL!r}
with start_up_lines_hidden():
    os.write(2, (start_up[0] + "\\n" + start_up[1] + "\\n" + real[0] + "\\n").encode())
    thread = threading.Thread(target=os.write, args=(2, (real[1] + "\\n").encode()))
    thread.start()
    thread.join()
    os.write(2, (start_up[2] + "\\n" + real[2] + "\\n").encode())
    print(real[3], file=sys.stderr)
{after_block}
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("verbose", "expected"), [
    (False, [*REAL, "after the block"]),
    (True, [START_UP[0], START_UP[1], REAL[0], REAL[1], START_UP[2], REAL[2], REAL[3], "after the block"]),
])
def test_start_up_lines_are_hidden_and_the_rest_passes_in_order(verbose, expected):
    completed = run_in_block(verbose, 'print("after the block", file=sys.stderr)')
    assert completed.returncode == 0
    assert completed.stderr.splitlines() == expected


def test_what_is_written_before_the_process_dies_in_the_block_still_arrives():
    """As when TensorFlow aborts while it loads on a CPU it was not built for: nothing is left in
    the process to pass the lines on."""
    fatal = "F0000 00:00:1795995394.6   22455 cpu_feature_guard.cc:1] Check failed: the CPU lacks an instruction"
    code = f"""
import os
from edge.logs import start_up_lines_hidden
with start_up_lines_hidden():
    os.write(2, {(START_UP[0] + chr(10) + fatal + chr(10)).encode()!r})
    os.abort()
"""
    dying = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert dying.returncode == -signal.SIGABRT
    assert dying.stderr.splitlines() == [fatal]


@pytest.mark.parametrize("verbose", [False, True])
def test_edge_classify_prints_litert_start_up_lines_only_with_verbose(color_models, tmp_path, verbose):
    image = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(image)
    command = [str(Path(sys.executable).parent / "edge-classify"), "--model", str(color_models["float"]), str(image)]
    completed = subprocess.run([*command, *(["--verbose"] if verbose else [])], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0 and completed.stdout.startswith(f"{image}: red "), completed.stderr
    assert ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in completed.stderr) == verbose, completed.stderr
    assert completed.stderr.splitlines()[-1].startswith("1 image classified")
