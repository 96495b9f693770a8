"""Loading a TFLite image classifier and running one image through it, without TensorFlow.

Any standard classifier works, not only ours: the input size, dtype and quantisation come from
the model itself; labels and the float normalisation come from the standard TFLite Model
Metadata inside the model (see `read_metadata`), else from labels.txt beside it, else from
defaults.
"""

from __future__ import annotations

import ctypes
import json
import logging
import mmap
import os
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import UserError
from .logs import start_up_lines_hidden

logger = logging.getLogger(__name__)

TFLITE_MAGIC = b"TFL3"  # flatbuffer file identifier, at bytes 4..8 of every .tflite file
METADATA_NAME = "retrain_edge"  # Model.metadata entry holding our provenance JSON (see trainer/metadata.py)
# Where `edge-classify` looks when --model is not given, relative to the working folder: the
# output of `retrain-edge train` + `convert` first, then a model copied onto a device by hand.
DEFAULT_MODEL_PATHS = (Path("retrain_output") / "model.tflite", Path("model.tflite"))
LABELS_FILE_NAME = "labels.txt"
DEFAULT_INPUT_MEAN = 127.5  # pixel value that maps to 0.0; float input = (pixel - mean) / std
DEFAULT_INPUT_STD = 127.5
# A quantized input whose mapping from pixels differs from the identity by at most this many
# units is fed the raw pixels: the hosted uint8 models (scale 1/128, zero point 128) are meant
# to be used that way, and their scale is only a rounded stand-in for 1/127.5.
RAW_PIXEL_TOLERANCE = 1
DELEGATE_ENTRY_POINT = "tflite_plugin_create_delegate"  # what every external delegate library exports
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"  # the op edgetpu_compiler puts in a model; only libedgetpu runs it
_CHANNELS = np.arange(3)  # indexes a per-channel pixel table along its second axis

# TFLite schema field numbers (tensorflow/compiler/mlir/lite/schema/schema.fbs).
_MODEL_BUFFERS, _MODEL_METADATA = 4, 6
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2
_METADATA_NAME, _METADATA_BUFFER = 0, 1

# Standard TFLite Model Metadata (metadata_schema.fbs, as MediaPipe ships it): the Model.metadata
# entry, its flatbuffer's identifier, the enum values used, and the field numbers read here.
STANDARD_METADATA_NAME = "TFLITE_METADATA"
STANDARD_METADATA_IDENTIFIER = b"M001"
CONTENT_FEATURE, CONTENT_IMAGE = 1, 2  # ContentProperties union types
COLOR_SPACE_RGB = 1
PROCESS_UNIT_NORMALIZATION = 1  # ProcessUnitOptions union type
ASSOCIATED_FILE_TYPE_LABELS = 2  # TENSOR_AXIS_LABELS
_MODEL_METADATA_SUBGRAPHS = 3
_SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS = 2, 3
_TENSOR_PROCESS_UNITS, _TENSOR_ASSOCIATED_FILES = 4, 6
_PROCESS_UNIT_OPTIONS_TYPE, _PROCESS_UNIT_OPTIONS = 0, 1
_NORMALIZATION_MEAN, _NORMALIZATION_STD = 0, 1
_FILE_NAME, _FILE_TYPE = 0, 2


