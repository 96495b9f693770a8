"""`make install-check`: pip's resolver installs each extra on every platform and Python we claim.

For each platform and Python below, pip resolves the project wheel with the extras in a dry run
(`pip install --dry-run --ignore-installed --only-binary=:all:` with the target's wheel tags and
environment markers, see scripts/pip_as.py), the claimed extras together, as a user installs them.
If that fails, each extra is resolved on its own to say which one. Prints a Markdown table and
exits 1 when an extra that docs/platforms.md claims for a platform and Python does not resolve, or
when the train extra brings another TensorFlow package there than the row says.

    python scripts/install_check.py [--jobs 3] [--cache-dir DIR] [--target NAME]... [--python X.Y]...

Nothing is installed. pip fetches each wheel's metadata, from PyPI's metadata files where the
index serves them (PEP 658), else by downloading the wheel; a shared --cache-dir keeps what pip
may cache between the resolutions and between runs.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pip_as import TARGETS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# What is checked on each platform, "base" being the project without an extra (the device runtime);
# an extra pyproject.toml does not (yet) define is left out.
_PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
_DEFINED = {"base", *_PROJECT["optional-dependencies"]}
DESKTOP_EXTRAS = tuple(extra for extra in ("base", "train", "camera", "beam", "mqtt") if extra in _DEFINED)
DEVICE_EXTRAS = tuple(extra for extra in ("base", "camera", "mqtt") if extra in _DEFINED)
TRAINING_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# The TensorFlow package the train extra must bring on each training platform ("" for none).
TENSORFLOW = {"linux-x86_64": "tensorflow-cpu", "windows-x86_64": "tensorflow-cpu",
              "linux-aarch64": "tensorflow", "macos-arm64": "tensorflow"}


@dataclass(frozen=True)
class Row:
    """One platform and Python: the extras resolved there, those docs/platforms.md claims install,
    and the TensorFlow package the train extra must bring there ("" for none)."""

    target: str
    python: str
    checked: tuple[str, ...]
    claimed: tuple[str, ...]
    tensorflow: str = ""


ROWS = (
    *(Row(target, python, DESKTOP_EXTRAS, DESKTOP_EXTRAS, TENSORFLOW[target])
      for target in TENSORFLOW for python in TRAINING_PYTHONS),
    # TensorFlow has no 3.14 wheel: the train extra installs without it and retrain-edge says so.
    *(Row(target, "3.14", DESKTOP_EXTRAS, DESKTOP_EXTRAS) for target in TENSORFLOW),
    # Neither TensorFlow nor LiteRT has a wheel: the install succeeds and both commands say so.
    Row("macos-x86_64", "3.13", ("base", "train"), ("base", "train")),
    # Raspberry Pi OS 32-bit, bookworm and trixie: resolved to say what is there, not claimed.
    *(Row("linux-armv7l", python, DEVICE_EXTRAS, ()) for python in ("3.11", "3.13")),
)


@dataclass
class Resolution:
    ok: bool
    detail: str  # the TensorFlow package taken, or why pip gave up
    seconds: float


def requirement(wheel: Path, extras: tuple[str, ...]) -> str:
    named = [extra for extra in extras if extra != "base"]
    return f"{wheel}[{','.join(named)}]" if named else str(wheel)


def dry_run(row: Row, requirement: str, cache_dir: Path, *options: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """pip install --dry-run as on the row's platform: pip's result and the names it would install."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        # --isolated: this machine's pip configuration (extra indexes, constraints) must not decide.
        completed = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "pip_as.py"), row.target, row.python, "install",
             "--isolated", "--dry-run", "--ignore-installed", "--quiet", "--cache-dir", str(cache_dir),
             "--report", str(report), *options, requirement],
            capture_output=True, text=True)
        names = [re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
                 for item in json.loads(report.read_text())["install"]] if completed.returncode == 0 else []
    return completed, names


def resolve(wheel: Path, row: Row, extras: tuple[str, ...], cache_dir: Path) -> Resolution:
    started = time.monotonic()
    completed, names = dry_run(row, requirement(wheel, extras), cache_dir)
    if completed.returncode != 0:
        return Resolution(False, failure_reason(row, extras, completed.stderr, cache_dir), time.monotonic() - started)
    tensorflow = next((name for name in ("tensorflow-cpu", "tensorflow") if name in names), "")
    return Resolution(True, tensorflow, time.monotonic() - started)


