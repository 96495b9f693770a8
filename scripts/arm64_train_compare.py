"""Compare a model trained and converted on emulated arm64 with the one trained on x86; print a table.

Run by scripts/arm64_train_check.sh. Both int8 models are classified by the same x86
`edge-classify --json`, so any difference is the training's and conversion's, not the runtime's.
Checks per image: the same top-1 label (unless the x86 model's two best scores are themselves
within the tolerance), and scores within SCORE_TOLERANCE. Exits 1 otherwise.

Why a tolerance and not equality: the backbone's float kernels differ between x86 (oneDNN) and
aarch64 builds of TensorFlow in the last bits, the head's SGD and the int8 calibration carry
that on, and a calibrated range a hair wider moves a quantized score by a step or two.

usage: arm64_train_compare.py --x86 EDGE_CLASSIFY --reference X86_MODEL --candidate ARM_MODEL --images IMG...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arm64_compare import print_table, run_classifier, score_difference  # noqa: E402

SCORE_TOLERANCE = 0.05  # max |score difference| per image, probabilities, over the top-k


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--x86", required=True, help="the x86 edge-classify command")
    parser.add_argument("--reference", type=Path, required=True, help="the model trained on x86")
    parser.add_argument("--candidate", type=Path, required=True, help="the model trained on emulated arm64")
    parser.add_argument("--images", type=Path, nargs="+", required=True)
    arguments = parser.parse_args(argv)
    reference = run_classifier(arguments.x86, arguments.reference, None, arguments.images)
    candidate = run_classifier(arguments.x86, arguments.candidate, None, arguments.images)
    for name, run in (("x86", reference), ("arm64", candidate)):
        if run.error:
            print(f"error: classifying with the {name}-trained model failed: {run.error}", file=sys.stderr)
            return 1
    rows, mismatches, largest = [], 0, 0.0
    for source, expected in sorted(reference.top_k.items()):
        got = candidate.top_k.get(source, [])
        difference = score_difference(expected, got) if got else float("inf")
        # Two labels the x86 model scores within the tolerance of each other may swap places.
        near_tie = len(expected) > 1 and expected[0][1] - expected[1][1] <= SCORE_TOLERANCE
        same = bool(got) and (got[0][0] == expected[0][0] or near_tie) and difference <= SCORE_TOLERANCE
        mismatches += not same
        largest = max(largest, difference)
        rows.append([source, f"{expected[0][0]} {expected[0][1]:.3f}",
                     f"{got[0][0]} {got[0][1]:.3f}" if got else "none", f"{difference:.3f}",
                     ("ok" if got[0][0] == expected[0][0] else "ok, near tie") if same else "MISMATCH"])
    print_table(["image", "trained on x86_64", "trained on arm64", "max |Δscore|", ""], rows)
    print(f"\n{len(rows) - mismatches}/{len(rows)} images: same top-1 and scores within {SCORE_TOLERANCE} "
          f"(largest difference {largest:.3f})")
    return 1 if mismatches or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
