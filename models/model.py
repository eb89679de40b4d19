"""`vdsr.Model`: everything known about one model, read once from its files; every consumer asks it.

    model = Model.load("vdsr")                   # a shipped model: weights, graphs by precision, card
    model = Model.load("my.onnx")                 # a graph given by path: known by its nodes, run as it is
    model = Model.load("runs/x/vdsr.safetensors")  # weights: the PyTorch backends run them

It carries the network (architecture, config), the scales it was trained for, its halo, its files (weights, and
ONNX graphs by precision with the int8 graph's measured cost), the card of a shipped model, and what the runtime
needs to size its work (working memory per window pixel on CPUs). Loading needs neither torch nor onnx.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vdsr import architectures
from vdsr.architectures import NetworkConfig, widest_channels
from vdsr.catalogue import MODELS, graph_name, shipped
from vdsr.errors import ModelError, UsageError
from vdsr.metadata import GRAPH_PRECISIONS, Facts, GraphFacts, Int8Facts, read_card, read_graph, read_weights
from vdsr.onnx_file import read_onnx


@dataclass(frozen=True)
class Graph:
    """One ONNX graph of a model."""

    path: Path
    precision: str  # fp32, fp16 or int8
    weights_sha256: str | None = None  # of the weights it was exported from
    int8: Int8Facts | None = None  # an int8 graph's recipe and measured cost (vdsr-export --int8)

    @property
    def int8_within_bar(self) -> bool:
        """An int8 graph whose measured PSNR cost is within the bar: the runtime runs it by default."""
        return self.int8 is not None and self.int8.within_bar


@dataclass(frozen=True)
class Model:
    name: str  # a shipped model's name, or a file's stem
    architecture: str  # vdsr or srcnn
    config: NetworkConfig
    scales: tuple[float, ...]  # trained for; (): not recorded
    halo: int  # receptive-field radius: how far an output pixel sees
    weights: Path | None = None
    graphs: Mapping[str, Graph] = field(default_factory=dict)  # by precision
    card: Mapping[str, object] | None = None  # a shipped model's NAME.json
    given: bool = False  # a graph given by path: the runtime runs it as it is, with no choice of precision

    @classmethod
    def load(cls, model: str | Path | Model | None = None) -> Model:
        """A shipped model by name (vdsr.catalogue.MODELS; 'vdsr' by default), or the path of an .onnx graph or
        .safetensors weights. UsageError for a name or path that is neither; ModelError for a file that is not a
        sound model file."""
        if isinstance(model, Model):
            return model
        model = model or "vdsr"
        if not isinstance(model, str | os.PathLike):
            raise UsageError(f"Expected a model name or path, got {type(model).__name__} {model!r:.40}")
        if str(model) in MODELS:
            return _shipped(str(model))
        path = Path(model)
        if not path.is_file():
            raise UsageError(
                f"--model {model}: expected a shipped model ({', '.join(MODELS)}) or an existing .onnx or "
                ".safetensors file"
            )
        if path.suffix.lower() == ".onnx":
            _, facts = read_graph(path)
            return _model(path.stem, facts.facts, graphs={facts.precision: _graph(path, facts)}, given=True)
        if path.suffix.lower() == ".safetensors":
            return _model(path.stem, read_weights(path), weights=path)
        raise UsageError(f"--model {path}: expected an .onnx graph or .safetensors weights")

    def graph_bytes(self, precision: str) -> bytes:
        """The bytes of the `precision` graph, read again and checked again (vdsr.onnx_file) for a runtime to be
        given: ModelError if the file now holds another network than the one this model was loaded with."""
        path = self.graphs[precision].path
        graph = read_onnx(path)
        if architectures.halo(graph.network.config) != self.halo or graph.network.precision != precision:
            raise ModelError(f"{path}: changed since it was loaded (now {graph.network}); load it again")
        return graph.data

    @property
    def window_bytes_per_pixel(self) -> int:
        """ONNX Runtime's working memory on CPUs per window pixel: 64 + 14 x the widest layer's channels bytes, 960
        for the shipped models (peak resident growth measured on ONNX Runtime 1.32, arena included, fp32 and int8,
        windows of 0.25-4 MP: VDSR-64 534-811, SRCNN 469-497, an 8-channel VDSR 106-174, so about 15% to spare;
        bench/results/window_memory_cpu.md)."""
        return 64 + 14 * widest_channels(self.config)


def _graph(path: Path, facts: GraphFacts) -> Graph:
    return Graph(path, facts.precision, facts.weights_sha256, facts.int8)


def _model(
    name: str,
    facts: Facts,
    *,
    weights: Path | None = None,
    graphs: dict[str, Graph] | None = None,
    card: dict[str, object] | None = None,
    given: bool = False,
) -> Model:
    return Model(name, facts.architecture, facts.config, facts.scales, facts.halo, weights, graphs or {}, card, given)


def _shipped(name: str) -> Model:
    """A shipped model from its files; each graph must say what its weights say (one network, one set of scales)."""
    graphs: dict[str, Graph] = {}
    facts: Facts | None = None
    weights = shipped(f"{name}.safetensors")
    if weights.is_file():
        facts = read_weights(weights)
    for precision in GRAPH_PRECISIONS:
        path = shipped(graph_name(name, precision))
        if not path.is_file():
            continue
        _, graph = read_graph(path)
        if graph.precision != precision:
            raise ModelError(f"{path}: a {graph.precision} graph under the name of the {precision} one; reinstall vdsr")
        if facts is not None and graph.facts != facts:
            raise ModelError(f"{path}: says another network or scales than {weights.name}; reinstall vdsr")
        facts = facts or graph.facts
        graphs[precision] = _graph(path, graph)
    if facts is None:
        raise ModelError(f"No shipped {name} model in {weights.parent}: reinstall vdsr, or give --model PATH")
    card_path = shipped(f"{name}.json")
    card = read_card(card_path) if card_path.is_file() else None
    return _model(name, facts, weights=weights if weights.is_file() else None, graphs=graphs, card=card)
