"""`make demo`: the whole pipeline on generated sample images, as a user would type it.

sample data -> retrain-edge train -> retrain-edge convert --quantize -> edge-classify
Offline (no ImageNet download), it says so in one line and goes on with the same weights from
../shared/data/weights when that folder is beside the repo, else with random weights, so every
stage still runs (with random weights the accuracy is near chance, and the figures say so).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from make_sample_data import make_sample_dataset

ARCHITECTURE = "mobilenet_v2_0.5_224"  # a Pi-sized backbone; its ImageNet weights are 3 MB
OFFLINE_WEIGHTS = (Path(__file__).resolve().parents[2] / "shared" / "data" / "weights"
                   / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5")
IMAGES_PER_CLASS = 40
BIN = Path(sys.executable).parent


def command(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    print("$", " ".join(arguments), flush=True)
    result = subprocess.run([str(BIN / arguments[0]), *arguments[1:]], stderr=subprocess.PIPE, text=True)
    sys.stderr.write(result.stderr)
    if check and result.returncode:
        sys.exit(result.returncode)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("demo_output"), help="demo folder (default demo_output)")
    parser.add_argument("--weights", default="imagenet", help="backbone weights: imagenet, none or a file")
    arguments = parser.parse_args()
    started = time.perf_counter()
    image_dir = make_sample_dataset(arguments.output / "images", images_per_class=IMAGES_PER_CLASS)
    print(f"sample data: {image_dir} ({IMAGES_PER_CLASS} images per class)")

    output_dir = arguments.output / "model"
    train = ["retrain-edge", "train", "--image_dir", str(image_dir), "--output_dir", str(output_dir),
             "--architecture", ARCHITECTURE, "--bottleneck_dir", str(arguments.output / "bottlenecks"),
             "--how_many_training_steps", "1000"]
    result = command(*train, "--weights", arguments.weights, check=False)
    if result.returncode == 2 and "could not download the ImageNet weights" in result.stderr:
        fallback = str(OFFLINE_WEIGHTS) if OFFLINE_WEIGHTS.is_file() else "none"
        print(f"demo: no network for the ImageNet weights; going on with --weights {fallback}")
        command(*train, "--weights", fallback)
    elif result.returncode:
        sys.exit(result.returncode)

    command("retrain-edge", "convert", "--quantize", "--output_dir", str(output_dir))
    run = json.loads((output_dir / "run.json").read_text())
    test_images = [str(image_dir / path) for paths in run["split"]["files"]["testing"].values() for path in paths[:1]]
    command("edge-classify", "--model", str(output_dir / "model.tflite"), "--top_k", "2", *test_images)
    print(f"demo finished in {time.perf_counter() - started:.0f} s: outputs in {arguments.output}/")


if __name__ == "__main__":
    main()
