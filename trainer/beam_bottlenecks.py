"""Bottlenecks on Apache Beam: the local cache, filled by DirectRunner, Dataflow, Flink or Spark.

    class folder pattern ─ list (FileSystems) ─ reshuffle ─ read bytes, content key ─ skip cached
    ─ decode + resize (edge/image.py) ─ RunInference (the backbone, batched) ─ write cache entry

Every entry is the one trainer/bottlenecks.py writes, through the same BottleneckCache and
content_key (with Beam's FileSystems as its CacheFiles): same folder, same key, same bytes, so
`retrain-edge train` on that cache computes nothing. The images are the ones `train` would use:
the class folders and file names pass trainer/dataset.py's rules. Needs the `beam` extra; the
device never imports this module.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from edge.image import ImageError, load_rgb
from trainer import UserError
from trainer.backbones import DEFAULT_ARCHITECTURE, build_backbone, get_backbone, weights_id
from trainer.bottlenecks import FORWARD_BATCH_SIZE, BottleneckCache, content_key, make_forward
from trainer.dataset import class_folders, is_image_file_name

log = logging.getLogger(__name__)

DEFAULT_RUNNER = "DirectRunner"
METRICS_NAMESPACE = "retrain_edge.bottlenecks"
LISTED = Metrics.counter(METRICS_NAMESPACE, "images")
CACHED = Metrics.counter(METRICS_NAMESPACE, "cached")
COMPUTED = Metrics.counter(METRICS_NAMESPACE, "computed")
BAD_IMAGES = Metrics.counter(METRICS_NAMESPACE, "bad_images")


@dataclass(frozen=True)
class BeamBottleneckOptions:
    """What `retrain-edge bottlenecks` computes, where, and on which Beam runner."""

    image_dir: str  # a local folder or any Beam FileSystems path (gs://bucket/photos, s3://...)
    bottleneck_dir: str  # the cache root, as train's --bottleneck_dir; local or a FileSystems path
    architecture: str = DEFAULT_ARCHITECTURE
    weights: str = "imagenet"  # as for train; a weights file must be readable at this path on every worker
    seed: int = 0  # draws random weights (--weights none); part of the cache key, as for train
    runner: str = DEFAULT_RUNNER
    pipeline_args: Sequence[str] = field(default_factory=tuple)  # other Beam options, e.g. --project P


@dataclass(frozen=True)
class BeamBottleneckResult:
    """The pipeline's counters: images listed = cached + computed + bad."""

    cache_folder: str
    images: int
    cached: int
    computed: int
    bad_images: int


class BeamFiles:
    """bottlenecks.CacheFiles through Beam's FileSystems: local paths, gs://, s3://, hdfs:// alike.

    On object stores the rename is a copy and a delete; the entry still appears whole or not at all.
    """

    def join(self, folder, name: str) -> str:
        return FileSystems.join(str(folder), name)

    def read(self, path: str) -> bytes | None:
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as file:
            return file.read()

    def write_atomic(self, path: str, data: bytes) -> None:
        # A temporary beside the entry, renamed into place; the random part keeps workers on
        # different machines (same pid, same key) apart.
        folder, name = FileSystems.split(path)
        temporary = FileSystems.join(folder, f".{name}.{uuid.uuid4().hex}.partial")
        with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as file:
            file.write(data)
        FileSystems.rename([temporary], [path])


class BackboneModelHandler(ModelHandler[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]):
    """RunInference's model: the backbone from trainer/backbones.py behind bottlenecks.make_forward.

    Examples are uint8 (h, w, 3) pixels; predictions float32 (bottleneck_size,) vectors. Batches
    are the local pipeline's size, so a worker runs the same forward pass as a workstation.
    """

    def __init__(self, architecture: str, weights: str, seed: int):
        super().__init__(min_batch_size=FORWARD_BATCH_SIZE, max_batch_size=FORWARD_BATCH_SIZE,
                         env_vars={"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")})
        self.architecture, self.weights, self.seed = architecture, weights, seed

    def load_model(self) -> Callable[[np.ndarray], np.ndarray]:
        return make_forward(build_backbone(get_backbone(self.architecture), self.weights, self.seed))

    def run_inference(self, batch: Sequence[np.ndarray], model, inference_args=None) -> list[np.ndarray]:
        return list(model(np.stack(batch)))

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(pixels.nbytes for pixels in batch)


