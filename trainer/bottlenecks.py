"""Bottlenecks: the backbone's pooled penultimate output per image, batched and cached on disk.

Cache layout: bottleneck_dir/<architecture>-<weights id>-v<CACHE_FORMAT>/<sha1 of file bytes>.f32
Each entry is the float32 vector followed by its CRC-32, so a truncated or corrupt entry is
detected and recomputed instead of trusted, and nothing is ever unpickled. Keying by content,
not name, means a changed image is recomputed and a renamed one is not.

This layout is also the contract with trainer/beam_bottlenecks.py, which fills the same cache on
a cluster: it uses this module's BottleneckCache and content_key with its own CacheFiles (Beam's
FileSystems), so the two writers cannot drift apart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edge.image import load_rgb
from trainer.backbones import INPUT_MEAN, INPUT_STD, Backbone
from trainer.outputs import write_bytes_atomic

log = logging.getLogger(__name__)

# Bump when preprocessing or the entry layout changes, so old entries are never reused.
CACHE_FORMAT = 2
ENTRY_SUFFIX = ".f32"
CRC_BYTES = 4
# Images per forward pass: large enough to amortise per-call overhead, small enough that a
# batch of 299 px images (32 x 1 MB as float32) stays in cache-friendly memory.
FORWARD_BATCH_SIZE = 32
DECODE_THREADS = max(2, os.cpu_count() or 2)


def default_bottleneck_dir() -> Path:
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "retrain-edge" / "bottlenecks"


def content_key(data: bytes) -> str:
    """The cache key of an image: the SHA-1 of its file's bytes."""
    return hashlib.sha1(data).hexdigest()


def file_key(path: Path) -> str:
    return content_key(Path(path).read_bytes())


class CacheFiles(Protocol):
    """Where cache entries live: this machine's disk (LocalFiles) or Beam's FileSystems."""

    def join(self, folder, name: str): ...
    def read(self, path) -> bytes | None: ...  # None when there is no such file
    # Whole or not at all, creating missing parent folders: an interrupted run leaves no half entry.
    def write_atomic(self, path, data: bytes) -> None: ...


class LocalFiles:
    def join(self, folder, name: str) -> Path:
        return Path(folder) / name

    def read(self, path) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None

    def write_atomic(self, path, data: bytes) -> None:
        write_bytes_atomic(Path(path), data)


LOCAL_FILES = LocalFiles()


@dataclass(frozen=True)
class BottleneckCache:
    """A folder of bottleneck vectors of one length, for one backbone and weights."""

    folder: Path  # or a Beam FileSystems path (gs://..., s3://...) with files=BeamFiles
    size: int  # floats per vector
    files: CacheFiles = LOCAL_FILES

    @classmethod
    def for_backbone(cls, bottleneck_dir, backbone: Backbone, weights_id: str, files: CacheFiles = LOCAL_FILES) -> "BottleneckCache":
        folder = files.join(bottleneck_dir, f"{backbone.name}-{weights_id}-v{CACHE_FORMAT}")
        return cls(folder, backbone.bottleneck_size, files)

    def path(self, key: str):
        return self.files.join(self.folder, f"{key}{ENTRY_SUFFIX}")

    def read(self, key: str) -> np.ndarray | None:
        """The cached vector, or None when missing, truncated or corrupt."""
        path = self.path(key)
        data = self.files.read(path)
        if data is None:
            return None
        expected_length = self.size * 4 + CRC_BYTES
        body, crc = data[:-CRC_BYTES], data[-CRC_BYTES:]
        if len(data) != expected_length or zlib.crc32(body).to_bytes(CRC_BYTES, "little") != crc:
            log.warning("bottleneck cache entry %s is corrupt; recomputing it", path)
            return None
        return np.frombuffer(body, dtype="<f4")

    def write(self, key: str, vector: np.ndarray) -> None:
        """Atomically: an interrupted run leaves whole entries or none."""
        body = np.asarray(vector, dtype="<f4").tobytes()
        self.files.write_atomic(self.path(key), body + zlib.crc32(body).to_bytes(CRC_BYTES, "little"))


def make_forward(backbone_model) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled forward pass: uint8 (batch, h, w, 3) pixels -> float32 (batch, bottleneck_size).

    Normalising inside the graph keeps the host-to-graph copy at one byte per pixel; tf.function
    with a batch-agnostic signature traces once (an eager call is several times slower).
    """
    import tensorflow as tf

    height, width = backbone_model.input_shape[1:3]

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8)])
    def forward(pixels):
        normalised = (tf.cast(pixels, tf.float32) - INPUT_MEAN) / INPUT_STD
        return backbone_model(normalised, training=False)

    return lambda pixels: forward(pixels).numpy()


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=False,
    )


def compute_cached(
    keys: Sequence[str],
    load_pixels: Callable[[int], np.ndarray],
    forward: Callable[[np.ndarray], np.ndarray],
    cache: BottleneckCache,
    description: str = "bottlenecks",
) -> np.ndarray:
    """Bottleneck per key, from the cache or computed: float32 (len(keys), cache.size).

    load_pixels(i) gives uint8 (h, w, 3) for keys[i], or a tuple of arrays that forward takes
    batched as separate arguments (distortions pass (working image, parameters)); it runs in
    worker threads so decoding the next batch overlaps the forward pass of this one (Pillow and
    TF both release the GIL).
    Each computed batch is written to the cache at once, so an interrupted run resumes there.
    """
    vectors = np.empty((len(keys), cache.size), dtype=np.float32)
    missing = []
    for index, key in enumerate(keys):
        cached = cache.read(key)
        if cached is None:
            missing.append(index)
        else:
            vectors[index] = cached
    if not missing:
        log.info("%s: all %d cached", description, len(keys))
        return vectors

    started = time.perf_counter()
    batches = [missing[i:i + FORWARD_BATCH_SIZE] for i in range(0, len(missing), FORWARD_BATCH_SIZE)]
    with ThreadPoolExecutor(DECODE_THREADS) as pool, progress_bar() as progress:
        task = progress.add_task(f"{description} ({len(keys) - len(missing)} cached)", total=len(missing), rate="")
        pending = [pool.submit(load_pixels, index) for index in batches[0]]
        for number, batch in enumerate(batches):
            loaded = [future.result() for future in pending]
            if number + 1 < len(batches):
                pending = [pool.submit(load_pixels, index) for index in batches[number + 1]]
            parts = zip(*loaded) if isinstance(loaded[0], tuple) else [loaded]
            batch_vectors = forward(*(np.stack(part) for part in parts))
            for index, vector in zip(batch, batch_vectors):
                vectors[index] = vector
                cache.write(keys[index], vector)
            done = progress.tasks[task].completed + len(batch)
            progress.update(task, completed=done, rate=f"{done / (time.perf_counter() - started):.1f} images/s")
    return vectors


def file_keys(paths: Sequence[Path]) -> list[str]:
    """file_key of each path, hashed in worker threads (hashlib releases the GIL on large data)."""
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        return list(pool.map(file_key, paths))


def image_bottlenecks(
    image_paths: Sequence[Path], keys: Sequence[str], size: tuple[int, int], forward, cache: BottleneckCache
) -> np.ndarray:
    """Bottlenecks of undistorted image files: float32 (len(image_paths), cache.size).

    keys are `file_keys(image_paths)`, taken by the caller, which needs them too (distortion
    variants, duplicate detection), so no file is read twice for its hash.
    """
    return compute_cached(keys, lambda index: load_rgb(image_paths[index], size), forward, cache)
