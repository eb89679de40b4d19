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

A second reading takes the nodes, stored tensors, inputs and outputs of the main graph, and vdsr.onnx_network
accepts the graph only when they are a network this package knows: any other graph is refused before a session
could fold its constants or run its loops.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vdsr.errors import ModelError
from vdsr.files import read_model_file
from vdsr.onnx_network import GraphView, Network, Node, Stored, Value, recognise

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
MAX_BYTES = 1 << 30  # a graph file larger is refused unread (VDSR fp32: 2.7 MB; protobuf's own limit is 2 GiB)
MAX_FIELDS = 1_000_000  # protobuf fields one reading may walk (VDSR int8: about 2,000): bounds the time a file costs


@dataclass(frozen=True)
class OnnxFile:
    """An ONNX file as read and checked: its bytes (what a runtime is given), its metadata_props and the network
    its nodes were found to be."""

    data: bytes
    metadata: dict[str, str]
    network: Network


def read_onnx(path: Path) -> OnnxFile:
    """The ONNX file at `path` with its metadata_props and network; ModelError naming the file if it is not a
    well-formed protobuf, any tensor in it refers to external data, or it is not a network this package knows."""
    data = read_model_file(path, limit=MAX_BYTES)
    metadata: dict[str, str] = {}
    budget = _Budget()
    try:
        _check(memoryview(data), "model", depth=0, metadata=metadata, budget=budget)
        view = _view(memoryview(data), _Budget())
    except ValueError as error:
        raise ModelError(f"{path}: {error}") from None
    try:
        network = recognise(view)
    except ValueError as error:
        raise ModelError(f"{path}: not a VDSR or SRCNN graph as vdsr-export writes them: {error}") from None
    return OnnxFile(data, metadata, network)


def read_self_contained(path: Path) -> bytes:
    """The bytes of the ONNX file at `path`, checked as read_onnx checks them."""
    return read_onnx(path).data


def _check(
    message: memoryview, kind: str, *, depth: int, metadata: dict[str, str] | None = None, budget: _Budget | None = None
) -> None:
    budget = budget or _Budget()
    if depth > _MAX_DEPTH:
        raise ValueError(f"not a well-formed ONNX file (nested deeper than {_MAX_DEPTH} levels)")
    fields = _SCHEMA[kind]
    for number, values in _fields(message, budget).items():
        for value in values:
            if kind == "tensor" and (
                number == _TENSOR_EXTERNAL_DATA
                or (number == _TENSOR_DATA_LOCATION and isinstance(value, int) and value & 0xFFFFFFFF == 1)
            ):  # data_location is an int32 as parsed
                raise ValueError("refers to external data files (only self-contained ONNX files are loaded)")
            if not isinstance(value, memoryview):
                continue
            if number in fields:
                _check(value, fields[number], depth=depth + 1, budget=budget)
            elif kind == "model" and number == _MODEL_METADATA_PROPS and metadata is not None:
                entry = _fields(value, budget)  # StringStringEntryProto: key = 1, value = 2, UTF-8
                try:
                    metadata[_text(_single(entry, 1, "a key"))] = _text(_single(entry, 2, "a value"))
                except UnicodeDecodeError:
                    raise ValueError("not a well-formed ONNX file (metadata that is not UTF-8)") from None


# --- the second reading: what vdsr.onnx_network needs of the main graph ------------------------------------------


@dataclass(frozen=True)
class _Fixed:
    """A fixed-width field (wire types 1 and 5): only floats may come so; anywhere else it is refused."""

    data: memoryview


Item = int | memoryview | _Fixed  # a varint, a length-delimited field (bytes, a message, a packed list), fixed bytes
Fields = dict[int, list[Item]]
_ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}  # by data_type
_FLOATS = {1: "<f4", 10: "<f2", 11: "<f8"}  # float, float16, double: raw_data's values, checked finite
_TYPED_DATA = {4: 4, 10: 8}  # float_data, double_data: fixed-size values, packed or not (bytes each)
_VARINT_DATA = (5, 7, 11)  # int32_data, int64_data, uint64_data: varints, packed or not
_ATTRIBUTE_GRAPHS = {5, 6, 10, 11, 14, 15, 21, 22, 23}  # tensors, graphs, types, function references: refused
_MAX_RANK = 8
_VARINT_ENDS = bytes(range(0x80, 0x100))  # deleted from packed varints, what is left is one byte per number


