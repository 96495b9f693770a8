"""Does the integer resize of edge.image change the models' accuracy, against the Pillow resize it replaced?

    python scripts/bench_resize.py [--image_dir ../shared/data/flowers] [--repeats 3]
        [--cache_dir /tmp/retrain-edge-bench-resize]

Every photo is preprocessed two ways, for each backbone whose weights ship with the shared data
(bench_compare's BACKBONES):
- `pillow`: what `edge.image.load_rgb` did before the integer resize (`pillow_rgb`): the JPEG
  decoder's draft, then Pillow's antialiased bilinear resize;
- `exact`: `edge.image.load_rgb` today: box averages by whole factors, then bilinear in integers
  (OpenCV's INTER_LINEAR_EXACT).
Their bottlenecks come from the trainer's own forward pass, cached on disk under --cache_dir, one
folder per preprocessing. Each is judged as `retrain-edge compare` judges a backbone
(trainer.compare.out_of_fold_correct, `train`'s defaults, --repeats fold assignments): accuracy,
the NLL after the temperature (first assignment), and the paired difference exact - pillow ± its
standard error (trainer.crossval.paired_difference, the frames of a burst one draw). Then the
models trained before the change, on Pillow's pixels: each photo's out-of-fold head (`train`'s
folds) given that photo's pixels both ways, how often its top-1 answer stays, and its accuracy on
the new pixels against the old (paired); beside it, how often those heads trained with another
seed agree with them on the same pixels: what "same top-1" is worth. Printed first: how far apart
the two preprocessings' pixels are.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import edge.image  # noqa: E402
from bench_compare import BACKBONES, SHORT  # noqa: E402
from edge.image import load_rgb, open_rgb  # noqa: E402
from trainer.backbones import get_backbone, weights_id  # noqa: E402
from trainer.bottlenecks import BottleneckCache, compute_cached, content_key, file_keys  # noqa: E402
from trainer.compare import LazyBackbone, out_of_fold_correct  # noqa: E402
from trainer.crossval import hash_folds, paired_difference  # noqa: E402
from trainer.dataset import list_images  # noqa: E402
from trainer.train import TrainOptions, grid_heads, regularisation_grid  # noqa: E402

DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "retrain-edge-bench-resize"


def pillow_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The baseline: `edge.image.load_rgb` before the integer resize, uint8 (height, width, 3) at
    size=(height, width): decoded at the JPEG decoder's draft scale, then Pillow's bilinear resize,
    which antialiases (its filter widens with the reduction)."""
    height, width = size
    image = open_rgb(path, draft_size=(width, height))
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


# The cache folder of today's load_rgb is named by edge/image.py's content: the resize may change
# again, and vectors of other pixels must never be read back as these.
PREPROCESSINGS = {
    "pillow": ("pillow-bilinear", pillow_rgb),
    "exact": (f"load_rgb-{content_key(Path(edge.image.__file__).read_bytes())[:12]}", load_rgb),
}


