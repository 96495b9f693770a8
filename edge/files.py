"""Files written whole or not at all, with the mode any new file gets: the device's and the trainer's.

A file is written to a temporary `.partial` name beside it and renamed into place, so a crash or
Ctrl-C never leaves a half-written file where a good one was. The temporary's name carries the
writer's process id, so a later run can tell a dead writer's leftovers from a live one's.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

# .<stem>.<pid>.<8 hex>.partial<suffix>, as new_temporary names them.
PARTIAL_NAME = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.partial(\.[^.]*)?$")


def new_temporary(path: Path) -> Path:
    """Create an empty temporary beside `path`, keeping its suffix (Keras and TFLite writers check it).

    O_EXCL with 0o666: the kernel applies the umask as for any new file (mkstemp's 0600 would
    survive the rename and hide the output from other users).
    """
    temporary = path.parent / f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.partial{path.suffix}"
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return temporary


@contextlib.contextmanager
def replacing(path: Path, temporary: Path) -> Iterator[Path]:
    """Yield `temporary`; when the block succeeds rename it to `path`, in any case leave no temporary."""
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