# The tables of the TFLite schema that check_model_file walks: field number -> what the field
# holds: ("table", name), ("tables", name), ("vector", element bytes), ("string",) or ("union",),
# a table of a type the walk does not need to know (operator options), checked as a table only.
_SCHEMA = {
    "Model": {1: ("tables", "OperatorCode"), 2: ("tables", "SubGraph"), 3: ("string",), 4: ("tables", "Buffer"),
              5: ("vector", 4), 6: ("tables", "Metadata"), 7: ("tables", "SignatureDef")},
    "OperatorCode": {1: ("string",)},
    "SubGraph": {0: ("tables", "Tensor"), 1: ("vector", 4), 2: ("vector", 4), 3: ("tables", "Operator"), 4: ("string",)},
    "Tensor": {0: ("vector", 4), 3: ("string",), 4: ("table", "QuantizationParameters"), 6: ("union",),
               7: ("vector", 4), 9: ("tables", "VariantSubType")},
    "VariantSubType": {0: ("vector", 4)},
    "QuantizationParameters": {0: ("vector", 4), 1: ("vector", 4), 2: ("vector", 4), 3: ("vector", 8), 5: ("union",)},
    "Operator": {1: ("vector", 4), 2: ("vector", 4), 4: ("union",), 5: ("vector", 1), 7: ("vector", 1),
                 8: ("vector", 4), 12: ("union",)},
    "Buffer": {0: ("vector", 1)},
    "Metadata": {0: ("string",)},
    "SignatureDef": {0: ("tables", "TensorMap"), 1: ("tables", "TensorMap"), 2: ("string",)},
    "TensorMap": {0: ("string",)},
}
_TENSOR_BUFFER, _OPERATOR_OPCODE, _METADATA_BUFFER_INDEX = 2, 0, 1
_SUBGRAPH_TENSORS, _SUBGRAPH_GRAPH_INPUTS, _SUBGRAPH_GRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 0, 1, 2, 3
_OPERATOR_INPUTS, _OPERATOR_OUTPUTS = 1, 2
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS = 1, 2


class DamagedModel(ValueError):
    """A .tflite file whose flatbuffer points outside itself or at things it does not hold."""


