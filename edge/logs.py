"""What reaches stderr: our packages' messages, and native libraries' start-up lines only with --verbose.

Both command-line modules (`edge/cli.py`, `trainer/cli.py`) take their set-up from here, so
neither imports the other; that includes their usage errors (a flag's value out of range), told as
one `error:` line like every other error. This module imports nothing of the package.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import typer
import typer.core

# Lines that TensorFlow and LiteRT write from C++ straight to fd 2 while they load, before absl's
# logging is initialised, so no log level hides them: absl's preamble, absl INFO lines (e.g.
# "I0000 00:00:1795995417.247795 22988 port.cc:153] oneDNN custom operations are on. ...") and
# LiteRT's "INFO: ..." lines (e.g. "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.").
# Warnings and errors (W..., E..., F..., "WARNING: ...", "ERROR: ...") are not start-up lines.
# A POSIX extended regular expression, for grep -E.
START_UP_LINES = (r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                  r"|I[0-9]{4} [0-9:.]+ +[0-9]+ [^ ]+:[0-9]+\] .*"
                  r"|INFO: .*)$")
FILTER_DRAIN_TIMEOUT_S = 10.0  # the filter exits as soon as it has passed on the last line


class _StderrHandler(logging.StreamHandler):
    """`warning: ...` lines on sys.stderr as it is when a record arrives (test runners swap it)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _) -> None:
        pass


def setup_logging(verbose: bool = False) -> None:
    """Our packages' warnings (and with verbose, their information) as plain lines on stderr.

    Verbose also lets native libraries' start-up lines through (see `start_up_lines_hidden`).
    """
    root = logging.getLogger()
    root.handlers[:] = [handler for handler in root.handlers if not isinstance(handler, _StderrHandler)]
    root.addHandler(_StderrHandler())
    for name in ("trainer", "edge"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


@contextlib.contextmanager
def start_up_lines_hidden() -> Iterator[None]:
    """Inside the block, fd 2 passes through `grep -v` of START_UP_LINES; every other line goes on at once.

    For the calls that load TensorFlow or create a LiteRT interpreter. Nothing is hidden when our
    packages log information (setup_logging(verbose=True)), or where there is no grep.
    The filter is a process of its own, not a thread: it holds the pipe's read end, so if this
    process dies inside the block (TensorFlow aborts on a CPU it was not built for), what was
    written before still reaches the terminal. It runs in its own session, so a Ctrl-C meant
    for us does not kill it; it ends when the last writer of the pipe is gone. Lines from any
    thread pass through it in the order they were written, and the block ends only when it has
    passed them all on, so they come before whatever the program writes after the block.
    """
    grep = shutil.which("grep")
    if grep is None or logging.getLogger("edge").isEnabledFor(logging.INFO):
        yield
        return
    sys.stderr.flush()
    try:
        stderr = os.dup(2)
    except OSError:  # no fd 2 at all (a daemon): nothing to keep clean
        yield
        return
    read_end, write_end = os.pipe()
    try:
        # -a: a line that is not valid text (an odd file name) is still a line, never "binary file matches"
        line_filter = subprocess.Popen([grep, "-a", "-v", "-E", "--line-buffered", START_UP_LINES],
                                       stdin=read_end, stdout=stderr, stderr=stderr, start_new_session=True,
                                       env={**os.environ, "LC_ALL": "C"})
    finally:
        os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)
        os.close(stderr)
        with contextlib.suppress(subprocess.TimeoutExpired):  # a child started in the block holds the pipe
            line_filter.wait(FILTER_DRAIN_TIMEOUT_S)


# click's UsageError (a flag's value out of its range, an unknown flag, a missing one), from
# whichever click Typer runs on: its own copy since Typer 0.2x, the click package before.
_USAGE_ERROR = typer.BadParameter.__base__


@contextlib.contextmanager
def _usage_errors_as_one_line():
    """A usage error becomes one `error:` line naming the flag and pointing at --help, and exit 2."""
    try:
        yield
    except _USAGE_ERROR as error:
        # Named, not imported: older clicks do not have it (Typer's rich_utils checks it the same way).
        if type(error).__name__ == "NoArgsIsHelpError":
            raise
        command = error.ctx.command_path if getattr(error, "ctx", None) else "the command"
        typer.echo(f"error: {' '.join(error.format_message().split())} (see {command} --help)", err=True)
        raise typer.Exit(2) from None


class _OneLineUsageErrorsMixin:
    def make_context(self, *args, **kwargs):
        with _usage_errors_as_one_line():
            return super().make_context(*args, **kwargs)


class OneLineUsageErrors(_OneLineUsageErrorsMixin, typer.core.TyperCommand):
    """A command whose usage errors are one `error:` line, as every other error, not a framed panel."""


class OneLineUsageErrorsGroup(_OneLineUsageErrorsMixin, typer.core.TyperGroup):
    """OneLineUsageErrors for a command with sub-commands: its own flags and every sub-command's."""

    def invoke(self, context):
        with _usage_errors_as_one_line():
            return super().invoke(context)
