"""Compare `edge-classify` on x86 with the same command run on emulated arm64; print a table.

Run by scripts/arm64_check.sh, which builds the arm64 roots and passes their commands. For each
model it runs `edge-classify --json --top_k 5` once per platform on all images, then checks per
image: the same top-1 label, and scores within FLOAT_TOLERANCE for a model with float outputs,
within one output quantization step for a quantized (uint8/int8 output) one. Exits 1 on any
mismatch or failed run.

Why one step and not exact: LiteRT's optimised integer kernels (XNNPACK and the built-in ones)
requantize differently on arm64 and x86, and each differs from LiteRT's portable reference
kernels by a step or two on the same machine; the reference kernels themselves give identical
integers under qemu and on x86 (measured on mobilenet_v2_1.0_224_quant), so a one-step
difference is the kernels', not the emulator's. Many models still match exactly; the table
shows the difference in steps.

usage: arm64_compare.py --x86 CMD --arm NAME CMD [--arm NAME CMD]... [--cpu NAME]
                        --model MODEL [LABELS] [--model ...]... [--skip-ours REASON] --images IMG...
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

FLOAT_TOLERANCE = 1e-4  # max |score difference| for float outputs (scores are probabilities)
QUANTIZED_TOLERANCE_STEPS = 1  # max |score difference| for integer outputs, in output steps
JSON_ROUNDING = 1e-6  # edge-classify --json rounds scores to 6 decimals
TOP_K = 5  # scores compared per image: rank-wise, and label-wise where both lists hold a label
LABEL_WIDTH = 22  # characters of a label shown in the table


@dataclass
class Run:
    """One platform's answers for one model: source -> [(label, score)] best first."""

    top_k: dict[str, list[tuple[str, float]]]
    seconds: float  # wall time of the whole process, start-up included
    latency_ms: float  # median per-image latency reported by edge-classify
    error: str = ""


def run_classifier(command: str, model: Path, labels: Path | None, images: list[Path]) -> Run:
    """Run one edge-classify command on all images; its JSON lines become a Run."""
    arguments = shlex.split(command) + ["--model", str(model), "--json", "--top_k", str(TOP_K)]
    if labels is not None:
        arguments += ["--labels", str(labels)]
    started = time.perf_counter()
    completed = subprocess.run(arguments + [str(image) for image in images], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        last_lines = completed.stderr.strip().splitlines()[-1:]
        return Run({}, seconds, 0.0, error=last_lines[0] if last_lines else f"exit {completed.returncode}")
    results = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    top_k = {Path(result["source"]).name: [(entry["label"], entry["score"]) for entry in result["top_k"]] for result in results}
    latencies = [result["latency_ms"] for result in results if "latency_ms" in result]
    return Run(top_k, seconds, statistics.median(latencies) if latencies else 0.0)


def output_step(model: Path) -> float:
    """The score difference one integer makes in the model's first output; 0.0 for a float output."""
    from ai_edge_litert.interpreter import Interpreter

    output = Interpreter(model_path=str(model)).get_output_details()[0]
    return float(output["quantization"][0]) if output["dtype"].__name__ in ("uint8", "int8", "int16") else 0.0


def score_difference(reference: list[tuple[str, float]], other: list[tuple[str, float]]) -> float:
    """Largest |score difference|, rank by rank and label by label (ties may swap equal labels)."""
    by_rank = [abs(a[1] - b[1]) for a, b in zip(reference, other)]
    other_scores = dict(other)
    by_label = [abs(score - other_scores[label]) for label, score in reference if label in other_scores]
    return max(by_rank + by_label, default=0.0)


def shorten(text: str, width: int = LABEL_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[column]) for row in [header] + rows) for column in range(len(header))]
    for row in [header, ["-" * width for width in widths]] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--x86", required=True, help="the x86 edge-classify command")
    parser.add_argument("--arm", nargs=2, action="append", required=True, metavar=("NAME", "CMD"), help="an emulated arm64 edge-classify command")
    parser.add_argument("--cpu", default="", help="the emulated CPU, for the table's title")
    parser.add_argument("--model", nargs="+", action="append", default=[], metavar="MODEL [LABELS]", help="a .tflite model and, optionally, its labels file")
    parser.add_argument("--skip-ours", default="", help="why no model of this project is compared")
    parser.add_argument("--images", nargs="+", type=Path, required=True)
    args = parser.parse_args(argv)

    platforms = [("x86_64", args.x86)] + [(name, command) for name, command in args.arm]
    rows, timing_rows, failures = [], [], 0
    for model_and_labels in args.model:
        model = Path(model_and_labels[0])
        labels = Path(model_and_labels[1]) if len(model_and_labels) > 1 else None
        step = output_step(model)
        tolerance = QUANTIZED_TOLERANCE_STEPS * step + JSON_ROUNDING if step else FLOAT_TOLERANCE
        runs = {}
        for name, command in platforms:
            print(f"running {model.name} on {name}", file=sys.stderr, flush=True)
            runs[name] = run_classifier(command, model, labels, args.images)
        timing_rows.append([model.stem] + [f"{runs[name].seconds:.1f} s / {runs[name].latency_ms:.1f} ms" for name, _ in platforms])
        reference = runs["x86_64"]
        for image in args.images:
            expected = reference.top_k.get(image.name)
            row = [model.stem, image.stem, f"≤{QUANTIZED_TOLERANCE_STEPS} step" if step else f"≤{tolerance:g}"]
            row.append(f"{shorten(expected[0][0])} {expected[0][1]:.4f}" if expected else f"FAILED: {reference.error or 'no result'}")
            verdicts = []
            for name, _ in platforms[1:]:
                answer = runs[name].top_k.get(image.name)
                if not expected or not answer:
                    row.append(f"FAILED: {runs[name].error or 'no result'}" if not answer else "-")
                    verdicts.append(False)
                    continue
                difference = score_difference(expected, answer)
                same = answer[0][0] == expected[0][0] and difference <= tolerance
                verdicts.append(same)
                top1 = "same top-1" if answer[0][0] == expected[0][0] else f"top-1 {shorten(answer[0][0])}"
                row.append(f"{top1}, max|Δ| {round(difference / step)} step" if step else f"{top1}, max|Δ| {difference:.1e}")
            row.append("ok" if all(verdicts) else "MISMATCH")
            failures += not all(verdicts)
            rows.append(row)

    cpu = f" (qemu -cpu {args.cpu})" if args.cpu else ""
    print(f"\narm64{cpu} against x86_64: edge-classify --json --top_k {TOP_K}")
    print_table(["model", "image", "scores", "x86_64 top-1"] + [name for name, _ in platforms[1:]] + ["result"], rows)
    if args.skip_ours:
        print(f"\nthis project's models: skipped, {args.skip_ours}")
    print("\ntime per model: whole process (start-up included) / median per-image latency")
    print_table(["model"] + [name for name, _ in platforms], timing_rows)
    print("Emulated timings say nothing about a real Raspberry Pi's speed: qemu-user translates every")
    print("arm64 instruction on this x86 machine. Time a real Pi with edge-classify itself.")
    print(f"\narm64 check {'FAILED' if failures or not rows else 'passed'}: {len(rows) - failures} of {len(rows)} answers match")
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