def pixel_differences(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    """(n, 2) per photo: the mean and the largest |exact - pillow| over its pixels and channels, in levels of 255."""
    differences = np.empty((len(paths), 2))
    for index, path in enumerate(paths):
        gap = np.abs(load_rgb(path, size).astype(np.int16) - pillow_rgb(path, size))
        differences[index] = gap.mean(), gap.max()
    return differences


def held_out_logits(options: TrainOptions, trained_on: np.ndarray, given: dict[str, np.ndarray], labels: np.ndarray,
                    file_names: list[str], class_count: int) -> dict[str, np.ndarray]:
    """Per entry of `given`, (n, classes): each photo's logits from the head of `train`'s folds
    trained without its fold on `trained_on` (n, d), given that photo's bottleneck there (n, d).
    Trained on Pillow's bottlenecks: a model trained before the integer resize, run on either pixels."""
    fit = grid_heads(options, regularisation_grid(options), class_count)
    fold_of = hash_folds(file_names, options.folds)
    logits = {name: np.zeros((len(labels), class_count), np.float32) for name in given}
    for fold in np.unique(fold_of):
        held_out = fold_of == fold
        head = fit(trained_on[~held_out], labels[~held_out])[0]
        for name, vectors in given.items():
            logits[name][held_out] = head.logits(vectors[held_out])
    return logits


def resize_figures(correct: dict[str, np.ndarray], nll: dict[str, float], old_head_logits: dict[str, np.ndarray],
                   reseeded_logits: np.ndarray, labels: np.ndarray, file_names: list[str]) -> dict[str, float]:
    """One backbone's row. correct: per preprocessing, out-of-fold correctness (repeats, n); nll: per
    preprocessing, out-of-fold NLL after the temperature; old_head_logits: per preprocessing of the
    pixels given, (n, classes) logits of the out-of-fold heads trained on Pillow's (`held_out_logits`);
    reseeded_logits: (n, classes) those heads trained with another seed, given Pillow's pixels, the
    floor of "same top-1": how often two heads of the same pixels agree."""
    difference, standard_error = paired_difference(correct["exact"], correct["pillow"], file_names)
    old_head_correct = {name: logits.argmax(axis=1) == labels for name, logits in old_head_logits.items()}
    old_head_difference, old_head_error = paired_difference(old_head_correct["exact"], old_head_correct["pillow"],
                                                            file_names)
    return {
        "accuracy pillow": float(correct["pillow"].mean()), "accuracy exact": float(correct["exact"].mean()),
        "difference": difference, "standard error": standard_error,
        "nll pillow": nll["pillow"], "nll exact": nll["exact"],
        "old heads agree": float(np.mean(old_head_logits["exact"].argmax(axis=1)
                                         == old_head_logits["pillow"].argmax(axis=1))),
        "another seed agrees": float(np.mean(reseeded_logits.argmax(axis=1) == old_head_logits["pillow"].argmax(axis=1))),
        "old heads difference": old_head_difference, "old heads standard error": old_head_error,
    }


HEADER = (f"{'backbone':<10}{'acc pillow':>12}{'acc exact':>11}{'exact - pillow':>18}{'NLL pillow':>12}"
          f"{'NLL exact':>11}   {'old heads: same top-1, exact - pillow':>38}   {'seed 1 vs 0: same top-1':>23}")


def format_row(name: str, figures: dict[str, float]) -> str:
    return (f"{name:<10}{figures['accuracy pillow']:>12.1%}{figures['accuracy exact']:>11.1%}"
            f"{figures['difference']:>+10.1%} ± {figures['standard error']:<5.1%}{figures['nll pillow']:>12.4f}"
            f"{figures['nll exact']:>11.4f}   {figures['old heads agree']:>19.1%}, "
            f"{figures['old heads difference']:>+7.1%} ± {figures['old heads standard error']:<4.1%}"
            f"{figures['another seed agrees']:>26.1%}")


def bottlenecks_of(preprocessing: str, architecture: str, weights: Path, paths: list[Path], keys: list[str],
                   cache_dir: Path) -> np.ndarray:
    """(n, d) the backbone's bottlenecks of the photos preprocessed as `preprocessing`, through the
    trainer's forward pass; cached under cache_dir/<preprocessing's cache name>."""
    folder, load = PREPROCESSINGS[preprocessing]
    backbone = get_backbone(architecture)
    lazy = LazyBackbone(backbone, str(weights), 0)
    cache = BottleneckCache.for_backbone(cache_dir / folder, backbone, weights_id(str(weights), 0))
    return compute_cached(keys, lambda index: load(paths[index], backbone.input_size),
                          lambda pixels: lazy.forward(pixels), cache, f"{SHORT[architecture]}, {preprocessing}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", "--image-dir", type=Path, default=REPO.parent / "shared" / "data" / "flowers",
                        help="photos, one folder per class (default ../shared/data/flowers)")
    parser.add_argument("--repeats", type=int, default=3, help="fold assignments of the out-of-fold accuracy (default 3)")
    parser.add_argument("--cache_dir", "--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help=f"bottleneck cache, one folder per preprocessing (default {DEFAULT_CACHE_DIR})")
    arguments = parser.parse_args()
    missing = [path for path in BACKBONES.values() if not path.is_file()]
    if not arguments.image_dir.is_dir() or missing:
        print(f"error: {arguments.image_dir} not found: pass --image_dir" if not arguments.image_dir.is_dir() else
              f"error: {missing[0]} not found: the shared data (../shared/data beside the repo) holds the weights",
              file=sys.stderr)
        sys.exit(2)
    started = time.perf_counter()
    images = list_images(arguments.image_dir, 0, 0)
    examples = images.examples("training")
    paths = [images.image_dir / path for path, _ in examples]
    file_names = [path.name for path in paths]
    labels = np.array([label for _, label in examples], np.int64)
    keys = file_keys(paths)
    options = TrainOptions(image_dir=images.image_dir)

    for size in sorted({get_backbone(name).input_size for name in BACKBONES}):
        differences = pixel_differences(paths, size)
        print(f"pixels, {len(paths)} photos at {size[1]}x{size[0]}: |exact - pillow| mean {differences[:, 0].mean():.2f} "
              f"levels (per photo: median {np.median(differences[:, 0]):.2f}, largest {differences[:, 0].max():.2f}); "
              f"largest of any pixel {differences[:, 1].max():.0f} (median per photo {np.median(differences[:, 1]):.0f})")
    print(f"\nout of fold, {options.folds}-fold x {arguments.repeats} assignments, `train`'s defaults "
          f"({options.how_many_training_steps} steps); NLL after the temperature (first assignment); old heads: "
          "trained on Pillow's pixels (train's folds), given each held-out photo both ways; seed 1 vs 0: "
          "those heads trained with seed 1, given Pillow's pixels, against seed 0 (the noise floor of same top-1)")
    print(HEADER)
    for architecture, weights in BACKBONES.items():
        bottlenecks = {name: bottlenecks_of(name, architecture, weights, paths, keys, arguments.cache_dir)
                       for name in PREPROCESSINGS}
        correct, nll = {}, {}
        for name, vectors in bottlenecks.items():
            calibration, correct[name] = out_of_fold_correct(options, vectors, labels, file_names, len(images.labels),
                                                             arguments.repeats)
            nll[name] = calibration["out_of_fold_nll"]["after"]
        old_heads = held_out_logits(options, bottlenecks["pillow"], bottlenecks, labels, file_names, len(images.labels))
        reseeded = held_out_logits(replace(options, seed=1), bottlenecks["pillow"], {"pillow": bottlenecks["pillow"]},
                                   labels, file_names, len(images.labels))["pillow"]
        figures = resize_figures(correct, nll, old_heads, reseeded, labels, file_names)
        print(format_row(SHORT[architecture], figures), flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