class _Budget:
    """How many protobuf fields one reading may still walk: a file's cost is bounded before it is spent."""

    def __init__(self, fields: int = MAX_FIELDS) -> None:
        self.left = fields

    def spend(self, fields: int = 1) -> None:
        self.left -= fields
        if self.left < 0:
            raise ValueError(f"more than {MAX_FIELDS} protobuf fields (no VDSR or SRCNN graph has that many)")


def _fields(message: memoryview, budget: _Budget) -> Fields:
    """A message's fields by number, in order (repeated fields and repeats of a singular one all kept)."""
    found: Fields = defaultdict(list)
    pos = 0
    while pos < len(message):
        budget.spend()
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(message, pos)
            found[number].append(value)
            continue
        if wire == 2:
            length, pos = _varint(message, pos)
        elif wire in (1, 5):
            length = 8 if wire == 1 else 4
        else:
            raise ValueError(f"not a well-formed ONNX file (protobuf wire type {wire})")
        if pos + length > len(message):
            raise ValueError("not a well-formed ONNX file (a field runs past its end)")
        item = message[pos : pos + length]
        found[number].append(item if wire == 2 else _Fixed(item))
        pos += length
    return found


def _single(fields: Fields, number: int, what: str) -> Item | None:
    """A singular field; a repeat (which protobuf would merge or override) is refused."""
    values = fields.get(number, [])
    if len(values) > 1:
        raise ValueError(f"not a well-formed ONNX file ({what} given {len(values)} times)")
    return values[0] if values else None


def _bytes(value: Item | None) -> memoryview:
    if not isinstance(value, memoryview):
        raise ValueError("not a well-formed ONNX file (a field of another wire type where bytes belong)")
    return value


def _text(value: Item | None) -> str:
    return "" if value is None else bytes(_bytes(value)).decode("utf-8")


def _texts(fields: Fields, number: int) -> tuple[str, ...]:
    return tuple(_text(value) for value in fields.get(number, []))


def _number(value: Item | None) -> int:
    if value is not None and not isinstance(value, int):
        raise ValueError("not a well-formed ONNX file (a field of another wire type where a number belongs)")
    value = value or 0
    return value - (1 << 64) if value >= 1 << 63 else value  # int64 as a varint


def _count(fields: Fields, number: int) -> int:
    """How many numbers a repeated varint field holds, packed or not, without decoding them."""
    count = 0
    for value in fields.get(number, []):
        count += 1 if isinstance(value, int) else len(bytes(_bytes(value)).translate(None, _VARINT_ENDS))
    return count


def _numbers(fields: Fields, number: int, *, at_most: int) -> tuple[int, ...]:
    """A repeated int64 field, packed or not, of at most `at_most` numbers (more is refused before decoding)."""
    if _count(fields, number) > at_most:
        raise ValueError(f"a list of more than {at_most} numbers where a shape or an attribute belongs")
    values: list[int] = []
    for value in fields.get(number, []):
        if isinstance(value, int):
            values.append(_number(value))
            continue
        packed, pos = _bytes(value), 0
        while pos < len(packed):
            item, pos = _varint(packed, pos)
            values.append(_number(item))
    return tuple(values)


def _message(value: Item | None, budget: _Budget) -> Fields:
    return _fields(_bytes(value), budget) if value is not None else defaultdict(list)


def _view(data: memoryview, budget: _Budget) -> GraphView:
    """The main graph's nodes, stored tensors, inputs and outputs, and the model's operator sets."""
    model = _fields(data, budget)
    if model.get(20) or model.get(25):
        raise ValueError("it holds training graphs or functions (no VDSR or SRCNN network has them)")
    graph = _message(_single(model, 7, "the graph"), budget)
    if graph.get(15):
        raise ValueError("it holds sparse tensors (no VDSR or SRCNN network has them)")
    stored = dict(_stored(_message(value, budget)) for value in graph.get(5, []))
    if len(stored) != len(graph.get(5, [])):
        raise ValueError("two stored tensors of one name")
    return GraphView(
        domains=tuple(_text(_single(_message(v, budget), 1, "a domain")) for v in model.get(8, [])),
        nodes=tuple(_node(_message(value, budget), budget) for value in graph.get(1, [])),
        stored=stored,
        inputs=tuple(_value(_message(value, budget), budget) for value in graph.get(11, [])),
        outputs=tuple(_value(_message(value, budget), budget) for value in graph.get(12, [])),
    )


