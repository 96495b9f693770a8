"""Benchmark: which measure finds near-duplicate photos, a perceptual hash or the cosine of bottlenecks.

Plants copies of some photos of a dataset, then asks each measure which pairs of images are
near-duplicates. The truth: two images are near-duplicates when they come from one original.
The planted kinds:
  resized       the original at half its width and height, JPEG quality 90
  recompressed  the original at full size, JPEG quality 30
  both          at 40% size, JPEG quality 40
  next frame    a 92% crop shifted off-centre, as the next frame of a burst may frame it (not
                asked for by the issue; shown because camera bursts make such copies)
Measures: the audit's 256-bit DCT perceptual hash (pHash), the classic 64-bit pHash and a 64-bit
difference hash (dHash), by Hamming distance; the cosine of the bottlenecks of an ImageNet
backbone (the audit's other option: they are cached for its mislabel search).
For each threshold it prints precision over all pairs and recall per kind, the time per image,
and the margin: the closest pair of different photos against the farthest resized or
recompressed copy (the crops are left out: no hash is meant to catch them).

    python scripts/bench_near_duplicates.py [--image_dir ../shared/data/flowers] [--weights PATH]

Copies are written to a temporary folder; the dataset is only read.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from edge.image import IMAGE_SUFFIXES, load_rgb, open_rgb  # noqa: E402
from trainer.audit import GREY_WEIGHTS, hamming_distances, perceptual_hashes  # noqa: E402

PLANT_EVERY = 10  # every 10th photo (by name) gets planted copies
DHASH_SIZE = (8, 9)  # (height, width) px: 8 rows of 8 left-right differences = 64 bits
CLASSIC_PHASH_SIZE, CLASSIC_PHASH_FREQUENCIES = 32, 8  # px, per axis: 64 bits
CLASSIC_DCT_BASIS = np.cos(np.pi * np.arange(CLASSIC_PHASH_FREQUENCIES)[:, None]
                           * (2 * np.arange(CLASSIC_PHASH_SIZE)[None, :] + 1) / (2 * CLASSIC_PHASH_SIZE))
HASH_THRESHOLDS = {64: (4, 8, 10, 12, 16), 256: (16, 24, 32, 40, 48, 64)}  # bits, by hash length
COSINE_THRESHOLDS = (0.85, 0.90, 0.93, 0.95, 0.97, 0.99)
SHOWN_FALSE_PAIRS = 5


def plant(original: Path, kind: str) -> bytes:
    """JPEG bytes of one planted copy of original."""
    image = open_rgb(original)
    width, height = image.size
    if kind == "resized":
        image, quality = image.resize((width // 2, height // 2), Image.Resampling.BILINEAR), 90
    elif kind == "recompressed":
        quality = 30
    elif kind == "both":
        image, quality = image.resize((width * 2 // 5, height * 2 // 5), Image.Resampling.BILINEAR), 40
    else:  # next frame
        crop_width, crop_height = width * 23 // 25, height * 23 // 25
        image, quality = image.crop((width - crop_width, (height - crop_height) // 2, width,
                                     (height - crop_height) // 2 + crop_height)), 90
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


KINDS = ("resized", "recompressed", "both", "next frame")


def difference_hashes(paths: list[Path]) -> np.ndarray:
    """(n, 8) uint8: each bit says whether a pixel of the 9x8 grey image is brighter than its right neighbour."""
    hashes = []
    for path in paths:
        grey = load_rgb(path, DHASH_SIZE).astype(np.float32) @ GREY_WEIGHTS
        hashes.append(np.packbits(grey[:, 1:] > grey[:, :-1]))
    return np.stack(hashes)


def classic_perceptual_hashes(paths: list[Path]) -> np.ndarray:
    """(n, 8) uint8: the classic pHash, 8x8 lowest DCT frequencies of 32x32 grey against their median."""
    hashes = []
    for path in paths:
        grey = load_rgb(path, (CLASSIC_PHASH_SIZE, CLASSIC_PHASH_SIZE)).astype(np.float32) @ GREY_WEIGHTS
        low_frequencies = CLASSIC_DCT_BASIS @ grey @ CLASSIC_DCT_BASIS.T
        hashes.append(np.packbits(low_frequencies > np.median(low_frequencies)))
    return np.stack(hashes)


def cosine_similarities(paths: list[Path], architecture: str, weights: str) -> np.ndarray:
    from trainer.backbones import build_backbone, get_backbone
    from trainer.bottlenecks import BottleneckCache, file_keys, image_bottlenecks, make_forward

    backbone = get_backbone(architecture)
    forward = make_forward(build_backbone(backbone, weights, seed=0))
    with tempfile.TemporaryDirectory() as cache_dir:
        vectors = image_bottlenecks(paths, file_keys(paths), backbone.input_size, forward,
                                    BottleneckCache(Path(cache_dir), backbone.bottleneck_size))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors @ vectors.T


def report(name: str, closeness: np.ndarray, thresholds, near, origin: np.ndarray, kind: list[str],
           seconds_per_image: float, names: list[str]) -> None:
    """Precision and recall per kind at each threshold; near(closeness, threshold) -> bool pairs."""
    upper = np.triu(np.ones(closeness.shape, bool), k=1)
    same = (origin[:, None] == origin[None, :]) & upper
    different = ~(origin[:, None] == origin[None, :]) & upper
    copies = same & ~np.isin(np.array(kind), ["next frame"])[None, :]
    # Closeness grows with similarity for the cosine and shrinks for a distance: compare as "nearer".
    sign = 1 if near(np.array(1.0), 0.5) else -1
    farthest_copy = (sign * closeness[copies]).min() * sign
    closest_other = (sign * closeness[different]).max() * sign
    print(f"\n{name}: {seconds_per_image * 1000:.1f} ms per image; farthest resized or recompressed copy "
          f"{farthest_copy:.3g}, closest different photos {closest_other:.3g}")
    print(f"{'threshold':>10}{'precision':>11}{'false pairs':>13}" + "".join(f"{k:>14}" for k in KINDS))
    for threshold in thresholds:
        flagged = near(closeness, threshold) & upper
        true_pairs, false_pairs = int((flagged & same).sum()), int((flagged & ~same).sum())
        precision = true_pairs / (true_pairs + false_pairs) if true_pairs + false_pairs else 1.0
        recalls = []
        for planted_kind in KINDS:
            copies = [i for i, k in enumerate(kind) if k == planted_kind]
            originals = [int(np.flatnonzero((origin == origin[i]) & (np.array(kind) == "original"))[0]) for i in copies]
            found = sum(bool(flagged[min(a, b), max(a, b)]) for a, b in zip(originals, copies))
            recalls.append(found / len(copies))
        print(f"{threshold:>10}{precision:>11.1%}{false_pairs:>13}" + "".join(f"{r:>14.1%}" for r in recalls))
        if threshold == thresholds[len(thresholds) // 2] and false_pairs:
            rows, columns = np.nonzero(flagged & ~same)
            shown = ", ".join(f"{names[a]} ~ {names[b]}" for a, b in list(zip(rows, columns))[:SHOWN_FALSE_PAIRS])
            print(f"{'':>10}false pairs at {threshold}: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", type=Path, default=REPO.parent / "shared" / "data" / "flowers")
    parser.add_argument("--architecture", default="mobilenet_v2_0.5_224")
    parser.add_argument("--weights", default=str(REPO.parent / "shared" / "data" / "weights" /
                                              "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"),
                        help="ImageNet weights for the backbone: a Keras no-top file, or 'imagenet' (download)")
    parser.add_argument("--repeats", type=int, default=3, help="timing runs of each hash")
    arguments = parser.parse_args()
    if not arguments.image_dir.is_dir():
        sys.exit(f"{arguments.image_dir} not found: pass --image_dir")

    originals = sorted(path for path in arguments.image_dir.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    with tempfile.TemporaryDirectory() as work:
        paths, origin, kind = list(originals), list(range(len(originals))), ["original"] * len(originals)
        for number, original in enumerate(originals[::PLANT_EVERY]):
            for planted_kind in KINDS:
                copy = Path(work) / f"{number}-{planted_kind.replace(' ', '_')}.jpg"
                copy.write_bytes(plant(original, planted_kind))
                paths.append(copy)
                origin.append(originals.index(original))
                kind.append(planted_kind)
        origin = np.array(origin)
        names = [str(path.relative_to(arguments.image_dir)) if path.is_relative_to(arguments.image_dir) else path.name
                 for path in paths]
        print(f"near-duplicates: {len(originals)} photos from {arguments.image_dir}, {len(paths) - len(originals)} "
              f"planted copies of {len(originals[::PLANT_EVERY])} of them; {os.cpu_count()} cores (shared)")

        def timed(function):
            times, value = [], None
            for _ in range(arguments.repeats):
                started = time.perf_counter()
                value = function(paths)
                times.append(time.perf_counter() - started)
            return value, statistics.median(times) / len(paths)

        def within(distances, threshold):
            return distances <= threshold

        for name, hashes in (("the audit's pHash, 256 bits", perceptual_hashes),
                             ("classic pHash, 64 bits", classic_perceptual_hashes),
                             ("dHash, 64 bits", difference_hashes)):
            hashed, seconds = timed(hashes)
            report(f"{name}: Hamming distance <=", hamming_distances(hashed, hashed),
                   HASH_THRESHOLDS[hashed.shape[1] * 8], within, origin, kind, seconds, names)
        started = time.perf_counter()
        cosine = cosine_similarities(paths, arguments.architecture, arguments.weights)
        cosine_seconds = (time.perf_counter() - started) / len(paths)
        report(f"cosine of {arguments.architecture} bottlenecks (cold cache, backbone build included) >=", cosine,
               COSINE_THRESHOLDS, lambda similarity, threshold: similarity >= threshold, origin, kind, cosine_seconds,
               names)


if __name__ == "__main__":
    main()
