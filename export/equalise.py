"""Channel equalisation of a VDSR's fp32 graph, a step the int8 export may take (vdsr.export.quantize): the same
function in fp32, ranges that per-tensor int8 activations round less coarsely.

Across each Conv-ReLU-Conv pair, output channel c of the first convolution is divided by s_c and input channel c of
the second multiplied by it (exact in fp32: ReLU(x / s) = ReLU(x) / s for s > 0), with s_c = a_c^alpha / w_c^(1 -
alpha) (SmoothQuant, Xiao et al. 2023; the cross-layer equalisation of Nagel et al. 2019 with activations in it; a_c:
the channel's largest activation on the calibration crops, w_c: the largest weight reading it), normalised to a
geometric mean of 1. The per-tensor activation ranges then waste fewer codes, at the price of wider per-channel weight
ranges; which wins depends on the weights, so the export measures both.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import numpy_helper

ALPHA = 0.5  # SmoothQuant's default; on vdsr_real's quantisation-aware weights 0.5 beat 0.25 (issue 38)


def equalised(model: onnx.ModelProto, batches: list[NDArray[np.float32]], alpha: float) -> onnx.ModelProto:
    """A copy of a Conv-ReLU-...-Conv graph with each ReLU's channels rescaled as the module says, by `alpha`
    (ALPHA), the activations measured on `batches`."""
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    relus = [n for n in model.graph.node if n.op_type == "Relu"]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for relu in relus:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(relu.output[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [relu.output[0] for relu in relus]
    largest = [np.zeros(1, np.float32) for _ in names]
    for batch in batches:
        outputs = session.run(names, {model.graph.input[0].name: batch})
        largest = [np.maximum(m, o.max(axis=(0, 2, 3))) for m, o in zip(largest, outputs, strict=True)]
    result = onnx.ModelProto()
    result.CopyFrom(model)
    tensors = {t.name: t for t in result.graph.initializer}

    def value(name: str) -> NDArray[np.float32]:
        return numpy_helper.to_array(tensors[name]).astype(np.float32)

    def store(name: str, array: NDArray[np.float32]) -> None:
        tensors[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))

    for first, second, active in zip(convs, convs[1:], largest, strict=False):
        reader = np.abs(value(second.input[1])).max(axis=(0, 2, 3))
        s = np.maximum(active, 1e-5) ** alpha / np.maximum(reader, 1e-8) ** (1 - alpha)
        s = np.where(active < 1e-5, 1.0, s / np.exp(np.mean(np.log(s)))).astype(np.float32)  # dead channels: 1
        store(first.input[1], value(first.input[1]) / s[:, None, None, None])
        if len(first.input) > 2:  # the exporter leaves out all-zero biases
            store(first.input[2], value(first.input[2]) / s)
        store(second.input[1], value(second.input[1]) * s[None, :, None, None])
    return result
