"""Writing outputs so that a crash or Ctrl-C never leaves a half-written file, and run.json.

Every output is written to a temporary `.partial` name beside it and renamed into place. The
temporary is created with the mode the user's umask gives any new file (0644 under the usual
022), so the renamed output is readable wherever a plain file would be. A run killed mid-write
leaves its temporaries behind; the next run that writes into the folder removes them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from edge.files import PARTIAL_NAME, new_temporary, replacing
from trainer import UserError

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
LABELS_FILE = "labels.txt"
AUDIT_JSON = "audit.json"  # written by `retrain-edge audit` beside audit.html, read by `review --audit`
# When this run started (seconds since the epoch): temporaries older than this are another run's.
RUN_STARTED = time.time()
_swept_folders: set[Path] = set()


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a new, empty temporary path beside `path`; on success rename it into place, else remove it.

    The temporary name keeps the suffix, since Keras and TFLite writers check it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent not in _swept_folders:
            _swept_folders.add(path.parent)
            remove_stale_partials(path.parent)
        temporary = new_temporary(path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    with replacing(path, temporary):
        yield temporary


def remove_stale_partials(folder: Path, started: float | None = None) -> list[Path]:
    """Remove the temporaries a killed run left in `folder`; returns what was removed.

    Only files named as atomic_output names them, last modified before `started` (default:
    RUN_STARTED) and made by a process that no longer exists: never another live run's.
    """
    started = RUN_STARTED if started is None else started
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = PARTIAL_NAME.match(entry.name)
        if match is None or _process_exists(int(match["pid"])):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= started:
                continue
            os.unlink(entry.path)
        except OSError:  # its writer renamed it, or another run removed it first
            continue
        removed.append(Path(entry.path))
    if removed:
        log.info(f"removed {len(removed)} temporary files a stopped run left in {folder}")
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)


def labels_text(labels: list[str]) -> str:
    """labels.txt's content: one label per line, in the model's output order."""
    return "".join(f"{label}\n" for label in labels)


def write_labels(path: Path, labels: list[str]) -> None:
    write_bytes_atomic(path, labels_text(labels).encode())


def load_run(output_dir: Path) -> dict:
    """Read output_dir/run.json, or raise UserError saying to run `train` first."""
    path = Path(output_dir) / RUN_FILE
    if not path.is_file():
        raise UserError(f"no {RUN_FILE} in {output_dir}: run `retrain-edge train --image_dir DIR` first (or pass --output_dir)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({error}): run `retrain-edge train` again") from None


def write_run(output_dir: Path, run: dict) -> None:
    write_bytes_atomic(Path(output_dir) / RUN_FILE, (json.dumps(run, indent=1) + "\n").encode())