def interpreter_class() -> type:
    """The TFLite Interpreter class: LiteRT, else tflite-runtime where a device has only that.

    Never TensorFlow's, not even as a fallback: the runtime's promise is that it never imports it.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            # The base install brings LiteRT wherever it has a wheel; elsewhere, say where it has one.
            raise UserError("no TFLite interpreter is installed: pip install ai-edge-litert, which has wheels for "
                            "Linux x86_64 and aarch64 (a Pi on a 64-bit OS), macOS arm64 and Windows x86_64") from None
    return Interpreter


class _FlatTable:
    """Just enough of a flatbuffer reader to walk a .tflite Model and its ModelMetadata."""

    def __init__(self, data: bytes | mmap.mmap, position: int):
        self.data, self.position = data, position
        vtable = position - struct.unpack_from("<i", data, position)[0]
        self.vtable_size = struct.unpack_from("<H", data, vtable)[0]
        self.vtable = vtable

    @classmethod
    def root(cls, data: bytes | mmap.mmap) -> _FlatTable:
        return cls(data, struct.unpack_from("<I", data, 0)[0])

    def _field(self, field: int) -> int | None:
        entry = 4 + 2 * field
        if entry >= self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.data, self.vtable + entry)[0]
        return self.position + offset if offset else None

    def scalar(self, field: int, fmt: str, default: int = 0) -> int:
        position = self._field(field)
        return default if position is None else struct.unpack_from(fmt, self.data, position)[0]

    def _target(self, field: int) -> int | None:
        position = self._field(field)
        return None if position is None else position + struct.unpack_from("<I", self.data, position)[0]

    def byte_vector(self, field: int) -> bytes | None:
        """A [ubyte] vector or a string (without its terminating zero)."""
        target = self._target(field)
        if target is None:
            return None
        length = struct.unpack_from("<I", self.data, target)[0]
        return bytes(self.data[target + 4 : target + 4 + length])

    def float_vector(self, field: int) -> list[float]:
        target = self._target(field)
        if target is None:
            return []
        length = struct.unpack_from("<I", self.data, target)[0]
        return list(struct.unpack_from(f"<{length}f", self.data, target + 4))

    def table(self, field: int) -> _FlatTable | None:
        target = self._target(field)
        return None if target is None else type(self)(self.data, target)

    def tables(self, field: int) -> list[_FlatTable]:
        target = self._target(field)
        if target is None:
            return []
        count = struct.unpack_from("<I", self.data, target)[0]
        elements = (target + 4 + 4 * i for i in range(count))
        return [_FlatTable(self.data, e + struct.unpack_from("<I", self.data, e)[0]) for e in elements]


class _CheckedTable(_FlatTable):
    """A flatbuffer table whose every offset is checked to land inside the file before it is followed."""

    def __init__(self, data: bytes | mmap.mmap, position: int):
        _within(data, position, 4, "a table")
        vtable = position - struct.unpack_from("<i", data, position)[0]
        _within(data, vtable, 4, "a table's field list")
        vtable_size, table_size = struct.unpack_from("<HH", data, vtable)
        if vtable_size < 4 or vtable_size % 2:
            raise DamagedModel(f"a field list of {vtable_size} bytes at byte {vtable}")
        _within(data, vtable, vtable_size, "a table's field list")
        _within(data, position, max(table_size, 4), "a table")
        super().__init__(data, position)
        self.table_size = table_size

    def _field(self, field: int) -> int | None:
        position = super()._field(field)
        # Every field lies inside its table, which was checked to lie inside the file.
        if position is not None and position - self.position >= self.table_size:
            raise DamagedModel(f"a field at byte {position} lies past the end of its table")
        return position

    def scalar(self, field: int, fmt: str, default: int = 0) -> int:
        position = self._field(field)
        if position is None:
            return default
        _within(self.data, position, struct.calcsize(fmt), "a field")
        return struct.unpack_from(fmt, self.data, position)[0]

    def _target(self, field: int) -> int | None:
        position = self._field(field)
        if position is None:
            return None
        _within(self.data, position, 4, "an offset")
        return position + struct.unpack_from("<I", self.data, position)[0]

    def vector(self, field: int, element_size: int) -> tuple[int, int] | None:
        """(position of the first element, count) of a vector field, checked to fit in the file."""
        target = self._target(field)
        if target is None:
            return None
        _within(self.data, target, 4, "a vector")
        count = struct.unpack_from("<I", self.data, target)[0]
        _within(self.data, target + 4, count * element_size, "a vector")
        return target + 4, count

    def integers(self, field: int) -> list[int]:
        located = self.vector(field, 4)
        return [] if located is None else list(struct.unpack_from(f"<{located[1]}i", self.data, located[0]))

    def tables(self, field: int) -> list[_CheckedTable]:
        located = self.vector(field, 4)
        if located is None:
            return []
        elements = (located[0] + 4 * i for i in range(located[1]))
        return [_CheckedTable(self.data, e + struct.unpack_from("<I", self.data, e)[0]) for e in elements]


def _within(data: bytes | mmap.mmap, start: int, length: int, what: str) -> None:
    if start < 0 or length < 0 or start + length > len(data):
        raise DamagedModel(f"{what} at byte {start} runs past the end of the file ({len(data)} bytes)")


def _check_tables(table: _CheckedTable, kind: str) -> None:
    """Check every offset of `table` (of schema type `kind`) and of the tables below it."""
    for field, (holds, *detail) in _SCHEMA[kind].items():
        if holds == "table":
            child = table.table(field)
            if child is not None:
                _check_tables(child, detail[0])
        elif holds == "tables":
            for child in table.tables(field):
                _check_tables(child, detail[0])
        elif holds == "vector":
            table.vector(field, detail[0])
        elif holds == "union":
            table.table(field)
        else:
            text = table.vector(field, 1)
            if text is not None:
                try:
                    bytes(table.data[text[0] : text[0] + text[1]]).decode("utf-8")
                except UnicodeDecodeError:
                    raise DamagedModel(f"a name at byte {text[0]} is not text") from None


def _check_references(model: _CheckedTable, size: int) -> None:
    """Indices between the model's parts point at parts that exist; buffers kept after the
    flatbuffer (models over 2 GB) lie inside the file."""
    buffers = model.tables(_MODEL_BUFFERS)
    for index, buffer in enumerate(buffers):
        offset, length = buffer.scalar(_BUFFER_OFFSET, "<Q"), buffer.scalar(_BUFFER_SIZE, "<Q")
        if offset > 1 and offset + length > size:
            raise DamagedModel(f"buffer {index} ends at byte {offset + length}, past the end of the file ({size} bytes)")
    for entry in model.tables(_MODEL_METADATA):
        if entry.scalar(_METADATA_BUFFER_INDEX, "<I") >= len(buffers):
            raise DamagedModel("a metadata entry names a buffer the model does not have")
    operator_codes = len(model.tables(_MODEL_OPERATOR_CODES))
    for subgraph in model.tables(_MODEL_SUBGRAPHS):
        tensors = subgraph.tables(_SUBGRAPH_TENSORS)
        if any(tensor.scalar(_TENSOR_BUFFER, "<I") >= len(buffers) for tensor in tensors):
            raise DamagedModel("a tensor names a buffer the model does not have")
        indices = subgraph.integers(_SUBGRAPH_GRAPH_INPUTS) + subgraph.integers(_SUBGRAPH_GRAPH_OUTPUTS)
        for operator in subgraph.tables(_SUBGRAPH_OPERATORS):
            if operator.scalar(_OPERATOR_OPCODE, "<I") >= operator_codes:
                raise DamagedModel("an operator names an operator code the model does not have")
            # -1 marks an optional input left out.
            indices += [i for i in operator.integers(_OPERATOR_INPUTS) + operator.integers(_OPERATOR_OUTPUTS) if i != -1]
        if any(not 0 <= index < len(tensors) for index in indices):
            raise DamagedModel("an operator or the graph names a tensor the model does not have")


def check_model_file(path: Path) -> None:
    """Raise UserError unless `path` holds a TFLite flatbuffer whose offsets, buffers and indices
    all stay inside it: the check LiteRT's loader does not fully make, so a truncated or
    damaged file is one error line, never a crash inside the interpreter."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                _within(data, 0, 4, "the root offset")
                model = _CheckedTable(data, struct.unpack_from("<I", data, 0)[0])
                _check_tables(model, "Model")
                _check_references(model, size)
            except DamagedModel as error:
                raise UserError(f"{path} is damaged ({error}): copy it again, or convert it again with "
                                "retrain-edge convert") from None


