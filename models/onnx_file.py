"""ONNX files from elsewhere, read once and checked to be self-contained before any runtime sees them.

Why: an ONNX tensor may keep its data in another file (`data_location: EXTERNAL`, a path in `external_data`). ONNX
Runtime then reads that path, relative to the model's folder, and whether it refuses paths that leave the folder
(`../../home/user/.ssh/id_rsa`, `/dev/zero`) depends on its version; the `>= 1.17` this package allows includes
versions without that check. This package's graphs are always self-contained, so any external reference is refused
here, by walking the protobuf wire format (the message fields that can lead to a tensor: the graph's initializers,
node attributes, subgraphs, functions and their default attributes, training graphs, sparse tensors) without the
`onnx` package, which the base install lacks.
The bytes checked are the bytes the runtime is given: nothing can change the file in between. The same walk reads
the graph's metadata_props (what vdsr.metadata reads a model's facts from), so no ONNX library is needed for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vdsr.errors import ModelError

# message -> {field number: message type of that field} for the fields that can lead to a TensorProto (onnx.proto3)
# (tests/test_onnx_file.py checks this against the onnx package's own descriptors)
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_MODEL_METADATA_PROPS = 14  # ModelProto.metadata_props: StringStringEntryProto {key = 1, value = 2}
_MAX_DEPTH = 64  # nested subgraphs (If/Loop bodies) deeper than this are refused as malformed


@dataclass(frozen=True)
class OnnxFile:
    """An ONNX file as read and checked: its bytes (what a runtime is given) and its metadata_props."""

    data: bytes
    metadata: dict[str, str]


def read_onnx(path: Path) -> OnnxFile:
    """The ONNX file at `path` with its metadata_props; ModelError naming the file if it is not a well-formed
    protobuf or any tensor in it refers to external data."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ModelError(f"{path}: cannot read the ONNX file ({error.strerror or error})") from error
    metadata: dict[str, str] = {}
    try:
        _check(memoryview(data), "model", depth=0, metadata=metadata)
    except ValueError as error:
        raise ModelError(f"{path}: {error}") from None
    return OnnxFile(data, metadata)


def read_self_contained(path: Path) -> bytes:
    """The bytes of the ONNX file at `path`, checked as read_onnx checks them."""
    return read_onnx(path).data


def _check(message: memoryview, kind: str, *, depth: int, metadata: dict[str, str] | None = None) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError(f"not a well-formed ONNX file (nested deeper than {_MAX_DEPTH} levels)")
    fields = _SCHEMA[kind]
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(message, pos)
            if kind == "tensor" and number == _TENSOR_DATA_LOCATION and value & 0xFFFFFFFF == 1:  # int32, as parsed
                raise ValueError("refers to external data files (only self-contained ONNX files are loaded)")
        elif wire == 2:
            length, pos = _varint(message, pos)
            if pos + length > len(message):
                raise ValueError("not a well-formed ONNX file (a field runs past its end)")
            if kind == "tensor" and number == _TENSOR_EXTERNAL_DATA:
                raise ValueError("refers to external data files (only self-contained ONNX files are loaded)")
            if number in fields:
                _check(message[pos : pos + length], fields[number], depth=depth + 1)
            elif kind == "model" and number == _MODEL_METADATA_PROPS and metadata is not None:
                entry, text = _entry(message[pos : pos + length])
                metadata[entry] = text
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"not a well-formed ONNX file (protobuf wire type {wire})")
    if pos != len(message):
        raise ValueError("not a well-formed ONNX file (cut short)")


def _entry(message: memoryview) -> tuple[str, str]:
    """A StringStringEntryProto's key and value (fields 1 and 2, UTF-8)."""
    found: dict[int, str] = {1: "", 2: ""}
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        if key & 7 != 2:
            raise ValueError("not a well-formed ONNX file (a metadata entry of another type)")
        length, pos = _varint(message, pos)
        if pos + length > len(message):
            raise ValueError("not a well-formed ONNX file (a field runs past its end)")
        try:
            found[key >> 3] = bytes(message[pos : pos + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not a well-formed ONNX file (metadata that is not UTF-8)") from None
        pos += length
    return found[1], found[2]


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("not a well-formed ONNX file (cut short or a malformed number)")
