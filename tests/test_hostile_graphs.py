"""An ONNX graph is a program: only the networks this package knows are run (vdsr.onnx_network). Graphs that would
allocate gigabytes, loop forever, take a second input, give an output of another size or carry metadata that lies
are refused with one line naming the file, before any session sees them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_graphs import conv, set_metadata, vdsr_graph
from PIL import Image

import vdsr
from vdsr.architectures import SRCNNConfig, VDSRConfig
from vdsr.catalogue import MODELS
from vdsr.errors import ModelError
from vdsr.model import Model
from vdsr.onnx_file import read_onnx
from vdsr.weights import load_weights


def constant_of_shape() -> onnx.ModelProto:
    """The 333-byte graph that took 3.6 GB: a ConstantOfShape of 60000 x 15000 values, folded when a session opens."""
    shape = numpy_helper.from_array(np.array([1, 1, 60000, 15000], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"]), helper.make_node("Add", ["ilr", "big"], ["sr"])]
    return _graph(nodes, [shape])


def endless_loop() -> onnx.ModelProto:
    """A Loop whose condition never turns false and whose trip count is unbounded."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["x_in"], ["x_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None),
        ],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    return _graph([helper.make_node("Loop", ["", "cond", "ilr"], ["sr"], body=body)], [cond])


def _graph(nodes: list[onnx.NodeProto], stored: list[onnx.TensorProto]) -> onnx.ModelProto:
    value = ["batch", 1, "height", "width"]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ilr", TensorProto.FLOAT, value)],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, value)],
        initializer=stored,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return set_metadata(model, **{p.key: p.value for p in vdsr_graph().metadata_props})  # says it is a VDSR


def second_input() -> onnx.ModelProto:
    model = vdsr_graph()
    model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    return model


def another_size() -> onnx.ModelProto:
    """The last convolution without padding: an output 2 pixels smaller on each side."""
    model = vdsr_graph()
    last = next(n for n in model.graph.node if n.output[0] == "conv2")
    last.CopyFrom(conv("conv2", "relu1", "w2", "b2", pads=[0, 0, 0, 0]))
    return model


def strided() -> onnx.ModelProto:
    model = vdsr_graph()
    model.graph.node[0].CopyFrom(conv("conv0", "ilr", "w0", "b0", strides=[2, 2]))
    return model


def huge_padding() -> onnx.ModelProto:
    model = vdsr_graph()
    model.graph.node[0].CopyFrom(conv("conv0", "ilr", "w0", "b0", pads=[30000] * 4))
    return model


def shape_beyond_its_data() -> onnx.ModelProto:
    """A stored tensor that says 60000 x 15000 and holds 36 values."""
    model = vdsr_graph()
    tensor = model.graph.initializer[0]
    del tensor.dims[:]
    tensor.dims.extend([60000, 15000, 3, 3])
    return model


def other_domain() -> onnx.ModelProto:
    model = vdsr_graph()
    model.graph.node[1].domain = "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def dangling_node() -> onnx.ModelProto:
    model = vdsr_graph()
    model.graph.node.append(helper.make_node("Relu", ["ilr"], ["unused"]))
    return model


def cycle() -> onnx.ModelProto:
    model = vdsr_graph()
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.input[0] = relu.output[0]
    return model


def fixed_size() -> onnx.ModelProto:
    model = vdsr_graph()
    for value in (model.graph.input[0], model.graph.output[0]):
        for dim, size in zip(value.type.tensor_type.shape.dim, (1, 1, 64, 64), strict=True):
            dim.Clear()
            dim.dim_value = size
    return model


def no_skip() -> onnx.ModelProto:
    """The Add adds the last convolution to itself instead of to the input."""
    model = vdsr_graph()
    model.graph.node[-1].input[0] = model.graph.node[-1].input[1]
    return model


def unused_tensor() -> onnx.ModelProto:
    model = vdsr_graph()
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "junk"))
    return model