def read_metadata(path: str | Path) -> dict:
    """What a .tflite file's metadata says, or {} when it has none; never raises for bad metadata.

    From the standard TFLite Model Metadata (any writer: ours, Model Maker's, MediaPipe's):
    "labels" (list[str], in output order: the output's TENSOR_AXIS_LABELS file from the zip
    appended to the model), "input_mean" and "input_std" (list[float], one value or one per
    channel: the input's NormalizationOptions). "retrain_edge": our own entry, provenance only
    ("format_version", "architecture", "input_size", "quantization").
    """
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            entries = _metadata_entries(data)
            metadata, label_file = {}, None
            if METADATA_NAME in entries:
                metadata[METADATA_NAME] = json.loads(entries[METADATA_NAME].rstrip(b"\0").decode("utf-8"))
            if STANDARD_METADATA_NAME in entries:
                standard, label_file = _standard_metadata(entries[STANDARD_METADATA_NAME])
                metadata.update(standard)
        except (struct.error, IndexError, UnicodeDecodeError, ValueError) as error:
            logger.warning(f"{path}: ignoring its unreadable metadata ({type(error).__name__}: {error})")
            return {}
        if label_file is not None:
            try:
                metadata["labels"] = _associated_labels(file, label_file)
            # A damaged zip raises any of these, by where the damage is.
            except (KeyError, zipfile.BadZipFile, UnicodeDecodeError, NotImplementedError, EOFError, zlib.error):
                logger.warning(f"{path}: its metadata names the label file {label_file}, which the model "
                               f"does not hold; looking for labels elsewhere")
    return metadata


def _metadata_entries(data: mmap.mmap) -> dict[str, bytes]:
    """Model.metadata name -> the content of its buffer."""
    model = _FlatTable.root(data)
    entries = {}
    for entry in model.tables(_MODEL_METADATA):
        buffer = model.tables(_MODEL_BUFFERS)[entry.scalar(_METADATA_BUFFER, "<I")]
        content = buffer.byte_vector(_BUFFER_DATA)
        if not content:  # models over 2 GB keep buffers after the flatbuffer
            offset, size = buffer.scalar(_BUFFER_OFFSET, "<Q"), buffer.scalar(_BUFFER_SIZE, "<Q")
            content = bytes(data[offset : offset + size])
        entries[(entry.byte_vector(_METADATA_NAME) or b"").decode("utf-8")] = content
    return entries


