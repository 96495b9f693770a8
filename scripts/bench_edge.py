"""Benchmark edge-classify's device path against the bare interpreter, in one run.

For inception_v3 and mobilenet_v2, float32 and int8 (uint8 input, calibrated, as `retrain-edge
convert --quantize` writes), at 1 and 2 threads: the median of the bare `interpreter.invoke()`,
and the median end-to-end time per frame of edge-classify's stream path (640x480 BGR frame ->
colour conversion, resize, normalise, invoke, dequantise, top-k), with their ratio (target: at
most 1.10 for int8 inception_v3). Then the import time of edge without the interpreter library
(target < 0.3 s), and the peak memory of a 100-frame video run (target: model file + 60 MB),
and of a 100-image run on files (no OpenCV loaded), against the imports alone.

Models are built with TensorFlow (random weights: timing does not depend on them) once, into
--cache_dir. The runtime itself never imports TensorFlow; this script only does so to build models.

    .venv/bin/python scripts/bench_edge.py [--runs 20] [--cache_dir ~/.cache/retrain-edge/bench]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.classify import classify_frame  # noqa: E402
from edge.model import load_model  # noqa: E402

ARCHITECTURES = {"inception_v3": "InceptionV3", "mobilenet_v2": "MobileNetV2"}  # name -> keras.applications
KINDS = ("int8", "float32")
THREADS = (1, 2)
FRAME_SIZE = (480, 640)  # (height, width) of the synthetic camera frame, a typical USB webcam
CALIBRATION_IMAGES = 8  # enough to set activation ranges for timing; accuracy is not measured here
WARMUP_RUNS = 3
MEMORY_FRAMES = 100
MEMORY_TARGET_MB = 60  # above the model file size
IMPORT_TARGET_S = 0.3
IMPORT_RUNS = 5
RATIO_TARGET = 1.10  # end-to-end / bare invoke, int8 inception_v3


def build_model(architecture: str, kind: str, path: Path) -> None:
    """Write keras.applications.<architecture>(weights=None) as a TFLite model of `kind` to `path`."""
    import keras
    import tensorflow as tf

    keras_model = getattr(keras.applications, ARCHITECTURES[architecture])(weights=None)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if kind == "int8":
        height, width = keras_model.input_shape[1:3]
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.uniform(-1, 1, (1, height, width, 3)).astype(np.float32)] for _ in range(CALIBRATION_IMAGES))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    with warnings.catch_warnings():  # TF asks for input statistics that full-integer conversion does not need
        warnings.simplefilter("ignore", UserWarning)
        content = converter.convert()
    path.with_suffix(".tmp").write_bytes(content)
    path.with_suffix(".tmp").replace(path)


def time_model(path: Path, threads: int, runs: int) -> tuple[float, float]:
    """(median bare invoke ms, median end-to-end ms per frame) for `path` at `threads`.

    The two are timed alternately, run after run, so that a busy machine slows both alike.
    """
    model = load_model(path, num_threads=threads)
    frame = np.random.default_rng(0).integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8)
    bare, end_to_end = [], []
    for run in range(WARMUP_RUNS + runs):
        start = time.perf_counter()
        model.interpreter.invoke()
        invoked = time.perf_counter()
        classify_frame(model, frame, top_k=3)
        classified = time.perf_counter()
        if run >= WARMUP_RUNS:
            bare.append(invoked - start)
            end_to_end.append(classified - invoked)
    return statistics.median(bare) * 1000, statistics.median(end_to_end) * 1000


def import_seconds() -> float:
    """Median time to import edge's CLI, classify pipeline and image code, without the interpreter."""
    code = ("import sys, time; start = time.perf_counter(); import edge.cli; elapsed = time.perf_counter() - start; "
            "assert 'ai_edge_litert' not in sys.modules and 'tflite_runtime' not in sys.modules; print(elapsed)")
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True).stdout) for _ in range(IMPORT_RUNS))


def peak_memory_mb(code: str) -> float:
    """Peak resident memory (MB, Linux) of a fresh Python process running `code` with edge importable."""
    # VmHWM, not ru_maxrss: Linux carries the parent's peak (all of TensorFlow here) into ru_maxrss across exec.
    report = 'print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024)'
    setup = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
    return float(subprocess.run([sys.executable, "-c", setup + code + "\n" + report], capture_output=True,
                                text=True, check=True).stdout)


