"""Writing outputs so that a crash or Ctrl-C never leaves a half-written file, and run.json."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from trainer import UserError

RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
LABELS_FILE = "labels.txt"


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it into place, else remove it.

    The temporary name keeps the suffix, since Keras and TFLite writers check it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(descriptor)
    temporary = Path(temporary)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)


def write_labels(path: Path, labels: list[str]) -> None:
    write_bytes_atomic(path, "".join(f"{label}\n" for label in labels).encode())


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
