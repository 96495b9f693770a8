"""Pi cost: the aarch64 instructions a Raspberry Pi executes per inference, counted under qemu.

The real LiteRT and XNNPACK kernels run in an arm64 root under qemu-user emulating a
Cortex-A72 (Pi 4) or Cortex-A76 (Pi 5), one thread; a TCG plugin counts the instructions
between markers the counted program sets (trainer/pi_cost_guest.py). The count repeats exactly
from run to run and names the kernels that run, but it is not a time: it ignores memory stalls
and how many instructions a core issues per cycle (docs/pi-cost.md).

`scripts/pi_cost.sh` builds the counter (`make pi-cost`); this module only finds and runs it, so
any command can offer Pi counts when the counter is at hand and say how to get it when not.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trainer import UserError

CPUS = ("cortex-a72", "cortex-a76")  # Raspberry Pi 4, Raspberry Pi 5
PI_NAMES = {"cortex-a72": "Pi 4", "cortex-a76": "Pi 5"}
COUNTER_FILE = "counter.json"  # written by scripts/pi_cost.sh when the counter is built
HOW_TO_BUILD = "make arm64-check, then make pi-cost (x86_64 Debian host, root)"
REPEATS = 5  # counted runs of each region; the median is reported
# Seconds one model may take under emulation with the plugin (~10-20 s each on a quiet machine).
SECONDS_PER_MODEL = 300
GUEST_PROGRAM = Path(__file__).with_name("pi_cost_guest.py")


def default_counter_dir() -> Path:
    """Where scripts/pi_cost.sh builds the counter: beside `make arm64-check`'s roots."""
    arm64 = os.environ.get("ARM64_CHECK_CACHE")
    if arm64:
        return Path(arm64) / "pi-cost"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "retrain-edge" / "arm64" / "pi-cost"


@dataclass
class Counter:
    """A built counter: qemu-user with its libraries, the plugin, and an arm64 root per CPU."""

    qemu: Path
    library_path: Path  # qemu-user's own shared libraries (libcapstone4, liburing2)
    plugin: Path
    site_path: str  # the edge runtime's dependencies, as a path inside each root
    roots: dict[str, Path]  # CPU -> root with that CPU's /proc/cpuinfo


@dataclass
class ModelCost:
    """Instructions per run of one model on one CPU, each counted REPEATS times."""

    model: Path
    cpu: str
    invoke_runs: list[int]  # one interpreter.invoke(), nothing else
    frame_runs: list[int]  # one 640x480 BGR frame through edge.classify.classify_frame: resize, normalise, invoke, top-k

    @property
    def invoke(self) -> int:
        return int(statistics.median(self.invoke_runs))

    @property
    def frame(self) -> int:
        return int(statistics.median(self.frame_runs))

    def to_json(self) -> dict:
        return {"model": str(self.model), "cpu": self.cpu, "invoke": self.invoke, "frame": self.frame,
                "invoke_runs": self.invoke_runs, "frame_runs": self.frame_runs}


def find_counter(counter_dir: Path | None = None) -> Counter | None:
    """The counter scripts/pi_cost.sh built, or None when it is not (or no longer) complete."""
    path = (counter_dir or default_counter_dir()) / COUNTER_FILE
    try:
        fields = json.loads(path.read_text())
        counter = Counter(qemu=Path(fields["qemu"]), library_path=Path(fields["library_path"]),
                          plugin=Path(fields["plugin"]), site_path=fields["site_path"],
                          roots={cpu: Path(root) for cpu, root in fields["roots"].items()})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    parts = [counter.qemu, counter.plugin, *(root / counter.site_path.lstrip("/") for root in counter.roots.values())]
    return counter if all(part.exists() for part in parts) and set(CPUS) <= set(counter.roots) else None


def count(models: list[Path], cpus: tuple[str, ...] = CPUS, counter: Counter | None = None,
          repeats: int = REPEATS) -> list[ModelCost]:
    """Count each model on each CPU (one emulated process per CPU): ModelCost per (cpu, model).

    Raises UserError when the counter is not built or the emulated program fails.
    """
    counter = counter or find_counter()
    if counter is None:
        raise UserError(f"the Pi instruction counter is not built: {HOW_TO_BUILD}")
    unknown = set(cpus) - set(counter.roots)
    if unknown:
        raise UserError(f"no counter root for {', '.join(sorted(unknown))}; known: {', '.join(counter.roots)}")
    models = [Path(model).resolve() for model in models]
    for model in models:
        if not model.is_file():
            raise UserError(f"model file {model} does not exist")
    return [cost for cpu in cpus for cost in _count_on(cpu, models, counter, repeats)]


def _count_on(cpu: str, models: list[Path], counter: Counter, repeats: int) -> list[ModelCost]:
    counted = count_regions(cpu, GUEST_PROGRAM, [str(repeats), *map(str, models)], counter,
                            SECONDS_PER_MODEL * (len(models) + 1))
    try:
        return [ModelCost(model, cpu, counted[(str(model), "invoke")], counted[(str(model), "frame")]) for model in models]
    except KeyError as error:
        raise UserError(f"the Pi counter counted nothing for {error} on {cpu}; rebuild it ({HOW_TO_BUILD})") from None


def count_regions(cpu: str, program: Path, arguments: list[str], counter: Counter,
                  timeout: float) -> dict[tuple[str, str], list[int]]:
    """Run a guest program (one that marks regions as trainer/pi_cost_guest.py does) on `cpu`:
    (model path, what) -> the instructions of each run of that region, the markers' cost taken off.

    Raises UserError when it fails, takes longer than `timeout` seconds, or its output is unreadable.
    """
    root = counter.roots[cpu]
    # The working tree's edge runtime, read through qemu from the host: its path is not in the root.
    source_root = Path(__file__).resolve().parents[1]
    environment = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                   "PYTHONPATH": f"{source_root}:{counter.site_path}", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
                   "OPENBLAS_NUM_THREADS": "1", "LD_LIBRARY_PATH": str(counter.library_path)}
    with tempfile.TemporaryDirectory(prefix="pi-cost-") as scratch:
        counts_path = Path(scratch) / "counts.txt"
        command = [str(counter.qemu), "-cpu", cpu, "-plugin", f"{counter.plugin},out={counts_path}",
                   "-L", str(root), str(root / "usr/bin/python3"), str(program), *arguments]
        try:
            result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"counting on {cpu} took longer than {timeout:.0f} s") from None
        except OSError as error:
            raise UserError(f"the Pi counter could not run on {cpu}: {error}") from None
        if result.returncode:
            last_line = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"the emulated {cpu} program failed: {last_line}")
        try:
            return _read_regions(result.stdout, counts_path)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
            # A counter half rebuilt or a plugin of another version: one line, not a traceback.
            raise UserError(f"the Pi counter's output could not be read on {cpu}: {type(error).__name__}: {error}; "
                            f"rebuild it ({HOW_TO_BUILD})") from None


def _read_regions(stdout: str, counts_path: Path) -> dict[tuple[str, str], list[int]]:
    """The guest's region table (its last stdout line, JSON) joined with the plugin's counts file."""
    regions = json.loads(stdout.strip().splitlines()[-1])
    counted: dict[tuple[str, str], list[int]] = {}
    for line in counts_path.read_text().splitlines():
        label, instructions = line.split()
        counted.setdefault(tuple(regions[label]), []).append(int(instructions))
    markers = int(statistics.median(counted.pop(("", "empty"))))
    return {region: [instructions - markers for instructions in runs] for region, runs in counted.items()}