def _standard_metadata(content: bytes) -> tuple[dict, str | None]:
    """A ModelMetadata flatbuffer -> ({"input_mean", "input_std"} when given, name of the label file)."""
    if content[4:8] != STANDARD_METADATA_IDENTIFIER:
        raise ValueError(f"{STANDARD_METADATA_NAME} is not a {STANDARD_METADATA_IDENTIFIER.decode()} flatbuffer")
    subgraphs = _FlatTable.root(content).tables(_MODEL_METADATA_SUBGRAPHS)
    if not subgraphs:
        return {}, None
    normalisation, label_file = {}, None
    for tensor in subgraphs[0].tables(_SUBGRAPH_INPUTS)[:1]:
        for unit in tensor.tables(_TENSOR_PROCESS_UNITS):
            options = unit.table(_PROCESS_UNIT_OPTIONS)
            if unit.scalar(_PROCESS_UNIT_OPTIONS_TYPE, "<B") == PROCESS_UNIT_NORMALIZATION and options is not None:
                normalisation = {"input_mean": options.float_vector(_NORMALIZATION_MEAN),
                                 "input_std": options.float_vector(_NORMALIZATION_STD)}
                break
    for tensor in subgraphs[0].tables(_SUBGRAPH_OUTPUTS)[:1]:
        names = [file.byte_vector(_FILE_NAME) for file in tensor.tables(_TENSOR_ASSOCIATED_FILES)
                 if file.scalar(_FILE_TYPE, "<b") == ASSOCIATED_FILE_TYPE_LABELS]
        label_file = names[0].decode("utf-8") if names and names[0] else None
    return normalisation, label_file


def _associated_labels(model_file: BinaryIO, name: str) -> list[str]:
    """The labels in file `name` of the zip that standard metadata appends to the model.

    Raises KeyError when the metadata names a file the zip does not hold.
    """
    with zipfile.ZipFile(model_file) as archive:
        return parse_labels(archive.read(name).decode("utf-8"))


def parse_labels(text: str) -> list[str]:
    """One label per line, in output order; trailing blank lines are not labels."""
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    return labels


def find_model(model_path: str | Path | None) -> Path:
    """The model file to use: `model_path`, else the first of DEFAULT_MODEL_PATHS that exists.

    Raises UserError for a missing, empty or non-TFLite file.
    """
    if model_path is None:
        found = [path for path in DEFAULT_MODEL_PATHS if path.is_file()]
        if not found:
            tried = " or ".join(str(path) for path in DEFAULT_MODEL_PATHS)
            raise UserError(f"no --model given and no model found at {tried} in {Path.cwd()}")
        model_path = found[0]
    model_path = Path(model_path)
    if not model_path.is_file():
        raise UserError(f"model file {model_path} does not exist")
    with open(model_path, "rb") as file:
        header = file.read(8)
    if not header:
        raise UserError(f"model file {model_path} is empty")
    if header[4:8] != TFLITE_MAGIC:
        raise UserError(f"{model_path} is not a TFLite model (no {TFLITE_MAGIC.decode()} marker); "
                        "convert a trained model with: retrain-edge convert")
    return model_path