def long_shape() -> onnx.ModelProto:
    """A stored tensor whose shape lists a thousand dimensions (of 1: its size stays that of its data)."""
    model = vdsr_graph()
    model.graph.initializer[0].dims.extend([1] * 1000)
    return model


def huge_kernel() -> onnx.ModelProto:
    """An SRCNN of kernels 1-101-1: a 2.6 MB file, 24 s for one 256x256 window, a halo of 50."""
    nodes, stored, tensor = [], [], "ilr"
    for i, (k, c_in, c_out) in enumerate([(1, 1, 64), (101, 64, 1), (1, 1, 1)]):
        stored += [
            numpy_helper.from_array(np.zeros((c_out, c_in, k, k), np.float32), f"w{i}"),
            numpy_helper.from_array(np.zeros(c_out, np.float32), f"b{i}"),
        ]
        nodes.append(conv(f"conv{i}", tensor, f"w{i}", f"b{i}", k=k))
        tensor = f"conv{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [tensor], [f"relu{i}"]))
            tensor = f"relu{i}"
    nodes[-1].output[0] = "sr"
    return _graph(nodes, stored)


def nan_weight() -> onnx.ModelProto:
    model = vdsr_graph()
    tensor = model.graph.initializer[0]
    values = numpy_helper.to_array(tensor).copy()
    values.flat[0] = np.nan
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    return model


def nan_fp16_not_raw() -> onnx.ModelProto:
    """An fp16 weight with a NaN, stored as the exporter never does: its bits in int32_data, not raw_data."""
    model = vdsr_graph(fp16=True)
    tensor = model.graph.initializer[0]
    values = numpy_helper.to_array(tensor).copy()
    values.flat[0] = np.nan
    tensor.CopyFrom(helper.make_tensor(tensor.name, TensorProto.FLOAT16, values.shape, values.flatten(), raw=False))
    return model


def dequantize_of_nothing() -> onnx.ModelProto:
    """A Conv's weight from a DequantizeLinear whose input is the empty name (ONNX's "not given")."""
    model = vdsr_graph()
    first = next(node for node in model.graph.node if node.op_type == "Conv")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "dq_scale")
    model.graph.initializer.append(scale)
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["", "dq_scale"], ["w_dq"]))
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == first.input[1]))
    first.input[1] = "w_dq"
    return model


def scale_of_another_length() -> onnx.ModelProto:
    """The shipped int8 graph with one weight's per-channel scale and zero point cut from 64 values to 3."""
    model = onnx.load(str(Path(vdsr.__file__).parent / "vdsr_int8.onnx"))
    for tensor in model.graph.initializer:
        if tensor.name.endswith(("body.10.weight_scale", "body.10.weight_zero_point")):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor)[:3].copy(), tensor.name))
    return model


