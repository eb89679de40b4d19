"""ONNX files that refer to external data are refused before ONNX Runtime (or TensorRT) sees them; the shipped,
self-contained graphs pass; malformed bytes get one clear error (vdsr.onnx_file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_graphs import vdsr_graph

from vdsr.catalogue import MODELS
from vdsr.errors import ModelError
from vdsr.model import Model
from vdsr.onnx_file import read_self_contained


def test_the_shipped_graphs_are_self_contained() -> None:
    graphs = [graph.path for name in MODELS for graph in Model.load(name).graphs.values()]
    assert len(graphs) >= 3
    for path in graphs:
        assert read_self_contained(path) == path.read_bytes()


def add_model(*, nested: bool = False) -> onnx.ModelProto:
    """A small VDSR graph whose first weight `w0` is an initializer, or (nested) a Constant inside an If branch."""
    model = vdsr_graph()
    if not nested:
        return model
    w0 = next(t for t in model.graph.initializer if t.name == "w0")
    branch_out = helper.make_tensor_value_info("w0", TensorProto.FLOAT, list(w0.dims))
    branch = helper.make_graph([helper.make_node("Constant", [], ["w0"], value=w0)], "branch", [], [branch_out])
    model.graph.initializer.remove(w0)
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    model.graph.node.insert(0, helper.make_node("If", ["cond"], ["w0"], then_branch=branch, else_branch=branch))
    return model


def external(tensor: TensorProto, location: str) -> None:
    """Move `tensor`'s data out, as onnx.save(..., save_as_external_data=True) does."""
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location


@pytest.mark.parametrize("nested", [False, True], ids=["initializer", "constant in a subgraph"])
def test_external_data_is_refused_before_onnx_runtime_reads_it(tmp_path: Path, nested: bool) -> None:
    """Inside the model's folder (which ONNX Runtime would load) and outside it (which some versions would)."""
    model = add_model(nested=nested)
    inline = tmp_path / "inline.onnx"
    onnx.save(model, inline)
    if nested:  # self-contained, but a subgraph is not part of any network this package knows
        with pytest.raises(ModelError, match="inline.onnx: .*holding a tensor, graph"):
            read_self_contained(inline)
    else:
        assert read_self_contained(inline) == inline.read_bytes()
    (tmp_path / "w.bin").write_bytes(numpy_helper.to_array(model.graph.initializer[0]).tobytes())
    tensor = model.graph.node[0].attribute[0].g.node[0].attribute[0].t if nested else model.graph.initializer[0]
    for location in ("w.bin", "../../etc/hostname", "/dev/zero"):
        external(tensor, location)
        path = tmp_path / "external.onnx"
        onnx.save(model, path)
        with pytest.raises(ModelError, match="external.onnx: refers to external data files"):
            read_self_contained(path)
        with pytest.raises(ModelError, match="external.onnx: refers to external data files"):
            Model.load(path)
        del tensor.external_data[:]


def test_malformed_files_get_one_line_errors(tmp_path: Path) -> None:
    model = add_model().SerializeToString()
    cases = {
        "cut.onnx": model[: len(model) - 7],
        "noise.onnx": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "group.onnx": b"\x0b",  # field 1, wire type 3 (a deprecated group)
        "varint.onnx": b"\x08" + b"\xff" * 20,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelError, match=f"{name}: ") as error:
            read_self_contained(tmp_path / name)
        assert "\n" not in str(error.value)
    with pytest.raises(ModelError, match="missing.onnx: cannot read"):
        read_self_contained(tmp_path / "missing.onnx")


def test_nesting_is_bounded() -> None:
    from vdsr import onnx_file

    message = b""
    for field in [1, 6, 5] * 30:  # inside out: graph.node (1), attribute.g (6), node.attribute (5): a node, 90 deep
        message = bytes([field << 3 | 2]) + _varint(len(message)) + message
    with pytest.raises(ValueError, match="nested deeper than 64"):
        onnx_file._check(memoryview(message), "node", depth=0)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def test_the_walk_covers_every_field_that_can_lead_to_a_tensor() -> None:
    """From onnx's own descriptors: each message field from which a TensorProto can be reached is walked (found by
    review: FunctionProto.attribute_proto, a function's default attributes, was not)."""
    from google.protobuf.descriptor import Descriptor, FieldDescriptor

    from vdsr import onnx_file

    names = {
        "ModelProto": "model",
        "GraphProto": "graph",
        "TrainingInfoProto": "training",
        "FunctionProto": "function",
        "NodeProto": "node",
        "AttributeProto": "attribute",
        "SparseTensorProto": "sparse",
        "TensorProto": "tensor",
    }

    def reaches_tensor(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
        if descriptor.name == "TensorProto":
            return True
        return any(
            f.message_type is not None
            and f.message_type.name not in seen
            and reaches_tensor(f.message_type, seen | {descriptor.name})
            for f in descriptor.fields
        )

    expected: dict[str, dict[int, str]] = {}
    stack, done = [onnx.ModelProto.DESCRIPTOR], set()
    while stack:
        descriptor = stack.pop()
        if descriptor.name in done:
            continue
        done.add(descriptor.name)
        fields = {}
        for f in descriptor.fields:
            if f.type == FieldDescriptor.TYPE_MESSAGE and reaches_tensor(f.message_type):
                fields[f.number] = names[f.message_type.name]
                stack.append(f.message_type)
        expected[names[descriptor.name]] = fields
    assert onnx_file._SCHEMA == expected


def test_a_functions_default_attribute_with_external_data_is_refused(tmp_path: Path) -> None:
    weights = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    external(weights, "w.bin")
    default = helper.make_attribute("w", weights)
    constant = helper.make_node("Constant", [], ["c"])
    constant.attribute.add(name="value", ref_attr_name="w", type=onnx.AttributeProto.TENSOR)
    function = helper.make_function("local", "F", [], ["c"], [constant], [helper.make_opsetid("", 17)])
    function.attribute_proto.append(default)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("F", [], ["y"], domain="local")], "g", [], [y])
    model = helper.make_model(
        graph, functions=[function], opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    )
    onnx.save(model, tmp_path / "function.onnx")
    with pytest.raises(ModelError, match="function.onnx: refers to external data files"):
        read_self_contained(tmp_path / "function.onnx")
