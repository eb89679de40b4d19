"""Which network an ONNX graph holds, worked out from its nodes and stored tensors, not from what its metadata says:
a graph is run only when it is one of the networks this package knows, as vdsr-export writes them.

Why: an ONNX graph is a program. A 333-byte graph whose `ConstantOfShape` asks for 60000 x 15000 values takes
3.6 GB when a session folds it, and a `Loop` can run forever; both happen before the first image. So a graph is
accepted only when it is, node for node:

    input [batch, 1, height, width], float32 or float16 (batch, height and width free)
      -> Conv -> Relu -> ... -> Conv            (VDSR: depth 3x3 convolutions of one width;
      -> Add(input, last Conv)                   SRCNN: three convolutions with odd kernels, no Add)
    output [batch, 1, height, width], the input's type

where every Conv has stride 1, dilation 1, one group and the zero padding that keeps the size (kernel // 2 on each
side), with weights and biases stored in the file; an int8 graph adds QuantizeLinear/DequantizeLinear pairs on the
path and DequantizeLinear of stored tensors for the weights (a Relu may be folded into the QuantizeLinear after its
Conv). Only the default operator set; no functions, training graphs, subgraphs, sparse or typed-value attributes;
every stored tensor holds as many values as its shape says; every node is on the path. The network's config, halo
and precision follow from what was found; vdsr.metadata checks the graph's metadata against them. (A bias is
optional on every Conv: the exporter drops biases that are all zero, so a VDSR found with none may have bias=True.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vdsr.architectures import Architecture, NetworkConfig, network_config

FLOAT, FLOAT16 = 1, 10  # TensorProto.DataType
QUANTIZED = {2, 3, 6}  # uint8, int8, int32 (an int8 graph's stored weights and biases)
ONNX_DOMAINS = ("", "ai.onnx")
OPS = ("Conv", "Relu", "Add", "QuantizeLinear", "DequantizeLinear")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Node:
    op: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, int | tuple[int, ...] | bytes | float]


@dataclass(frozen=True)
class Stored:
    """An initializer: its type and shape (the file was checked to hold exactly that many values)."""

    data_type: int
    dims: tuple[int, ...]


@dataclass(frozen=True)
class Value:
    """A graph input or output: a tensor's element type and shape (a str: a free dimension; None: not given)."""

    name: str
    elem_type: int
    dims: tuple[int | str | None, ...] | None


@dataclass(frozen=True)
class GraphView:
    """What of an ONNX model the check needs, as vdsr.onnx_file reads it from the protobuf."""

    domains: tuple[str, ...]  # of the opset imports
    nodes: tuple[Node, ...]
    stored: dict[str, Stored]
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]


@dataclass(frozen=True)
class Network:
    """What a graph was found to hold."""

    config: NetworkConfig
    precision: str  # fp32, fp16 or int8


@dataclass
class _Layer:
    weight: tuple[int, ...]  # (out, in, k, k)
    bias: bool
    relu: bool  # followed by a Relu
    clamped: bool  # followed by a Relu, or in an int8 graph by a QuantizeLinear (which a Relu may be folded into)
    node: Node