def failure_reason(row: Row, extras: tuple[str, ...], stderr: str, cache_dir: Path) -> str:
    """pip's reason in a few words. pip names only the first requirement without a wheel, so each
    direct requirement is then tried alone (no dependencies) to name all of them."""
    if "No matching distribution found" not in stderr:
        errors = [line for line in stderr.splitlines() if line.startswith("ERROR")] or stderr.strip().splitlines()[-1:]
        return "conflicting requirements" if "ResolutionImpossible" in stderr else errors[0][:80]
    direct = list(_PROJECT["dependencies"]) + [requirement for extra in extras if extra != "base"
                                               for requirement in _PROJECT["optional-dependencies"][extra]]
    missing = [re.match(r"[\w.-]+", requirement).group(0) for requirement in direct
               if dry_run(row, requirement, cache_dir, "--no-deps")[0].returncode != 0]
    return f"no wheel: {', '.join(missing)}"


def check_row(wheel: Path, row: Row, cache_dir: Path) -> dict[str, Resolution]:
    """Each checked extra's resolution: the checked extras together, then one by one if that fails."""
    together = resolve(wheel, row, row.checked, cache_dir)
    if together.ok:
        return {extra: together for extra in row.checked}
    return {extra: resolve(wheel, row, (extra,), cache_dir) for extra in row.checked}


def broken_claims(rows: tuple[Row, ...], results: dict[Row, dict[str, Resolution]]) -> list[str]:
    """Each claim pip's resolution contradicts: an extra that does not resolve, a wrong TensorFlow."""
    broken = []
    for row in rows:
        for extra in row.claimed:
            resolution = results[row][extra]
            if not resolution.ok:
                what = "the base install" if extra == "base" else f"the {extra} extra"
                broken.append(f"{row.target} Python {row.python}: {what} does not resolve ({resolution.detail})")
            elif extra == "train" and resolution.detail != row.tensorflow:
                broken.append(f"{row.target} Python {row.python}: the train extra brings "
                              f"{resolution.detail or 'no TensorFlow'}, not {row.tensorflow or 'none'}")
    return broken


def cell(extra: str, resolution: Resolution | None) -> str:
    if resolution is None:
        return "—"
    if not resolution.ok:
        return f"✗ {resolution.detail}"
    if extra == "train":
        return f"✓ {resolution.detail}" if resolution.detail else "✓ without TensorFlow"
    return "✓"


def table(rows: tuple[Row, ...], results: dict[Row, dict[str, Resolution]]) -> str:
    header = ("platform", "Python", *DESKTOP_EXTRAS, "claimed")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [cell(extra, results[row].get(extra)) for extra in DESKTOP_EXTRAS]
        claimed = ", ".join(row.claimed) if row.claimed else "nothing"
        lines.append("| " + " | ".join((row.target, row.python, *cells, claimed)) + " |")
    return "\n".join(lines)


def build_wheel(directory: Path) -> Path:
    completed = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
                                str(directory), str(REPO)], capture_output=True, text=True)
    if completed.returncode != 0:
        print(f"{completed.stderr}error: could not build the project wheel", file=sys.stderr)
        sys.exit(2)
    return next(directory.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3, help="resolutions at a time (each is mostly network)")
    parser.add_argument("--cache-dir", "--cache_dir", type=Path, default=Path.home() / ".cache" / "retrain-edge" / "pip",
                        help="pip's cache, shared by every resolution")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="only these platforms")
    parser.add_argument("--python", action="append", help="only these Pythons (X.Y)")
    arguments = parser.parse_args(argv)
    rows = tuple(row for row in ROWS if (not arguments.target or row.target in arguments.target)
                 and (not arguments.python or row.python in arguments.python))
    if not rows:
        print("error: no platform and Python to check", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        wheel = build_wheel(Path(scratch))
        with ThreadPoolExecutor(arguments.jobs) as pool:
            futures = {row: pool.submit(check_row, wheel, row, arguments.cache_dir) for row in rows}
            results = {row: future.result() for row, future in futures.items()}
    print(table(rows, results))
    slowest = max(resolution.seconds for result in results.values() for resolution in result.values())
    print(f"\n{len(rows)} platforms and Pythons in {time.monotonic() - started:.0f} s "
          f"({arguments.jobs} at a time; slowest resolution {slowest:.0f} s)")
    broken = broken_claims(rows, results)
    for line in broken:
        print(f"error: against docs/platforms.md, {line}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
