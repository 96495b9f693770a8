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
# Counts of one region that differ by more than this (relative) between runs are not repeatable.
MAX_SPREAD = 0.001
# A frame's counts vary more from one frame to the next (~0.1%): its Python-side buffers land at
# other addresses each time, and copying takes other alignment paths. Their median repeats
# within MAX_SPREAD from one run to the next.
MAX_FRAME_SPREAD = 0.005
# Seconds one model may take under emulation with the plugin (~10-20 s each on a quiet machine).
SECONDS_PER_MODEL = 300
GUEST_PROGRAM = Path(__file__).with_name("pi_cost_guest.py")
# File stems that name a conversion mode, not a model: tables show them with their folder's name.
MODE_NAMES = ("float32", "float16", "dynamic", "int8", "int8_full")


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


def spread(runs: list[int]) -> float:
    """How far repeated counts of one region differ: (max - min) / median."""
    return (max(runs) - min(runs)) / max(statistics.median(runs), 1)


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
    root = counter.roots[cpu]
    # The working tree's edge runtime, read through qemu from the host: its path is not in the root.
    source_root = Path(__file__).resolve().parents[1]
    environment = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                   "PYTHONPATH": f"{source_root}:{counter.site_path}", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
                   "OPENBLAS_NUM_THREADS": "1", "LD_LIBRARY_PATH": str(counter.library_path)}
    with tempfile.TemporaryDirectory(prefix="pi-cost-") as scratch:
        counts_path = Path(scratch) / "counts.txt"
        command = [str(counter.qemu), "-cpu", cpu, "-plugin", f"{counter.plugin},out={counts_path}",
                   "-L", str(root), str(root / "usr/bin/python3"), str(GUEST_PROGRAM), str(repeats),
                   *map(str, models)]
        try:
            result = subprocess.run(command, env=environment, capture_output=True, text=True,
                                    timeout=SECONDS_PER_MODEL * (len(models) + 1))
        except subprocess.TimeoutExpired:
            raise UserError(f"counting on {cpu} took longer than {SECONDS_PER_MODEL} s per model") from None
        except OSError as error:
            raise UserError(f"the Pi counter could not run on {cpu}: {error}") from None
        if result.returncode:
            last_line = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"the emulated {cpu} program failed: {last_line}")
        try:
            return _read_costs(cpu, models, result.stdout, counts_path)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
            # A counter half rebuilt or a plugin of another version: one line, not a traceback.
            raise UserError(f"the Pi counter's output could not be read on {cpu}: {type(error).__name__}: {error}; "
                            f"rebuild it ({HOW_TO_BUILD})") from None


def _read_costs(cpu: str, models: list[Path], stdout: str, counts_path: Path) -> list[ModelCost]:
    """The guest's region table (its last stdout line, JSON) joined with the plugin's counts file."""
    regions = json.loads(stdout.strip().splitlines()[-1])
    counted: dict[tuple[str, str], list[int]] = {}
    for line in counts_path.read_text().splitlines():
        label, instructions = line.split()
        counted.setdefault(tuple(regions[label]), []).append(int(instructions))
    markers = int(statistics.median(counted[("", "empty")]))
    costs = []
    for model in models:
        runs = {what: [instructions - markers for instructions in counted[(str(model), what)]] for what in ("invoke", "frame")}
        costs.append(ModelCost(model, cpu, runs["invoke"], runs["frame"]))
    return costs


def table(costs: list[ModelCost]) -> str:
    """A Markdown table: millions of instructions per invoke on each CPU, the A76 frame, frame / invoke."""
    by_model: dict[Path, dict[str, ModelCost]] = {}
    for cost in costs:
        by_model.setdefault(cost.model, {})[cost.cpu] = cost
    header = ["model", *(f"{cpu} ({PI_NAMES[cpu]}) invoke" for cpu in CPUS), "cortex-a76 frame", "frame / invoke"]
    rows = [header, ["---"] * len(header)]
    for model, per_cpu in by_model.items():
        a76 = per_cpu.get("cortex-a76")
        rows.append([_display_name(model), *(f"{per_cpu[cpu].invoke / 1e6:.1f} M" if cpu in per_cpu else "n/a"
                                             for cpu in CPUS),
                     f"{a76.frame / 1e6:.1f} M" if a76 else "n/a", f"{a76.frame / a76.invoke:.2f}x" if a76 else "n/a"])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _display_name(model: Path) -> str:
    """The file's stem, with its folder's name when the stem alone says little (demo_output/interop/int8)."""
    return model.stem if model.stem not in ("model", *MODE_NAMES) else f"{model.parent.name}/{model.stem}"


def problems(costs: list[ModelCost], models: list[Path], cpus: tuple[str, ...] = CPUS) -> list[str]:
    """What makes counts untrustworthy, one sentence each: a count missing, zero or unrepeatable,
    a frame not above its invoke, or a model named int8 not cheaper than float32 beside it on the A76.
    """
    found = {(cost.model, cost.cpu): cost for cost in costs}
    wrong = [f"no count for {model} on {cpu}" for model in models for cpu in cpus if (model, cpu) not in found]
    for cost in costs:
        if cost.invoke <= 0 or cost.frame <= cost.invoke:
            wrong.append(f"{cost.model} on {cost.cpu}: invoke {cost.invoke}, frame {cost.frame} instructions")
        for what, runs, most in (("invoke", cost.invoke_runs, MAX_SPREAD), ("frame", cost.frame_runs, MAX_FRAME_SPREAD)):
            if spread(runs) > most:
                wrong.append(f"{cost.model} on {cost.cpu}: {what} counts differ by {spread(runs):.2%} between runs")
    a76 = {cost.model: cost.invoke for cost in costs if cost.cpu == "cortex-a76"}
    float32s = [model for model in a76 if model.stem == "float32"]
    for model, instructions in a76.items():
        # The float32 model beside it, else the only one counted (the demo keeps full int8 apart).
        beside = [other for other in float32s if other.parent == model.parent]
        float32 = (beside or float32s)[0] if len(beside or float32s) == 1 else None
        if model.stem.startswith("int8") and float32 and instructions >= a76[float32]:
            wrong.append(f"{model} costs {instructions / 1e6:.1f} M instructions on cortex-a76, "
                         f"not below {float32}'s {a76[float32] / 1e6:.1f} M")
    return wrong
