"""What preparing one camera frame costs on a Pi 5, and how close each way is to the trainer's pixels.

Two tables for a 640x480 BGR frame and a 224x224 model, each way of preparing it in
scripts/frame_cost_guest.py (the baseline: resizing the whole frame, as edge-classify did before
it shrank frames first):
1. cost: aarch64 instructions on the emulated Cortex-A76 (the counter of `make pi-cost`), one
   thread, median of REPEATS, with the bare invoke() and edge-classify's whole classify_frame
   for --model;
2. pixels: real photos (--image_dir) made 640x480 frames, each compared with what the trainer
   computes for that frame once --save_uncertain or --collect saved it (edge.collect.write_jpeg,
   then edge.image.load_rgb): mean and largest absolute pixel difference, and with --model the
   share of frames whose top-1 label is the one the trainer's pixels give, and the mean absolute
   difference of the top-1 score.

usage: scripts/frame_cost.py --model MODEL.tflite [--image_dir DIR] [--limit N] [--no_count] [--no_pixels]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from edge import UserError  # noqa: E402
from edge.collect import write_jpeg  # noqa: E402
from edge.image import IMAGE_SUFFIXES, load_rgb  # noqa: E402
from edge.model import load_model  # noqa: E402
from frame_cost_guest import BASELINE, CURRENT, PREPARATIONS, SIZE  # noqa: E402
from trainer.pi_cost import HOW_TO_BUILD, REPEATS, SECONDS_PER_MODEL, count_regions, find_counter  # noqa: E402
from trainer.pi_cost_guest import FRAME_SHAPE  # noqa: E402

CPU = "cortex-a76"
FLOWERS = REPO.parent / "shared" / "data" / "flowers"


def cost_table(model: Path) -> str:
    counter = find_counter()
    if counter is None:
        raise UserError(f"the Pi instruction counter is not built: {HOW_TO_BUILD}")
    counted = count_regions(CPU, Path(__file__).with_name("frame_cost_guest.py"), [str(REPEATS), str(model.resolve())],
                            counter, SECONDS_PER_MODEL * 2)
    median = {what: statistics.median(runs) for (_, what), runs in counted.items()}
    invoke, frame = median.pop("invoke"), median.pop("classify_frame")
    # classify_frame with another preparation in place of resize_bgr's.
    rest_of_frame = frame - median[CURRENT]
    rows = [f"{CPU}, {FRAME_SHAPE[1]}x{FRAME_SHAPE[0]} BGR frame -> {SIZE[1]}x{SIZE[0]} RGB, {model.name}",
            "| preparation | instructions | vs baseline | frame with it / invoke |", "| --- | --- | --- | --- |"]
    for what, instructions in median.items():
        rows.append(f"| {what} | {instructions / 1e6:.2f} M | {instructions / median[BASELINE]:.2f}x"
                    f" | {(rest_of_frame + instructions) / invoke:.2f}x |")
    rows.append(f"| bare invoke() | {invoke / 1e6:.2f} M | | |")
    rows.append(f"| classify_frame, all of it | {frame / 1e6:.2f} M | | {frame / invoke:.2f}x |")
    return "\n".join(rows)


def pixel_table(image_dir: Path, limit: int, model_path: Path | None) -> str:
    photos = sorted(path for path in image_dir.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not photos:
        raise UserError(f"no images under {image_dir}")
    model = load_model(model_path, num_threads=1) if model_path else None
    means = {name: [] for name in PREPARATIONS}
    largest = dict.fromkeys(PREPARATIONS, 0)
    agree = dict.fromkeys(PREPARATIONS, 0)
    score_differences = {name: [] for name in PREPARATIONS}
    with tempfile.TemporaryDirectory(prefix="frame-cost-") as scratch:
        saved = Path(scratch) / "frame.jpg"
        for photo in photos:
            rgb = Image.open(photo).convert("RGB").resize(FRAME_SHAPE[1::-1], Image.Resampling.LANCZOS)
            frame = np.ascontiguousarray(np.asarray(rgb)[..., ::-1])
            write_jpeg(saved, frame)
            trainer = load_rgb(saved, SIZE)
            trainer_scores = model.scores(trainer) if model else None
            for name, prepare in PREPARATIONS.items():
                pixels = np.ascontiguousarray(prepare(frame))
                difference = np.abs(pixels.astype(np.int16) - trainer)
                means[name].append(difference.mean())
                largest[name] = max(largest[name], int(difference.max()))
                if model:
                    scores = model.scores(pixels)
                    top = int(np.argmax(trainer_scores))
                    agree[name] += int(np.argmax(scores)) == top
                    score_differences[name].append(abs(float(scores[top]) - float(trainer_scores[top])))
    rows = [f"{len(photos)} photos from {image_dir} as {FRAME_SHAPE[1]}x{FRAME_SHAPE[0]} frames, against load_rgb of "
            "each frame saved as --save_uncertain saves it" + (f"; model {model_path.name}" if model else ""),
            "| preparation | mean abs pixel difference | largest | top-1 agreement | mean abs top-1 score difference |",
            "| --- | --- | --- | --- | --- |"]
    for name in PREPARATIONS:
        agreement = (f"{agree[name] / len(photos):.1%} | {np.mean(score_differences[name]):.4f}" if model else "n/a | n/a")
        rows.append(f"| {name} | {np.mean(means[name]):.3f} | {largest[name]} | {agreement} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a .tflite classifier with a 224x224 input")
    parser.add_argument("--image_dir", "--image-dir", type=Path, default=FLOWERS, help="photos (default ../shared/data/flowers)")
    parser.add_argument("--limit", type=int, default=600, help="at most this many photos (default 600)")
    parser.add_argument("--no_count", "--no-count", action="store_true", help="skip the instruction counts")
    parser.add_argument("--no_pixels", "--no-pixels", action="store_true", help="skip the pixel comparison")
    arguments = parser.parse_args()
    try:
        if not arguments.no_count:
            print(cost_table(arguments.model), flush=True)
        if not arguments.no_pixels:
            print(pixel_table(arguments.image_dir, arguments.limit, arguments.model))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
