"""Distortions: the classic random crop, scale, flip and brightness, cheap enough to leave on.

The classic semantics (retrain.py), with crop c, scale s and brightness b in percent: the image is
resized (bilinear, aspect not kept) to (1 + c/100) * U(1, 1 + s/100) times the input size, a random
input-size window is cropped from it, mirrored left-right with p = 0.5 when flip_left_right, and
its pixels are multiplied by U(1 - b/100, 1 + b/100), then clipped to [0, 255] so they stay valid
for the [-1, 1] normalisation.

Resizing by `scale` then cropping an input-size window equals resampling a window 1/scale of the
image's extent, so each image is decoded once per run at the working size (the largest resize any
draw asks for) and a whole batch is distorted by tf.image.crop_and_resize inside the compiled
forward pass. With distortion_variants K > 0 each training image gets K variants, drawn once from
(seed, image content, settings, variant index), whose bottlenecks are cached beside the plain
ones; training then samples among an image's variants, so a warm run costs no forward pass.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.image import load_rgb
from trainer import UserError
from trainer.backbones import INPUT_MEAN, INPUT_STD
from trainer.bottlenecks import DECODE_THREADS, BottleneckCache, compute_cached

MAX_PERCENT = 100  # crop and scale above this grow the working image past 4x the input area
# Columns of a parameter array, one row per distorted sample.
SCALE, OFFSET_Y, OFFSET_X, FLIP, BRIGHTNESS = range(5)
PARAMETER_COUNT = 5


@dataclass
class DistortionOptions:
    """The classic distortion flags; all zero/False (the default) means no distortion."""

    random_crop: int = 0  # percent of margin around the crop window
    random_scale: int = 0  # percent of extra random enlargement before cropping
    random_brightness: int = 0  # percent of random brightness change, up or down
    flip_left_right: bool = False  # mirror half of the samples
    distortion_variants: int = 10  # cached variants per training image; 0: fresh at every step

    @property
    def enabled(self) -> bool:
        return bool(self.random_crop or self.random_scale or self.random_brightness or self.flip_left_right)

    @property
    def settings_name(self) -> str:
        """What the variants depend on besides seed and image; the variant count is not part of
        it, so asking for more variants keeps the ones already cached."""
        flip = "-flip" if self.flip_left_right else ""
        return f"crop{self.random_crop}-scale{self.random_scale}-brightness{self.random_brightness}{flip}"

    def validate(self) -> None:
        for flag in ("random_crop", "random_scale", "random_brightness"):
            if not 0 <= getattr(self, flag) <= MAX_PERCENT:
                raise UserError(f"--{flag} must be a percentage from 0 to {MAX_PERCENT}")
        if self.distortion_variants < 0:
            raise UserError("--distortion_variants must be 0 (fresh distortions at every step) or more")


def working_size(input_size: tuple[int, int], options: DistortionOptions) -> tuple[int, int]:
    """The (height, width) to decode to: the largest resize any draw asks for."""
    largest_scale = (1 + options.random_crop / 100) * (1 + options.random_scale / 100)
    # The small tolerance keeps float error from adding a pixel (224 * 1.0 * 1.0 stays 224).
    return tuple(math.ceil(side * largest_scale - 1e-6) for side in input_size)


def parameters_from_uniform(uniform: np.ndarray, options: DistortionOptions) -> np.ndarray:
    """Map U(0, 1) draws (n, PARAMETER_COUNT) to distortion parameters float32 (n, PARAMETER_COUNT).

    Columns: scale (>= 1, the resize factor), offset_y and offset_x (where the crop window sits
    in its free range, 0..1), flip (0 or 1), brightness (the pixel multiplier).
    """
    parameters = np.empty_like(uniform, dtype=np.float32)
    parameters[:, SCALE] = (1 + options.random_crop / 100) * (1 + uniform[:, SCALE] * options.random_scale / 100)
    parameters[:, OFFSET_Y] = uniform[:, OFFSET_Y]
    parameters[:, OFFSET_X] = uniform[:, OFFSET_X]
    parameters[:, FLIP] = options.flip_left_right & (uniform[:, FLIP] < 0.5)
    parameters[:, BRIGHTNESS] = 1 + (2 * uniform[:, BRIGHTNESS] - 1) * options.random_brightness / 100
    return parameters


def seeded_rng(*parts: object) -> np.random.Generator:
    """A generator determined by `parts` (any seed, negative too, and any strings)."""
    return np.random.default_rng(int(hashlib.sha256(repr(parts).encode()).hexdigest(), 16))


def variant_parameters(seed: int, key: str, options: DistortionOptions, count: int) -> np.ndarray:
    """Parameters of an image's first `count` variants: float32 (count, PARAMETER_COUNT).

    Row v depends only on (seed, key, settings, v): rows are drawn in order from one generator,
    so more variants extend the same sequence.
    """
    uniform = seeded_rng(seed, key, options.settings_name).random((count, PARAMETER_COUNT))
    return parameters_from_uniform(uniform, options)


def distorted_pixels(working, parameters, output_size: tuple[int, int]):
    """Distort a batch in TensorFlow (eager or in a graph).

    working: uint8 (n, H, W, 3) at the working size; parameters: float32 (n, PARAMETER_COUNT).
    Returns float32 (n, height, width, 3) holding whole numbers in [0, 255].
    """
    import tensorflow as tf

    parameters = tf.convert_to_tensor(parameters, tf.float32)
    working_height, working_width = (tf.cast(tf.shape(working)[axis], tf.float32) for axis in (1, 2))
    height, width = output_size
    # The working image is the source resized to the working size and a draw resizes the source
    # to scale x the output size, so output pixels sit this many working pixels apart.
    step_y = working_height / (parameters[:, SCALE] * height)
    step_x = working_width / (parameters[:, SCALE] * width)
    # Centres of the first and last output pixels, in working pixels (pixel centres at +0.5).
    top = parameters[:, OFFSET_Y] * (working_height - height * step_y) + step_y / 2 - 0.5
    left = parameters[:, OFFSET_X] * (working_width - width * step_x) + step_x / 2 - 0.5
    bottom, right = top + (height - 1) * step_y, left + (width - 1) * step_x
    # crop_and_resize boxes are in units of (size - 1), corner pixel centre to corner pixel centre.
    boxes = tf.stack([top / (working_height - 1), left / (working_width - 1),
                      bottom / (working_height - 1), right / (working_width - 1)], axis=1)
    # crop_and_resize reads uint8 directly: no float copy of the whole working batch.
    cropped = tf.image.crop_and_resize(
        working, boxes, tf.range(tf.shape(boxes)[0]), output_size, method="bilinear")
    flip = parameters[:, FLIP, tf.newaxis, tf.newaxis, tf.newaxis] > 0.5
    flipped = tf.where(flip, tf.reverse(cropped, axis=[2]), cropped)
    brightened = flipped * parameters[:, BRIGHTNESS, tf.newaxis, tf.newaxis, tf.newaxis]
    # Rounding makes a sample exactly a uint8 image, the only kind the device ever feeds.
    return tf.clip_by_value(tf.round(brightened), 0.0, 255.0)


def distort(working: np.ndarray, parameters: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """uint8 (n, H, W, 3) and float32 (n, PARAMETER_COUNT) -> uint8 (n, height, width, 3)."""
    return distorted_pixels(working, parameters, output_size).numpy().astype(np.uint8)


def make_distorted_forward(backbone_model, working: tuple[int, int]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A compiled distort-then-forward pass: uint8 (n, H, W, 3) at the working size and float32
    (n, PARAMETER_COUNT) -> float32 (n, bottleneck_size). One graph, so distorting adds no
    host round trip and the working pixels cross into it as bytes."""
    import tensorflow as tf

    input_size = tuple(backbone_model.input_shape[1:3])

    @tf.function(input_signature=[tf.TensorSpec([None, *working, 3], tf.uint8),
                                  tf.TensorSpec([None, PARAMETER_COUNT], tf.float32)])
    def forward(working_pixels, parameters):
        pixels = distorted_pixels(working_pixels, parameters, input_size)
        return backbone_model((pixels - INPUT_MEAN) / INPUT_STD, training=False)

    return lambda working_pixels, parameters: forward(working_pixels, parameters).numpy()