def class_folder_patterns(image_dir: str) -> list[str]:
    """One FileSystems pattern per class folder of image_dir (image_dir/<folder>/*).

    Listing here, before the pipeline starts, turns a bad dataset (no class folders, one, two with
    the same label) into train's error message instead of a failed cluster job. The pipeline lists
    the files again, on the workers, so a million paths never travel in the job graph.
    """
    matched = FileSystems.match([FileSystems.join(image_dir, "*", "*")])[0].metadata_list
    if not matched:
        raise UserError(f"--image_dir {image_dir} does not exist or has no class folders with files in them.")
    folder_names = [FileSystems.split(FileSystems.split(metadata.path)[0])[1] for metadata in matched]
    return [FileSystems.join(image_dir, folder_name, "*") for folder_name in class_folders(folder_names, image_dir).values()]


def is_listed_image(metadata) -> bool:
    return is_image_file_name(FileSystems.split(metadata.path)[1])


def read_keyed(metadata) -> tuple[str, tuple[str, bytes]]:
    """(content key, (path, file bytes)) for a listed image."""
    LISTED.inc()
    with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as file:
        data = file.read()
    return content_key(data), (metadata.path, data)


def is_missing(keyed: tuple[str, tuple[str, bytes]], cache: BottleneckCache) -> bool:
    """Whether the cache lacks a sound entry for this key (a corrupt one counts as missing)."""
    if cache.read(keyed[0]) is None:
        return True
    CACHED.inc()
    return False


def decode(keyed: tuple[str, tuple[str, bytes]], size: tuple[int, int]) -> Iterator[tuple[str, np.ndarray]]:
    """(key, uint8 (h, w, 3) pixels), or nothing for a file that is not a decodable image."""
    key, (path, data) = keyed
    try:
        yield key, load_rgb(data, size)
    except ImageError as error:
        BAD_IMAGES.inc()
        log.warning("skipping %s: %s", path, str(error).split(": ", 1)[1])


def write_entry(keyed_vector: tuple[str, np.ndarray], cache: BottleneckCache) -> None:
    cache.write(*keyed_vector)
    COMPUTED.inc()


def absolute_if_local(path: str) -> str:
    """A local path made absolute (workers need not share the launcher's working folder); URIs unchanged."""
    return path if FileSystems.get_scheme(path) else os.path.abspath(os.path.expanduser(path))


def compute_bottlenecks_on_beam(options: BeamBottleneckOptions) -> BeamBottleneckResult:
    """Fill the bottleneck cache for every image of options.image_dir on a Beam runner; wait for it.

    Raises UserError for a bad dataset, architecture or weights before any pipeline starts.
    """
    image_dir, bottleneck_dir = absolute_if_local(options.image_dir), absolute_if_local(options.bottleneck_dir)
    backbone = get_backbone(options.architecture)
    cache = BottleneckCache.for_backbone(bottleneck_dir, backbone, weights_id(options.weights, options.seed), BeamFiles())
    patterns = class_folder_patterns(image_dir)
    # Built once here only to check that the weights fit (a UserError now, not a failed worker).
    build_backbone(backbone, options.weights, options.seed)

    pipeline = beam.Pipeline(options=PipelineOptions(["--runner", options.runner, *options.pipeline_args]))
    _ = (
        pipeline
        | "Class folders" >> beam.Create(patterns)
        | "List" >> fileio.MatchAll()
        | "Keep images" >> beam.Filter(is_listed_image)
        | "Spread over workers" >> beam.Reshuffle()
        | "Read and key" >> beam.Map(read_keyed)
        | "Skip cached" >> beam.Filter(is_missing, cache)
        | "Decode and resize" >> beam.FlatMap(decode, backbone.input_size)
        | "Backbone" >> RunInference(KeyedModelHandler(BackboneModelHandler(options.architecture, options.weights, options.seed)))
        | "Write entries" >> beam.Map(write_entry, cache)
    )
    result = pipeline.run()
    result.wait_until_finish()
    counts = {"images": 0, "cached": 0, "computed": 0, "bad_images": 0}
    for counter in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]:
        counts[counter.key.metric.name] += counter.committed if counter.committed is not None else counter.attempted
    return BeamBottleneckResult(cache_folder=str(cache.folder), **counts)
