"""`make pi-cost`: aarch64 instructions per inference on a Pi 4 (Cortex-A72) and Pi 5 (Cortex-A76).

Counts, one thread, the demo's model in each conversion mode plus full int8, the hosted models
in ../shared/data/thirdparty, and any --model given; for each, one bare `invoke()` and one
640x480 camera frame through edge-classify's own `classify_frame`. Prints a table (millions of
instructions) and writes the figures as JSON. Run through scripts/pi_cost.sh, which builds the
counter first. --check fails (exit 1) when a count is missing, zero, not repeatable, or when
full int8 is not cheaper than float32 on the A76 (whose dot-product kernels make it so).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer import UserError  # noqa: E402
from trainer.pi_cost import CPUS, PI_NAMES, ModelCost, count  # noqa: E402

DEMO_MODES = ("float32", "float16", "dynamic", "int8")
FULL_INT8 = "int8_full"  # int8 with --float_layers 0
# File stems that name a conversion mode, not a model: tables show them with their folder's name.
MODE_NAMES = (*DEMO_MODES, FULL_INT8)
# Counts of one region that differ by more than this (relative) between runs are not repeatable.
MAX_SPREAD = 0.001
# A frame's counts vary more from one frame to the next (~0.1%): its Python-side buffers land at
# other addresses each time, and copying takes other alignment paths. Their median repeats
# within MAX_SPREAD from one run to the next.
MAX_FRAME_SPREAD = 0.005
THIRDPARTY = REPO.parent / "shared" / "data" / "thirdparty"


def spread(runs: list[int]) -> float:
    """How far repeated counts of one region differ: (max - min) / median."""
    return (max(runs) - min(runs)) / max(statistics.median(runs), 1)


def table(costs: list[ModelCost]) -> str:
    """A Markdown table: millions of instructions per invoke on each CPU, the A76 frame, frame / invoke."""
    by_model: dict[Path, dict[str, ModelCost]] = {}
    for cost in costs:
        by_model.setdefault(cost.model, {})[cost.cpu] = cost
    header = ["model", *(f"{cpu} ({PI_NAMES[cpu]}) invoke" for cpu in CPUS), "cortex-a76 frame", "frame / invoke"]
    rows = [header, ["---"] * len(header)]
    for model, per_cpu in by_model.items():
        a76 = per_cpu.get("cortex-a76")
        rows.append([display_name(model), *(f"{per_cpu[cpu].invoke / 1e6:.1f} M" if cpu in per_cpu else "n/a"
                                             for cpu in CPUS),
                     f"{a76.frame / 1e6:.1f} M" if a76 else "n/a", f"{a76.frame / a76.invoke:.2f}x" if a76 else "n/a"])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def display_name(model: Path) -> str:
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


def demo_models(demo: Path) -> list[Path]:
    """The demo's model converted in each mode (where interop-check also puts them) and full int8.

    Converts what is missing or older than the trained model.
    """
    trained = demo / "model"
    if not (trained / "run.json").is_file():
        raise UserError(f"no {trained}/run.json: run `make demo` first, or pass --no-demo")
    wanted = [(demo / "interop" / f"{mode}.tflite", ["--quantization", mode]) for mode in DEMO_MODES]
    wanted.append((demo / "pi_cost" / f"{FULL_INT8}.tflite", ["--quantization", "int8", "--float_layers", "0"]))
    for path, arguments in wanted:
        if not path.is_file() or path.stat().st_mtime < (trained / "model.keras").stat().st_mtime:
            print(f"pi-cost: converting the demo model: {' '.join(arguments)}", file=sys.stderr, flush=True)
            subprocess.run([str(Path(sys.executable).parent / "retrain-edge"), "convert", "--output_dir", str(trained),
                            *arguments, "--output_tflite", str(path)], check=True, stdout=subprocess.DEVNULL)
    return [path for path, _ in wanted]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", default=[], help="also count this .tflite (repeatable)")
    parser.add_argument("--demo", type=Path, default=REPO / "demo_output", help="make demo's folder (default demo_output)")
    parser.add_argument("--no_demo", "--no-demo", action="store_true", help="skip the demo's models")
    parser.add_argument("--thirdparty", type=Path, default=THIRDPARTY, help="folder of hosted .tflite models")
    parser.add_argument("--no_thirdparty", "--no-thirdparty", action="store_true", help="skip the hosted models")
    parser.add_argument("--cpu", action="append", choices=CPUS, help="count on this CPU only (repeatable; default both)")
    parser.add_argument("--json", type=Path, default=None, help="write the counts here (default DEMO/pi_cost/pi_cost.json)")
    parser.add_argument("--check", action="store_true", help="exit 1 when counts are missing, zero, unrepeatable or implausible")
    arguments = parser.parse_args()
    started = time.perf_counter()
    try:
        models = [] if arguments.no_demo else demo_models(arguments.demo)
        if not arguments.no_thirdparty and arguments.thirdparty.is_dir():
            models += sorted(arguments.thirdparty.glob("*.tflite"))
        models += arguments.model
        if not models:
            raise UserError("nothing to count: give --model, or drop --no-demo / --no-thirdparty")
        cpus = tuple(arguments.cpu or CPUS)
        costs = count(models, cpus)
    except (UserError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(costs))
    json_path = arguments.json or arguments.demo / "pi_cost" / "pi_cost.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"unit": "aarch64 instructions, one thread", "costs": [c.to_json() for c in costs]},
                                    indent=1) + "\n")
    print(f"wrote {json_path} in {time.perf_counter() - started:.0f} s")
    wrong = problems(costs, [model.resolve() for model in models], cpus)
    for problem in wrong:
        print(f"pi-cost check: {problem}", file=sys.stderr)
    return 1 if arguments.check and wrong else 0


if __name__ == "__main__":
    sys.exit(main())