@dataclass
class _Walk:
    """The walk from the output back to the input; every node it passes is counted, and the walk is bounded."""

    graph: GraphView
    producers: dict[str, Node]
    used: set[int] = field(default_factory=set)
    steps: int = 0
    quantized: bool = False

    def producer(self, tensor: str) -> Node:
        self.steps += 1
        if self.steps > 4 * len(self.graph.nodes) + 4:
            raise ValueError("its nodes form a cycle")
        node = self.producers.get(tensor)
        if node is None:
            raise ValueError(f"tensor {tensor!r:.60} comes from no node, input or stored tensor on the path")
        self.used.add(id(node))
        return node

    def stored(self, name: str, *, what: str) -> Stored:
        """A tensor read from the file, directly or through a DequantizeLinear of stored tensors (int8 graphs)."""
        if name in self.graph.stored:
            return self.graph.stored[name]
        node = self.producer(name)
        if node.op != "DequantizeLinear" or not node.inputs or node.inputs[0] not in self.graph.stored:
            raise ValueError(f"{what} {name!r:.60} is computed by a {node.op}, not stored in the file")
        self._check_quantizer(node)
        self.quantized = True
        return self.graph.stored[node.inputs[0]]

    def _check_quantizer(self, node: Node) -> None:
        """Its scale and zero point stored: one value, or one per channel along `axis` of a stored tensor."""
        if len(node.inputs) not in (2, 3) or len(node.outputs) != 1 or not node.inputs[0] or not node.inputs[1]:
            raise ValueError(f"a {node.op} with {len(node.inputs)} inputs")
        if set(node.attributes) - {"axis"}:
            raise ValueError(f"a {node.op} with attributes {sorted(node.attributes)}")
        axis, quantized = node.attributes.get("axis", 1), self.graph.stored.get(node.inputs[0])
        for name in node.inputs[1:]:
            if name and name not in self.graph.stored:
                raise ValueError(f"a {node.op} whose scale or zero point {name!r:.60} is not stored in the file")
            dims = self.graph.stored[name].dims if name else ()
            if len(dims) > 1 or (
                dims
                and dims[0] != 1
                and not (
                    quantized is not None
                    and isinstance(axis, int)
                    and -len(quantized.dims) <= axis < len(quantized.dims)
                    and quantized.dims[axis] == dims[0]
                )
            ):
                raise ValueError(
                    f"a {node.op} whose scale or zero point {name!r:.60} of shape {list(dims)} is neither one value "
                    "nor one per channel of its tensor"
                )

    def layers(self, tensor: str, source: str) -> list[_Layer]:
        """The convolutions from `source` to `tensor`, first to last."""
        layers: list[_Layer] = []
        after: list[str] = []  # the ops met since the last Conv, last first
        while tensor != source:
            node = self.producer(tensor)
            if node.op == "Conv":
                layers.append(self._conv(node, after))
                after = []
            elif node.op == "Relu" or node.op in _QDQ:
                if node.op in _QDQ:
                    self._check_quantizer(node)
                    self.quantized = True
                elif len(node.inputs) != 1 or "Relu" in after:
                    raise ValueError("a Relu where the network has none")
                after.append(node.op)
            else:
                raise ValueError(f"a {node.op} inside the chain of convolutions")
            tensor = node.inputs[0] if node.inputs else ""
        if any(op == "Relu" for op in after):
            raise ValueError("a Relu on the input")
        return layers[::-1]

    def _conv(self, node: Node, after: list[str]) -> _Layer:
        if len(node.inputs) not in (2, 3) or len(node.outputs) != 1:
            raise ValueError(f"a Conv with {len(node.inputs)} inputs")
        weight = self.stored(node.inputs[1], what="a Conv's weight")
        bias = self.stored(node.inputs[2], what="a Conv's bias") if len(node.inputs) == 3 and node.inputs[2] else None
        dims = weight.dims
        if len(dims) != 4 or dims[2] != dims[3] or dims[2] % 2 == 0 or min(dims) < 1:
            raise ValueError(f"a Conv weight of shape {list(dims)}, not an odd square kernel")
        if bias is not None and bias.dims != dims[:1]:
            raise ValueError(f"a Conv bias of shape {list(bias.dims)} for {dims[0]} channels")
        k = dims[2]
        expected: dict[str, object] = {
            "kernel_shape": (k, k),
            "strides": (1, 1),
            "dilations": (1, 1),
            "pads": (k // 2,) * 4,
            "group": 1,
            "auto_pad": b"NOTSET",
        }
        for name, value in node.attributes.items():
            if name not in expected or value != expected[name]:
                raise ValueError(f"a Conv with {name}={value!r:.40}, not a size-keeping {k}x{k} convolution")
        if "pads" not in node.attributes and k > 1:
            raise ValueError(f"a {k}x{k} Conv without padding (its output would shrink)")
        relu = "Relu" in after
        return _Layer(dims, bias is not None, relu, relu or after[-1:] == ["QuantizeLinear"], node)


def recognise(graph: GraphView) -> Network:
    """The network `graph` holds; ValueError saying what is not as this package writes it."""
    for domain in graph.domains:
        if domain not in ONNX_DOMAINS:
            raise ValueError(f"it imports operator set {domain!r:.60} (only the default ONNX operators are accepted)")
    unknown = sorted(
        {f"{n.domain}.{n.op}".lstrip(".") for n in graph.nodes if n.op not in OPS or n.domain not in ONNX_DOMAINS}
    )
    if unknown:
        raise ValueError(f"it has {', '.join(unknown[:4])} nodes, which no VDSR or SRCNN network has")
    source, result = _one(graph.inputs, graph.stored, "input"), _one(graph.outputs, {}, "output")
    if source.elem_type not in (FLOAT, FLOAT16) or result.elem_type != source.elem_type:
        raise ValueError(
            f"its input and output are of types {source.elem_type} and {result.elem_type}, not float32 or float16"
        )
    for value in (source, result):
        if value.dims is not None and (len(value.dims) != 4 or value.dims[1] != 1):
            raise ValueError(f"its {value.name!r:.40} has shape {list(value.dims)}, not [batch, 1, height, width]")
        if value.dims is not None and any(isinstance(d, int) for d in value.dims[:1] + value.dims[2:]):
            raise ValueError(
                f"its {value.name!r:.40} has a fixed size {list(value.dims)}; batch, height and width must be free"
            )
    producers: dict[str, Node] = {}
    for node in graph.nodes:
        for name in node.outputs:
            if name in producers or name in graph.stored or name == source.name:
                raise ValueError(f"tensor {name!r:.60} is written twice")
            producers[name] = node
    walk = _Walk(graph, producers)
    skip = result.name in producers and producers[result.name].op == "Add"
    if skip:
        add = walk.producer(result.name)
        if len(add.inputs) != 2 or len(add.outputs) != 1:
            raise ValueError("an Add that is not the skip connection")
        branches = sorted((walk.layers(name, source.name) for name in add.inputs), key=len)
        if branches[0]:
            raise ValueError("an Add that does not add the input")
        layers = branches[1]
    else:
        layers = walk.layers(result.name, source.name)
    if len(walk.used) != len(graph.nodes):
        raise ValueError(f"{len(graph.nodes) - len(walk.used)} nodes off the path from its input to its output")
    unused = set(graph.stored) - {name for node in graph.nodes for name in node.inputs}
    if unused:
        raise ValueError(f"{len(unused)} stored tensors no node uses (such as {sorted(unused)[0]!r:.60})")
    config = _config(layers, skip=skip)
    _check_types(graph, layers, quantized=walk.quantized, elem_type=source.elem_type)
    precision = "fp16" if source.elem_type == FLOAT16 else "int8" if walk.quantized else "fp32"
    return Network(config, precision)


def _one(values: tuple[Value, ...], stored: dict[str, Stored], what: str) -> Value:
    values = tuple(v for v in values if v.name not in stored)  # old exporters list initializers as inputs too
    if len(values) != 1:
        raise ValueError(f"it has {len(values)} {what}s, not one")
    return values[0]


def _config(layers: list[_Layer], *, skip: bool) -> NetworkConfig:
    if not layers:
        raise ValueError("no convolution between its input and output")
    shapes = [layer.weight for layer in layers]
    if (
        shapes[0][1] != 1
        or shapes[-1][0] != 1
        or any(a[0] != b[1] for a, b in zip(shapes[:-1], shapes[1:], strict=True))
    ):
        raise ValueError(f"convolutions of {[list(s[:2]) for s in shapes][:4]} channels do not chain from 1 to 1")
    if any(not layer.clamped for layer in layers[:-1]) or layers[-1].relu:
        raise ValueError("Relus not after every convolution but the last")
    biases = {layer.bias for layer in layers}
    if skip:
        channels = shapes[0][0]
        if len(layers) < 2 or any(s[2] != 3 for s in shapes) or any(s[0] != channels for s in shapes[:-1]):
            raise ValueError("a skip connection around convolutions that are not VDSR's (3x3, one width)")
        fields: dict[str, object] = {"depth": len(layers), "channels": channels, "bias": True in biases}
        return network_config(Architecture.vdsr, fields)  # within the sizes any file may describe
    if len(layers) != 3:
        raise ValueError(f"{len(layers)} convolutions without a skip connection: not SRCNN's three")
    kernels, widths = [s[2] for s in shapes], [shapes[0][0], shapes[1][0]]
    return network_config(Architecture.srcnn, {"kernels": kernels, "channels": widths})


def _check_types(graph: GraphView, layers: list[_Layer], *, quantized: bool, elem_type: int) -> None:
    if quantized and elem_type != FLOAT:
        raise ValueError("a quantized graph with float16 input")
    for layer in layers:
        for name in layer.node.inputs[1:]:
            stored = graph.stored.get(name)
            if stored is not None and stored.data_type != elem_type:
                raise ValueError(
                    f"a Conv tensor {name!r:.60} of type {stored.data_type} in a graph of type {elem_type}"
                )
    allowed = QUANTIZED | {FLOAT} if quantized else {elem_type}
    for name, stored in graph.stored.items():
        if stored.data_type not in allowed:
            raise ValueError(f"stored tensor {name!r:.60} of type {stored.data_type} in a graph of type {elem_type}")
