"""Small ONNX graphs built node by node with onnx.helper (no torch): a VDSR as vdsr-export writes one, to be changed
into the hostile graphs the tests try."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv(name: str, source: str, weight: str, bias: str | None, *, k: int = 3, **attributes: object) -> onnx.NodeProto:
    inputs = [source, weight] + ([bias] if bias else [])
    defaults: dict[str, object] = {"kernel_shape": [k, k], "pads": [k // 2] * 4, "strides": [1, 1], "dilations": [1, 1]}
    return helper.make_node("Conv", inputs, [name], group=1, **(defaults | attributes))


def vdsr_graph(*, depth: int = 3, channels: int = 4, fp16: bool = False, metadata: bool = True) -> onnx.ModelProto:
    """input ilr [batch, 1, height, width] -> depth 3x3 convs (Relu between) -> + ilr -> sr, as vdsr-export writes."""
    rng = np.random.default_rng(0)
    dtype, elem = (np.float16, TensorProto.FLOAT16) if fp16 else (np.float32, TensorProto.FLOAT)
    nodes, stored, tensor = [], [], "ilr"
    for i in range(depth):
        c_in, c_out = (1 if i == 0 else channels), (1 if i == depth - 1 else channels)
        stored += [
            numpy_helper.from_array((rng.standard_normal((c_out, c_in, 3, 3)) * 0.1).astype(dtype), f"w{i}"),
            numpy_helper.from_array(np.zeros(c_out, dtype), f"b{i}"),
        ]
        nodes.append(conv(f"conv{i}", tensor, f"w{i}", f"b{i}"))
        tensor = f"conv{i}"
        if i < depth - 1:
            nodes.append(helper.make_node("Relu", [tensor], [f"relu{i}"]))
            tensor = f"relu{i}"
    nodes.append(helper.make_node("Add", ["ilr", tensor], ["sr"]))
    shape = ["batch", 1, "height", "width"]
    graph = helper.make_graph(
        nodes,
        "vdsr",
        [helper.make_tensor_value_info("ilr", elem, shape)],
        [helper.make_tensor_value_info("sr", elem, shape)],
        initializer=stored,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    if metadata:
        facts = {
            "architecture": "vdsr",
            "config": json.dumps({"depth": depth, "channels": channels, "bias": True}),
            "scales": "[2, 3, 4]",
            "halo": str(depth),
            "precision": "fp16" if fp16 else "fp32",
        }
        helper.set_model_props(model, facts)
    return model


def set_metadata(model: onnx.ModelProto, **changes: str) -> onnx.ModelProto:
    props = {p.key: p.value for p in model.metadata_props} | changes
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    return model