class WorkingImages:
    """Images decoded at the working size on first use, each decoded once however many
    variants or threads ask for it; uint8 (H, W, 3)."""

    def __init__(self, paths: Sequence[Path], size: tuple[int, int]):
        self.paths, self.size = list(paths), size
        self.images: list[np.ndarray | None] = [None] * len(self.paths)
        self.locks = [threading.Lock() for _ in self.paths]

    def __getitem__(self, index: int) -> np.ndarray:
        with self.locks[index]:
            if self.images[index] is None:
                self.images[index] = load_rgb(self.paths[index], self.size)
            return self.images[index]

    def all(self) -> np.ndarray:
        """uint8 (len(paths), H, W, 3), decoded in parallel."""
        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            return np.stack(list(pool.map(self.__getitem__, range(len(self.paths)))))


def variant_cache(plain_cache: BottleneckCache, options: DistortionOptions, seed: int) -> BottleneckCache:
    """The variants' cache: beside the plain one (same backbone and weights), one folder per
    distortion settings and seed, so changed settings never reuse stale variants."""
    folder = plain_cache.folder.with_name(f"{plain_cache.folder.name}-distorted-{options.settings_name}-seed{seed}")
    return BottleneckCache(folder, plain_cache.size)


def variant_bottlenecks(
    image_paths: Sequence[Path],
    content_keys: Sequence[str],
    options: DistortionOptions,
    seed: int,
    input_size: tuple[int, int],
    forward: Callable[[np.ndarray, np.ndarray], np.ndarray],
    cache: BottleneckCache,
) -> np.ndarray:
    """Bottlenecks of each image's distortion variants: float32 (len(image_paths), K, cache.size).

    content_keys are the images' `file_keys`; forward is `make_distorted_forward(...)` for
    working_size(input_size, options). Only variants
    missing from the cache are computed, and an image is decoded only if one of its variants is missing.
    """
    count = options.distortion_variants
    parameters = np.concatenate([variant_parameters(seed, key, options, count) for key in content_keys])
    keys = [f"{key}-{variant}" for key in content_keys for variant in range(count)]
    images = WorkingImages(image_paths, working_size(input_size, options))
    vectors = compute_cached(keys, lambda index: (images[index // count], parameters[index]), forward, cache,
                             f"distorted bottlenecks ({count} per image)")
    return vectors.reshape(len(image_paths), count, cache.size)


def distorted_training_inputs(
    options: DistortionOptions,
    image_paths: Sequence[Path],
    content_keys: Sequence[str],
    backbone_model,
    plain_cache: BottleneckCache,
    seed: int,
) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """What training feeds the head instead of plain bottlenecks, and its run.json record.

    Returns (sample, record): sample(indices into image_paths) -> float32 (len(indices), d), a
    distorted bottleneck per index; a cached variant chosen at random, or with
    distortion_variants 0, a fresh distortion run through the backbone (the classic mode).
    """
    input_size = tuple(backbone_model.input_shape[1:3])
    size = working_size(input_size, options)
    forward = make_distorted_forward(backbone_model, size)
    record = {**asdict(options), "working_size": list(size)}
    if options.distortion_variants:
        cache = variant_cache(plain_cache, options, seed)
        variants = variant_bottlenecks(image_paths, content_keys, options, seed, input_size, forward, cache)
        rng = seeded_rng(seed, "variant choice")
        record.update(mode="cached variants", variant_cache_dir=str(cache.folder))
        return lambda indices: variants[indices, rng.integers(options.distortion_variants, size=len(indices))], record

    working_images = WorkingImages(image_paths, size).all()
    rng = seeded_rng(seed, "fresh distortions")
    record["mode"] = "fresh at every step"
    return lambda indices: forward(working_images[indices], parameters_from_uniform(
        rng.random((len(indices), PARAMETER_COUNT)), options)), record
