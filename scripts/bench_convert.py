"""Benchmark `retrain-edge convert`: every mode against float32, measured in the same run.

1. flowers: `retrain-edge train` with mobilenet_v2_0.5_224 and the shared weights, then every
   mode: test-split accuracy, top-1 agreement with Keras (test split, and every image of the
   dataset), size and median latency at 1 and 2 threads, as ratios to float32.
2. inception_v3 with random weights (size and speed do not depend on the weights): size and
   median latency of every mode at 1 and 2 threads.

    python scripts/bench_convert.py [--work_dir DIR] [--skip_inception]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.image import load_rgb  # noqa: E402
from edge.model import load_model  # noqa: E402
from trainer.convert import MODES, ConvertOptions, quiet, convert  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
FLOWERS = SHARED / "flowers"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
ARCHITECTURE = "mobilenet_v2_0.5_224"
THREADS = (1, 2)
LATENCY_RUNS = 30  # invocations timed per model and thread count, after WARMUP_RUNS
WARMUP_RUNS = 3


def median_latency_ms(tflite_path: Path, pixels: np.ndarray, num_threads: int) -> float:
    """Median wall time of one invoke (set input, invoke, read output) on `pixels`, in ms."""
    with quiet(False):
        runtime = load_model(tflite_path, num_threads=num_threads)
    tensor = runtime.preprocess(pixels)
    for _ in range(WARMUP_RUNS):
        runtime.infer(tensor)
    times = []
    for _ in range(LATENCY_RUNS):
        started = time.perf_counter()
        runtime.infer(tensor)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000


def agreement_on_all_images(output_dir: Path, tflite_paths: dict[str, Path]) -> dict[str, float]:
    """Top-1 agreement with Keras on every image of the run's dataset (all splits), per mode."""
    import keras

    run = json.loads((output_dir / "run.json").read_text())
    paths = [path for files in run["split"]["files"].values() for label in run["labels"] for path in files[label]]
    size = tuple(run["input_size"])
    pixels = np.stack([load_rgb(Path(run["image_dir"]) / path, size) for path in paths])
    model = keras.saving.load_model(output_dir / "model.keras", compile=False)
    keras_top1 = model.predict((pixels.astype(np.float32) - 127.5) / 127.5, batch_size=32, verbose=0).argmax(axis=1)
    agreement = {}
    for mode, path in tflite_paths.items():
        with quiet(False):
            runtime = load_model(path)
        tflite_top1 = np.array([runtime.scores(image).argmax() for image in pixels])
        agreement[mode] = float(np.mean(tflite_top1 == keras_top1))
    return agreement


def convert_all(output_dir: Path, **options) -> dict[str, Path]:
    paths = {}
    for mode in MODES:
        paths[mode] = output_dir / f"model_{mode}.tflite"
        convert(ConvertOptions(output_dir=output_dir, quantization=mode, output_tflite=paths[mode], **options))
    return paths


def latency_table(paths: dict[str, Path], pixels: np.ndarray) -> list[str]:
    sizes = {mode: path.stat().st_size for mode, path in paths.items()}
    latency = {(mode, threads): median_latency_ms(path, pixels, threads) for mode, path in paths.items() for threads in THREADS}
    lines = ["| mode | size MB | size / float32 | " + " | ".join(f"ms ({t} thr) | / float32" for t in THREADS) + " |",
             "|---|---|---|" + "---|---|" * len(THREADS)]
    for mode in paths:
        cells = [f"{latency[mode, t]:.1f} | {latency[mode, t] / latency['float32', t]:.2f}" for t in THREADS]
        lines.append(f"| {mode} | {sizes[mode] / 1e6:.2f} | {sizes[mode] / sizes['float32']:.1%} | " + " | ".join(cells) + " |")
    return lines


def bench_flowers(work_dir: Path) -> list[str]:
    output_dir = work_dir / "flowers"
    command = [str(Path(sys.executable).parent / "retrain-edge"), "train", "--image_dir", str(FLOWERS),
               "--architecture", ARCHITECTURE, "--weights", str(WEIGHTS), "--output_dir", str(output_dir),
               "--bottleneck_dir", str(work_dir / "bottlenecks")]
    if not (output_dir / "run.json").is_file():
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    paths = convert_all(output_dir)
    run = json.loads((output_dir / "run.json").read_text())
    everywhere = agreement_on_all_images(output_dir, paths)
    lines = [f"flowers, {ARCHITECTURE} (`{' '.join(command)}`), test split N={run['test_count']}:", "",
             "| mode | Keras acc | TFLite acc | drop (points) | top-1 agreement, test | agreement, all "
             f"{sum(len(p) for f in run['split']['files'].values() for p in f.values())} images | max prob diff |",
             "|---|---|---|---|---|---|---|"]
    for mode in MODES:
        proof = run["conversion"][mode]
        lines.append(f"| {mode} | {proof['keras_accuracy']:.1%} | {proof['tflite_accuracy']:.1%} | "
                     f"{(proof['keras_accuracy'] - proof['tflite_accuracy']) * 100:.1f} | {proof['top1_agreement']:.1%} | "
                     f"{everywhere[mode]:.1%} | {proof['max_probability_difference']:.2g} |")
    pixels = load_rgb(FLOWERS / run["split"]["files"]["testing"][run["labels"][0]][0], tuple(run["input_size"]))
    return lines + [""] + latency_table(paths, pixels)


def bench_inception(work_dir: Path) -> list[str]:
    import keras

    output_dir = work_dir / "inception_v3"
    output_dir.mkdir(parents=True, exist_ok=True)
    labels = sorted(path.name for path in FLOWERS.iterdir() if path.is_dir())
    (output_dir / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
    model_path = output_dir / "inception_v3_random.keras"
    if not model_path.is_file():
        keras.utils.set_random_seed(0)
        backbone = keras.applications.InceptionV3(input_shape=(299, 299, 3), weights=None, include_top=False, pooling="avg")
        outputs = keras.layers.Dense(len(labels), activation="softmax", name="final_result")(backbone.output)
        keras.Model(backbone.input, outputs).save(model_path)
    paths = convert_all(output_dir, model=model_path, labels=output_dir / "labels.txt", image_dir=FLOWERS)
    pixels = load_rgb(next(FLOWERS.glob("daisy/*.jpg")), (299, 299))
    return ["inception_v3, random weights (calibrated on flowers):", ""] + latency_table(paths, pixels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", type=Path, default=REPO / "bench_output" / "convert")
    parser.add_argument("--skip_inception", action="store_true")
    arguments = parser.parse_args()
    if not FLOWERS.is_dir() or not WEIGHTS.is_file():
        sys.exit(f"needs {FLOWERS} and {WEIGHTS}")
    lines = bench_flowers(arguments.work_dir)
    if not arguments.skip_inception:
        lines += [""] + bench_inception(arguments.work_dir)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
