"""Standard TFLite Model Metadata for a converted classifier, the layout Model Maker wrote.

What MediaPipe Tasks, the TFLite Task Library and Android Studio's model binding read:
- a `Model.metadata` entry named TFLITE_METADATA whose buffer holds a ModelMetadata flatbuffer
  (file identifier "M001", tensorflow/lite metadata_schema.fbs, as MediaPipe ships it): model
  name, description, version; the input as an RGB image with NormalizationOptions (mean, std)
  and its value range; the output as class probabilities whose labels are an associated file of
  type TENSOR_AXIS_LABELS; the minimum metadata parser version;
- the associated file itself, labels.txt, in an uncompressed zip appended to the flatbuffer;
- a `retrain_edge` entry (UTF-8 JSON) for provenance the standard has no field for.

Written on the `flatbuffers` package directly: the maintained writers do not install beside
TensorFlow 2.21 (tflite-support 0.4.4 pins protobuf 3.20; MediaPipe's writers import a native
module its wheel lacks, and MediaPipe brings its own OpenCV). `make interop-check` reads the
result back with MediaPipe's schema module and runs it in MediaPipe Tasks.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np

from edge.model import (
    ASSOCIATED_FILE_TYPE_LABELS, COLOR_SPACE_RGB, CONTENT_FEATURE, CONTENT_IMAGE, METADATA_NAME,
    PROCESS_UNIT_NORMALIZATION, STANDARD_METADATA_IDENTIFIER, STANDARD_METADATA_NAME, TFLITE_MAGIC,
)
from trainer.outputs import LABELS_FILE, labels_text

PROVENANCE_FORMAT = 2  # version of the `retrain_edge` JSON entry; 1 also held labels and normalisation
# Every field written here exists since metadata schema 1.0.0 (AssociatedFile.version, 1.4.1, is not used).
MIN_PARSER_VERSION = "1.0.0"
# A fixed timestamp keeps the appended zip, and so the model file, the same for the same model.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
LABELS_DESCRIPTION = "Labels for categories that the model can recognize."
_UINT8_RANGE = ([0.0], [255.0])
_PROBABILITY_RANGE = ([0.0], [1.0])
_TENSOR_TYPE_UINT8 = 3  # TFLite schema TensorType; FLOAT32 is 0


def add_metadata(tflite_bytes: bytes, labels: list[str], input_mean: float, input_std: float,
                 provenance: dict) -> bytes:
    """A converted .tflite with standard metadata, labels.txt appended, and our provenance entry.

    provenance: JSON-able facts the standard cannot hold (architecture, input size, mode);
    "format_version" is added. Adding metadata again replaces the earlier entries.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tflite_bytes, 0))
    graph = model.subgraphs[0]
    input_type = graph.tensors[graph.inputs[0]].type
    output_type = graph.tensors[graph.outputs[0]].type
    standard = model_metadata(
        labels, input_mean, input_std, quantized_input=input_type == _TENSOR_TYPE_UINT8,
        quantized_output=output_type == _TENSOR_TYPE_UINT8, name=provenance.get("architecture"),
        version=hashlib.sha256(tflite_bytes).hexdigest()[:12])
    entries = {STANDARD_METADATA_NAME: standard,
               METADATA_NAME: json.dumps({"format_version": PROVENANCE_FORMAT, **provenance}).encode()}
    model.metadata = model.metadata or []
    for name, content in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(content, dtype=np.uint8)
        existing = [entry for entry in model.metadata if entry.name in (name, name.encode())]
        if existing:
            model.buffers[existing[0].buffer] = buffer
            continue
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(len(tflite_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_MAGIC)

    packed = io.BytesIO(bytes(builder.Output()))
    packed.seek(0, io.SEEK_END)
    with zipfile.ZipFile(packed, "a") as archive:  # "a" on a non-zip appends a zip after the flatbuffer
        member = zipfile.ZipInfo(LABELS_FILE, date_time=ZIP_TIMESTAMP)
        member.external_attr = 0o644 << 16
        archive.writestr(member, labels_text(labels), compress_type=zipfile.ZIP_STORED)
    return packed.getvalue()


def model_metadata(labels: list[str], input_mean: float, input_std: float, quantized_input: bool,
                   quantized_output: bool, name: str | None, version: str) -> bytes:
    """The ModelMetadata flatbuffer of a one-input, one-output image classifier.

    The value ranges (Stats) are those of the tensors as stored: 0..255 for uint8, else the
    normalised pixel range for the input and probabilities for the output.
    """
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    string = builder.CreateString

    def floats(values: list[float]) -> int:
        builder.StartVector(4, len(values), 4)
        for value in reversed(values):
            builder.PrependFloat32(value)
        return builder.EndVector()

    def offsets(items: list[int]) -> int:
        builder.StartVector(4, len(items), 4)
        for item in reversed(items):
            builder.PrependUOffsetTRelative(item)
        return builder.EndVector()

    def table(references: dict[int, int] | None = None, small_numbers: dict[int, int] | None = None) -> int:
        """A table from field slot -> offset of a child, and field slot -> byte-sized enum value."""
        references, small_numbers = references or {}, small_numbers or {}
        builder.StartObject(max([*references, *small_numbers], default=-1) + 1)
        for slot, reference in references.items():
            builder.PrependUOffsetTRelativeSlot(slot, reference, 0)
        for slot, number in small_numbers.items():
            builder.PrependUint8Slot(slot, number, 0)
        return builder.EndObject()

    def stats(minimum: list[float], maximum: list[float]) -> int:
        return table({0: floats(maximum), 1: floats(minimum)})  # Stats: max, min

    pixel_range = _UINT8_RANGE if quantized_input else (
        [(0.0 - input_mean) / input_std], [(255.0 - input_mean) / input_std])
    # TensorMetadata slots: name 0, description 1, content 3, process_units 4, stats 5, associated_files 6.
    # Content: content_properties_type 0, content_properties 1. ProcessUnit: options_type 0, options 1.
    image = table({
        0: string("image"),
        1: string(f"Input image to be classified: RGB, normalised as (pixel - {input_mean:g}) / {input_std:g}."),
        3: table({1: table(small_numbers={0: COLOR_SPACE_RGB})}, {0: CONTENT_IMAGE}),
        4: offsets([table({1: table({0: floats([input_mean]), 1: floats([input_std])})},
                          {0: PROCESS_UNIT_NORMALIZATION})]),
        5: stats(*pixel_range),
    })
    label_file = table({0: string(LABELS_FILE), 1: string(LABELS_DESCRIPTION)}, {2: ASSOCIATED_FILE_TYPE_LABELS})
    probability = table({
        0: string("probability"),
        1: string("Probabilities of the labels respectively."),
        3: table({1: table()}, {0: CONTENT_FEATURE}),
        5: stats(*(_UINT8_RANGE if quantized_output else _PROBABILITY_RANGE)),
        6: offsets([label_file]),
    })
    subgraph = table({2: offsets([image]), 3: offsets([probability])})  # input and output tensor metadata
    root = table({
        0: string(f"{name} image classifier" if name else "image classifier"),
        1: string(f"Identifies the most prominent object in the image as one of {len(labels)} categories "
                  f"({', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''}); final layer retrained "
                  f"with retrain-edge."),
        2: string(version),
        3: offsets([subgraph]),
        7: string(MIN_PARSER_VERSION),
    })
    builder.Finish(root, file_identifier=STANDARD_METADATA_IDENTIFIER)
    return bytes(builder.Output())