@dataclass
class Model:
    """A loaded classifier: one RGB image in, one score per label out."""

    path: Path
    interpreter: object
    input_index: int
    output_index: int
    input_size: tuple[int, int]  # (height, width)
    input_dtype: type
    labels: list[str]
    input_mean: float | tuple[float, float, float]  # one value for all channels, or R, G, B
    input_std: float | tuple[float, float, float]
    pixel_table: np.ndarray | None  # uint8 pixel -> quantized input, (256,) or (256, 3) per channel; None: raw pixels or float
    output_scale: float  # 0.0 for float outputs
    output_zero_point: int

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (height, width, 3) RGB at input_size -> the input tensor (1, height, width, 3)."""
        if self.input_dtype == np.float32:
            tensor = (pixels.astype(np.float32) - np.float32(self.input_mean)) / np.float32(self.input_std)
        elif self.pixel_table is None:
            tensor = pixels
        elif self.pixel_table.ndim == 2:
            tensor = self.pixel_table[pixels, _CHANNELS]
        else:
            tensor = self.pixel_table[pixels]
        return tensor[np.newaxis]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Input tensor (1, height, width, 3) -> float32 scores (num_labels,), dequantised."""
        self.interpreter.set_tensor(self.input_index, tensor)
        try:
            self.interpreter.invoke()
        except RuntimeError as error:  # a damaged model that loads, e.g. a constant tensor without its data
            raise UserError(f"{self.path} could not run ({' '.join(str(error).split())}): copy it again, "
                            "or convert it again with retrain-edge convert") from None
        output = self.interpreter.get_tensor(self.output_index).reshape(-1)
        if self.output_scale:
            return (output.astype(np.float32) - np.float32(self.output_zero_point)) * np.float32(self.output_scale)
        return output.astype(np.float32, copy=False)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (height, width, 3) RGB at input_size -> float32 scores (num_labels,)."""
        return self.infer(self.preprocess(pixels))


def quantization_table(dtype: type, scale: float, zero_point: int, mean: float | tuple, std: float | tuple) -> np.ndarray | None:
    """Map each uint8 pixel to the quantized input: q = round((pixel - mean) / std / scale + zero_point).

    Returns a table of `dtype`, (256,) or (256, 3) for per-channel mean and std, or None when
    the table is the identity within RAW_PIXEL_TOLERANCE for a uint8 input, i.e. the model
    takes the raw pixels.
    """
    info = np.iinfo(dtype)
    pixels = np.arange(256, dtype=np.float64)
    if np.ndim(mean) or np.ndim(std):
        pixels = pixels[:, np.newaxis]
    quantized = np.clip(np.round((pixels - mean) / std / scale + zero_point), info.min, info.max)
    if dtype == np.uint8 and np.abs(quantized - pixels).max() <= RAW_PIXEL_TOLERANCE:
        return None
    return quantized.astype(dtype)


def load_model(model_path: str | Path | None = None, labels_path: str | Path | None = None,
               num_threads: int | None = None, input_mean: float | None = None,
               input_std: float | None = None, delegate_path: str | Path | None = None) -> Model:
    """Load a .tflite classifier (see find_model for the default path) with its labels.

    Labels: `labels_path`, else the model's metadata, else labels.txt beside the model, else the
    class indices (with a warning). input_mean/input_std: the arguments, else the metadata, else 127.5.
    delegate_path: an external delegate library (e.g. libedgetpu.so.1) the interpreter hands ops to.
    """
    path = find_model(model_path)
    check_model_file(path)
    metadata = read_metadata(path)
    interpreter_type = interpreter_class()
    try:
        with start_up_lines_hidden():  # LiteRT announces its delegates when it creates them
            delegates = [] if delegate_path is None else [_load_delegate(interpreter_type, delegate_path)]
            interpreter = interpreter_type(model_path=str(path), num_threads=num_threads or os.cpu_count(),
                                           experimental_delegates=delegates)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        if delegate_path is not None:
            raise UserError(f"{path} could not be loaded with the delegate {delegate_path}; was the model compiled "
                            f"for it? ({' '.join(str(error).split())})") from None
        if EDGETPU_CUSTOM_OP in str(error):
            raise UserError(f"{path} was compiled for a Coral Edge TPU: pass --delegate libedgetpu.so.1") from None
        raise UserError(f"{path} could not be loaded as a TFLite model ({str(error).strip()})") from None

    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    shape = input_detail["shape"]
    if len(shape) != 4 or shape[3] != 3:
        raise UserError(f"{path} is not an image classifier: its input shape is {list(shape)}, not [1, height, width, 3]")
    input_dtype = input_detail["dtype"]
    if input_dtype not in (np.float32, np.uint8, np.int8):
        raise UserError(f"{path} takes {np.dtype(input_dtype).name} input; only float32, uint8 and int8 are supported")
    num_outputs = int(np.prod(output_detail["shape"]))

    labels = _labels(path, labels_path, metadata, num_outputs)
    mean = _normalisation(path, "mean", input_mean, metadata.get("input_mean"), DEFAULT_INPUT_MEAN)
    std = _normalisation(path, "std", input_std, metadata.get("input_std"), DEFAULT_INPUT_STD)
    if 0 in np.atleast_1d(std):
        raise UserError("--input_std must not be 0" if input_std is not None else f"{path}'s metadata gives a std of 0")
    pixel_table = None
    if input_dtype != np.float32:
        scale, zero_point = input_detail["quantization"]
        pixel_table = quantization_table(input_dtype, scale or 1.0, zero_point, mean, std)
    output_scale, output_zero_point = output_detail["quantization"]
    return Model(path=path, interpreter=interpreter, input_index=input_detail["index"],
                 output_index=output_detail["index"], input_size=(int(shape[1]), int(shape[2])),
                 input_dtype=input_dtype, labels=labels, input_mean=mean, input_std=std,
                 pixel_table=pixel_table,
                 output_scale=float(output_scale) if output_detail["dtype"] != np.float32 else 0.0,
                 output_zero_point=int(output_zero_point))


def _load_delegate(interpreter_type: type, delegate_path: str | Path) -> object:
    """The interpreter library's own load_delegate(delegate_path), failures told as one UserError line.

    The library is opened first to check it is a delegate: LiteRT's loader, given any other shared
    library, fails with a traceback printed from its destructor.
    """
    hint = "for a Coral Edge TPU install libedgetpu (https://coral.ai/software) and pass --delegate libedgetpu.so.1"
    try:
        library = ctypes.CDLL(str(delegate_path))
    except OSError as error:
        raise UserError(f"cannot load the delegate {delegate_path} ({error}); {hint}") from None
    if not hasattr(library, DELEGATE_ENTRY_POINT):
        raise UserError(f"{delegate_path} is not a TFLite delegate (it has no {DELEGATE_ENTRY_POINT}); {hint}")
    try:
        return sys.modules[interpreter_type.__module__].load_delegate(str(delegate_path))
    except (ValueError, RuntimeError) as error:
        raise UserError(f"cannot load the delegate {delegate_path} ({' '.join(str(error).split())})") from None


def _normalisation(model_path: Path, name: str, argument: float | None, from_metadata: list[float] | None,
                   default: float) -> float | tuple[float, float, float]:
    """The argument, else the metadata's value (one, or one per channel), else the default."""
    if argument is not None:
        return float(argument)
    if not from_metadata:
        return default
    if len(set(from_metadata)) == 1:
        return float(from_metadata[0])
    if len(from_metadata) != 3:
        raise UserError(f"{model_path}'s metadata gives {len(from_metadata)} normalisation {name} values "
                        f"for a 3-channel input; pass --input_mean and --input_std")
    return tuple(float(value) for value in from_metadata)


def _labels(model_path: Path, labels_path: str | Path | None, metadata: dict, num_outputs: int) -> list[str]:
    beside = model_path.parent / LABELS_FILE_NAME
    if labels_path is not None:
        labels_path = Path(labels_path)
        if not labels_path.is_file():
            raise UserError(f"labels file {labels_path} does not exist")
        labels, origin = parse_labels(labels_path.read_text(encoding="utf-8")), str(labels_path)
    elif metadata.get("labels"):
        labels, origin = [str(label) for label in metadata["labels"]], f"the metadata of {model_path}"
    elif beside.is_file():
        labels, origin = parse_labels(beside.read_text(encoding="utf-8")), str(beside)
    else:
        logger.warning(f"no labels for {model_path}: showing class numbers (pass --labels or put "
                       f"{LABELS_FILE_NAME} beside the model)")
        return [str(index) for index in range(num_outputs)]
    if len(labels) != num_outputs:
        raise UserError(f"{origin} has {len(labels)} labels but {model_path} has {num_outputs} outputs")
    return labels