def run_code(options: str) -> str:
    """Code running edge-classify's library path with ClassifyOptions(`options`) over MEMORY_FRAMES images or frames."""
    return (f"from edge.classify import ClassifyOptions, run\n"
            f"summary = run(ClassifyOptions({options}, max_frames={MEMORY_FRAMES}), lambda result: None)\n"
            f"assert summary.images + summary.stream.frames == {MEMORY_FRAMES}, summary")


def write_video(path: Path) -> Path:
    import cv2

    height, width = FRAME_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (width, height))
    rng = np.random.default_rng(0)
    for _ in range(MEMORY_FRAMES):
        writer.write(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    writer.release()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per measurement (after 3 warm-up runs)")
    parser.add_argument("--cache_dir", type=Path, default=Path.home() / ".cache" / "retrain-edge" / "bench",
                        help="where the built models are kept between runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the models have no labels: class numbers are fine here
    args.cache_dir.mkdir(parents=True, exist_ok=True)

    models = {}
    for architecture in ARCHITECTURES:
        for kind in KINDS:
            path = args.cache_dir / f"{architecture}_{kind}.tflite"
            if not path.is_file():
                print(f"building {path.name} (once; cached in {args.cache_dir})", file=sys.stderr, flush=True)
                with contextlib.redirect_stdout(io.StringIO()):  # Keras prints every exported tensor
                    build_model(architecture, kind, path)
            models[architecture, kind] = path

    print(f"{'model':<22} {'threads':>7} {'MB':>6} {'invoke ms':>10} {'e2e ms':>8} {'e2e/invoke':>10} "
          f"{'vs 1 thread':>11} {'vs float32':>10}")
    rows = {}
    for (architecture, kind), path in models.items():
        for threads in THREADS:
            rows[architecture, kind, threads] = time_model(path, threads, args.runs)
    for (architecture, kind, threads), (bare, end_to_end) in rows.items():
        one_thread = rows[architecture, kind, 1][0]
        float32 = rows[architecture, "float32", threads][0]
        size_mb = models[architecture, kind].stat().st_size / 1e6
        print(f"{architecture + ' ' + kind:<22} {threads:>7} {size_mb:>6.1f} {bare:>10.1f} {end_to_end:>8.1f} "
              f"{end_to_end / bare:>10.3f} {one_thread / bare:>10.2f}x {float32 / bare:>9.2f}x")
    ratio = max(rows["inception_v3", "int8", threads][1] / rows["inception_v3", "int8", threads][0] for threads in THREADS)
    print(f"\nend-to-end / invoke, int8 inception_v3: {ratio:.3f} (target <= {RATIO_TARGET})")

    seconds = import_seconds()
    print(f"import edge.cli (no interpreter library), median of {IMPORT_RUNS}: {seconds:.3f} s "
          f"(target < {IMPORT_TARGET_S} s)")
    with tempfile.TemporaryDirectory() as folder:
        video = write_video(Path(folder) / "frames.avi")
        photo = Path(folder) / "photo.jpg"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8)).save(photo)
        floor = peak_memory_mb("import edge.classify, ai_edge_litert.interpreter")
        floor_cv2 = peak_memory_mb("import edge.classify, ai_edge_litert.interpreter, cv2")
        print(f"\npeak memory (MB) of a fresh process over {MEMORY_FRAMES} images (a {FRAME_SIZE[1]}x{FRAME_SIZE[0]} "
              f"JPEG) or video frames; imports alone: {floor:.1f}, with OpenCV: {floor_cv2:.1f}")
        print(f"{'model':<22} {'file':>6} {'files':>6} {'video':>6} {'video - file':>12} {'target':>7}")
        for (architecture, kind), path in models.items():
            size_mb = path.stat().st_size / 2**20
            files_peak = peak_memory_mb(run_code(f"inputs=[{str(photo)!r}] * {MEMORY_FRAMES}, model={str(path)!r}"))
            video_peak = peak_memory_mb(run_code(f"camera={str(video)!r}, model={str(path)!r}"))
            print(f"{architecture + ' ' + kind:<22} {size_mb:>6.1f} {files_peak:>6.1f} {video_peak:>6.1f} "
                  f"{video_peak - size_mb:>12.1f} {'ok' if video_peak - size_mb <= MEMORY_TARGET_MB else 'over':>7}")

if __name__ == "__main__":
    main()