def _node(fields: Fields, budget: _Budget) -> Node:
    attributes: dict[str, int | tuple[int, ...] | bytes | float] = {}
    for value in fields.get(5, []):
        attribute = _message(value, budget)
        name = _text(_single(attribute, 1, "an attribute's name"))
        if _ATTRIBUTE_GRAPHS & attribute.keys() or name in attributes:
            raise ValueError(f"a node attribute {name!r:.40} holding a tensor, graph or type, or given twice")
        if attribute.get(8) or _number(_single(attribute, 20, "a type")) == 7:  # INTS
            attributes[name] = _numbers(attribute, 8, at_most=_MAX_RANK)
        elif attribute.get(4):
            attributes[name] = bytes(_bytes(_single(attribute, 4, "an attribute's value")))
        elif attribute.get(2) or attribute.get(7) or attribute.get(9):
            attributes[name] = float("nan")  # floats and strings: no VDSR node takes one, so nothing may equal it
        else:
            attributes[name] = _number(_single(attribute, 3, "an attribute's value"))
    return Node(
        op=_text(_single(fields, 4, "an op type")),
        domain=_text(_single(fields, 7, "a node's domain")),
        inputs=_texts(fields, 1),
        outputs=_texts(fields, 2),
        attributes=attributes,
    )


def _stored(fields: Fields) -> tuple[str, Stored]:
    """An initializer's name and type and shape, checked to hold exactly as many values as its shape says."""
    name = _text(_single(fields, 8, "a tensor's name"))
    dims = _numbers(fields, 1, at_most=_MAX_RANK)
    data_type = _number(_single(fields, 2, "a tensor's type"))
    if data_type not in _ITEM_BYTES or any(d < 0 for d in dims) or fields.get(3) or fields.get(6):
        raise ValueError(f"stored tensor {name!r:.60} of type {data_type}, shape {list(dims)}: not a numeric tensor")
    raw = _single(fields, 9, "a tensor's data")
    if raw is not None:
        held = len(_bytes(raw)) / _ITEM_BYTES[data_type]
    else:  # packed (bytes) or not (one fixed-width field each)
        held = sum(
            len(v.data if isinstance(v, _Fixed) else _bytes(v)) / size
            for number, size in _TYPED_DATA.items()
            for v in fields.get(number, [])
        )
        held += sum(_count(fields, number) for number in _VARINT_DATA)
    expected = 1
    for d in dims:
        expected *= d
    if held != expected:
        raise ValueError(f"stored tensor {name!r:.60} of shape {list(dims)} holds {held:g} values, not {expected}")
    if data_type in _FLOATS:  # a NaN or inf weight would make every image's result NaN
        pieces: list[tuple[bytes | memoryview, str]] = [(_bytes(raw), _FLOATS[data_type])] if raw is not None else []
        for number, dtype in ((4, "<f4"), (10, "<f8")):  # float_data, double_data
            pieces += [(v.data if isinstance(v, _Fixed) else _bytes(v), dtype) for v in fields.get(number, [])]
        if data_type == 10 and raw is None:  # float16 not raw: each value's bits in int32_data
            bits = np.array(_numbers(fields, 5, at_most=expected), np.int64).astype("<u2")
            pieces.append((bits.tobytes(), "<f2"))
        if not all(np.isfinite(np.frombuffer(piece, dtype)).all() for piece, dtype in pieces):
            raise ValueError(f"stored tensor {name!r:.60} holds NaN or inf")
    return name, Stored(data_type, dims)


def _value(fields: Fields, budget: _Budget) -> Value:
    """A graph input or output: its name, element type and shape."""
    name = _text(_single(fields, 1, "a value's name"))
    kind = _message(_single(fields, 2, "a value's type"), budget)
    if set(kind) - {1, 6}:  # tensor_type and denotation only
        raise ValueError(f"input or output {name!r:.40} is not a tensor")
    tensor = _message(_single(kind, 1, "a tensor type"), budget)
    shape = _single(tensor, 2, "a shape")
    dims = None
    if shape is not None:
        listed = _message(shape, budget).get(1, [])
        if len(listed) > _MAX_RANK:
            raise ValueError(f"input or output {name!r:.40} of {len(listed)} dimensions")
        dims = tuple(_dimension(_message(d, budget)) for d in listed)
    return Value(name, _number(_single(tensor, 1, "an element type")), dims)


def _dimension(fields: Fields) -> int | str | None:
    if fields.get(1):
        return _number(_single(fields, 1, "a dimension"))
    return _text(_single(fields, 2, "a dimension")) if fields.get(2) else None


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