HOSTILE: dict[str, tuple[Callable[[], onnx.ModelProto], str]] = {
    "constant_of_shape": (constant_of_shape, "ConstantOfShape nodes"),
    "loop": (endless_loop, "attribute 'body' holding a tensor, graph"),
    "second_input": (second_input, "it has 2 inputs"),
    "another_size": (another_size, "pads=\\(0, 0, 0, 0\\)"),
    "strided": (strided, "strides=\\(2, 2\\)"),
    "huge_padding": (huge_padding, "pads=\\(30000"),
    "shape_beyond_its_data": (shape_beyond_its_data, "holds 36 values, not 8100000000"),
    "other_domain": (other_domain, "operator set 'com.microsoft'"),
    "dangling_node": (dangling_node, "1 nodes off the path"),
    "cycle": (cycle, "written twice|cycle"),
    "fixed_size": (fixed_size, "fixed size"),
    "no_skip": (no_skip, "does not add the input"),
    "negative_halo": (lambda: set_metadata(vdsr_graph(), halo="-3"), "says halo -3, its nodes hold 3"),
    "halo_too_small": (lambda: set_metadata(vdsr_graph(), halo="0"), "says halo 0, its nodes hold 3"),
    "another_architecture": (lambda: set_metadata(vdsr_graph(), architecture="srcnn", config="{}"), "architecture"),
    "another_config": (lambda: set_metadata(vdsr_graph(), config='{"depth": 20}'), "says config"),
    "another_precision": (lambda: set_metadata(vdsr_graph(), precision="fp16"), "says precision 'fp16'"),
    "bad_scales": (lambda: set_metadata(vdsr_graph(), scales="[0.5, 100]"), "scales"),
    "unused_tensor": (unused_tensor, "1 stored tensors no node uses"),
    "long_shape": (long_shape, "more than 8 numbers"),
    "huge_kernel": (huge_kernel, "odd kernel sizes up to 15"),
    "nested_scales": (lambda: set_metadata(vdsr_graph(), scales="[" * 100_000 + "]" * 100_000), "not valid"),
    "huge_cost": (
        lambda: set_metadata(vdsr_graph(), int8_within_bar="false", int8_cost_db='{"a": 1' + "0" * 400 + "}"),
        "metadata is not valid .int too large",
    ),
    "nan_weight": (nan_weight, "holds NaN or inf"),
    "nan_fp16_not_raw": (nan_fp16_not_raw, "holds NaN or inf"),
    "dequantize_of_nothing": (dequantize_of_nothing, "computed by a DequantizeLinear, not stored"),
    "scale_of_another_length": (scale_of_another_length, "of shape \\[3\\] is neither one value nor one per channel"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_graphs_are_refused_naming_the_file(tmp_path: Path, case: str) -> None:
    build, cause = HOSTILE[case]
    path = tmp_path / f"{case}.onnx"
    onnx.save(build(), path)
    with pytest.raises(ModelError, match=cause) as error:
        Model.load(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


@pytest.mark.parametrize("case", ["constant_of_shape", "loop", "second_input", "another_size", "negative_halo"])
def test_the_command_refuses_them_under_a_memory_cap_and_a_time_bound(tmp_path: Path, case: str) -> None:
    """vdsr-run with 1.5 GiB of address space beyond its start and 120 s: one line naming the file, exit 1, nothing
    written."""
    build, cause = HOSTILE[case]
    graph = tmp_path / f"{case}.onnx"
    onnx.save(build(), graph)
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(tmp_path / "in.png")
    command = [sys.executable, "-c", _CAPPED, str(tmp_path / "in.png"), "-s", "2", "--model", str(graph)]
    command += ["-o", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(graph) in lines[0] and re.search(cause, lines[0]), done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# vdsr-run in a process whose address space may grow by 1.5 GiB past what the interpreter and its imports take
_CAPPED = """
import resource, sys
import numpy, onnxruntime, vdsr.runtime.cli as cli
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (3 << 29), used + (3 << 29)))
sys.argv = ["vdsr-run", *sys.argv[1:]]
cli.app()
"""


def test_fields_of_another_wire_type_are_refused_not_read() -> None:
    """Conv pads sent as a fixed32 field: protobuf (and so ONNX Runtime) drops it as unknown, so the check must not
    read it as the padding it seems to be."""
    from vdsr import onnx_file

    attribute = b"\x0a\x04pads" + b"\x45\x01\x01\x01\x01"  # name = "pads"; field 8 (ints) as wire type 5
    node = b"\x22\x04Conv" + b"\x2a" + bytes([len(attribute)]) + attribute  # op_type; attribute
    budget = onnx_file._Budget()
    with pytest.raises(ValueError, match="another wire type"):
        onnx_file._node(onnx_file._fields(memoryview(node), budget), budget)


def test_the_fields_a_reading_walks_are_bounded() -> None:
    from vdsr import onnx_file

    data = memoryview(vdsr_graph().SerializeToString())
    onnx_file._view(data, onnx_file._Budget())
    with pytest.raises(ValueError, match="more than 1000000 protobuf fields"):
        onnx_file._view(data, onnx_file._Budget(50))
    with pytest.raises(ValueError, match="more than 1000000 protobuf fields"):
        onnx_file._check(data, "model", depth=0, budget=onnx_file._Budget(50))


def test_metadata_that_names_the_architecture_without_a_config_takes_the_nodes_config(tmp_path: Path) -> None:
    model = vdsr_graph(depth=3)
    props = {p.key: p.value for p in model.metadata_props if p.key != "config"}
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    onnx.save(model, tmp_path / "no_config.onnx")
    assert Model.load(tmp_path / "no_config.onnx").config == VDSRConfig(depth=3, channels=4, bias=True)


def test_every_shipped_graph_is_recognised_as_what_its_metadata_says() -> None:
    graphs = [graph for name in MODELS for graph in Model.load(name).graphs.values()]
    assert {g.precision for g in graphs} == {"fp32", "fp16", "int8"}
    for graph in graphs:
        network = read_onnx(graph.path).network
        assert network.precision == graph.precision
        assert isinstance(network.config, VDSRConfig | SRCNNConfig)


def test_a_graph_that_says_nothing_is_known_by_its_nodes(tmp_path: Path) -> None:
    """Without metadata, the network (and so the halo that tiling needs) is what the nodes hold."""
    onnx.save(vdsr_graph(depth=5, channels=3, metadata=False), tmp_path / "bare.onnx")
    model = Model.load(tmp_path / "bare.onnx")
    assert model.config == VDSRConfig(depth=5, channels=3, bias=True) and model.halo == 5
    onnx.save(vdsr_graph(fp16=True), tmp_path / "half.onnx")
    assert Model.load(tmp_path / "half.onnx").graphs.keys() == {"fp16"}


def test_memory_cap_is_real() -> None:
    """The control: the cap of the command test does stop an allocation of the size the hostile graph asks for."""
    code = _CAPPED.split("sys.argv")[0] + "numpy.zeros(60000 * 15000, numpy.float32).fill(1)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "MemoryError" in done.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_graph_swapped_after_loading_is_refused_when_a_session_opens(tmp_path: Path) -> None:
    """What a session is given is read and checked again: a file replaced since Model.load is not tiled with the
    halo of the one that was there, and a FIFO swapped in is refused, not read forever (weights files too)."""
    from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend

    path = tmp_path / "g.onnx"
    onnx.save(vdsr_graph(depth=3, metadata=False), path)
    model = Model.load(path)
    onnx.save(vdsr_graph(depth=6, metadata=False), path)
    with pytest.raises(ModelError, match="g.onnx: changed since it was loaded"):
        OnnxRuntimeBackend(model)
    path.unlink()
    os.mkfifo(path)  # nothing ever writes to it: a plain open() would wait forever
    with pytest.raises(ModelError, match="g.onnx: not a regular file"):
        OnnxRuntimeBackend(model)
    weights = tmp_path / "w.safetensors"
    os.mkfifo(weights)
    with pytest.raises(ModelError, match="w.safetensors: not a regular file"):
        load_weights(weights)


def test_weights_replaced_between_their_header_and_their_tensors_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header is checked, then the whole file read: a file replaced in between (here by another network's
    weights) is refused naming it, not loaded into the wrong network or answered with a traceback."""
    import vdsr.weights as weights_module
    from vdsr.networks import network

    path = tmp_path / "w.safetensors"
    weights_module.save_weights(path, network(VDSRConfig(depth=3)), [2.0])
    checked = weights_module.read_weights

    def then_replaced(p: Path) -> object:
        facts = checked(p)
        weights_module.save_weights(p, network(SRCNNConfig()), [2.0])
        return facts

    monkeypatch.setattr(weights_module, "read_weights", then_replaced)
    with pytest.raises(ModelError, match=r"w.safetensors: changed while it was read"):
        load_weights(path)
    monkeypatch.setattr(weights_module, "read_weights", checked)
    assert isinstance(load_weights(path)[0], type(network(SRCNNConfig())))
