"""What a model's files say of it, written and read here only: the metadata of safetensors weights, the
metadata_props of ONNX graphs (fp32, fp16, int8 with its measured cost) and the model card (NAME.json).

Every reader checks what it reads and raises ModelError naming the file; vdsr.model.Model gathers the facts of one
model from its files through these readers.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from vdsr.architectures import (
    NetworkConfig,
    VDSRConfig,
    architecture_name,
    config_fields,
    halo,
    network_config,
    parameter_shapes,
)
from vdsr.errors import ImageError, ModelError, first_line
from vdsr.files import open_regular
from vdsr.onnx_file import OnnxFile, read_onnx
from vdsr.onnx_network import Network
from vdsr.scale import MAX_SCALE

GRAPH_PRECISIONS = ("fp32", "fp16", "int8")  # the ONNX graphs a model can come as (vdsr-export)
COLOR_CONVENTION = "Y of BT.601 studio-range YCbCr, in [0, 1]; input is the MATLAB-bicubic upscaled image (ILR)"
CARD_INPUT = "ILR luminance: BT.601 studio-range Y in [0, 1], MATLAB-bicubic upscaled; output the same"
MAX_HEADER_BYTES = 100_000_000  # a safetensors header larger than this is refused (the safetensors library's limit)


@dataclass(frozen=True)
class Facts:
    """What one file holds: its network (a graph's as its nodes are, checked against what its metadata says) and the
    scales it was trained for."""

    architecture: str
    config: NetworkConfig
    scales: tuple[float, ...]  # the scales it was trained for; (): not recorded
    halo: int


@dataclass(frozen=True)
class Int8Facts:
    """How an int8 graph was made and what it was measured to cost (vdsr-export --int8, vdsr.export.quantize)."""

    within_bar: bool  # every cell's PSNR cost within its bar: the runtime runs it by default
    max_cost_db: float
    cost_db: dict[str, float]  # per 'Set5 x2 bicubic' cell
    bar_db: dict[str, float]  # per input kind
    kept_fp32: list[str]  # convolutions left in fp32
    calibration: str
    selection: str


@dataclass(frozen=True)
class GraphFacts:
    """What an ONNX graph says besides its network: its precision, the weights it was made from, and for an int8
    graph its recipe and measured cost."""

    facts: Facts
    precision: str
    weights_sha256: str | None
    int8: Int8Facts | None  # None: not an int8 graph, or one written before its cost was measured


def trained_scales(text: str) -> tuple[float, ...]:
    """The scales a file records (JSON list): integers stay ints (2, not 2.0). ValueError if they are not."""
    values = json.loads(text)
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 1 < v <= MAX_SCALE for v in values
    ):
        raise ValueError(f"scales {text[:60]!r} are not a list of numbers in 1 < s <= 8")
    return tuple(int(v) if float(v).is_integer() else float(v) for v in values)


def _network(architecture: str, config_text: str | None) -> NetworkConfig:
    fields = json.loads(config_text) if config_text else {}
    if not isinstance(fields, dict):
        raise ValueError(f"config {config_text!r:.60} is not a JSON object")
    return network_config(architecture, fields)


# --- safetensors weights ---------------------------------------------------------------------------------------


def weights_metadata(config: NetworkConfig, scales: list[float]) -> dict[str, str]:
    """The metadata vdsr-train writes into a weights file."""
    return {
        "architecture": architecture_name(config),
        "config": json.dumps(config_fields(config)),
        "scales": json.dumps(scales),
    }


FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors' names of the types weights are stored in


def weights_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """The tensor names and shapes a safetensors file declares in its header, and its metadata, read without torch
    and without reading a tensor. ModelError naming the file if the header is not one (a shape must be a list of
    integers >= 0; a header nested too deep or with numbers out of range is refused as malformed)."""
    try:
        with open_regular(path) as f:  # a FIFO swapped in after the caller's checks is refused, not read forever
            size = f.seek(0, 2)
            f.seek(0)
            (length,) = struct.unpack("<Q", f.read(8).rjust(8, b"\0"))
            if size < 8 or length > min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"a header of {length} bytes in a file of {size}")
            header = json.loads(f.read(length).decode("utf-8"))
    except ImageError as error:
        raise ModelError(f"{path}: {error.cause}") from None
    except OSError as error:
        raise ModelError(f"{path}: not a readable weights file ({error.strerror or error})") from error
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ModelError(f"{path}: not a readable weights file (not safetensors: {first_line(error)})") from error
    try:
        raw = header.pop("__metadata__", None) or {}
        metadata = {str(k): str(v) for k, v in raw.items()}
        shapes = {name: _shape(tensor["shape"]) for name, tensor in header.items()}
        dtypes = {name: str(tensor["dtype"]) for name, tensor in header.items()}
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as error:
        raise ModelError(f"{path}: not a readable weights file (a malformed header)") from error
    wrong = [f"{name} ({dtype:.10})" for name, dtype in dtypes.items() if dtype not in FLOAT_DTYPES]
    if wrong:
        raise ModelError(f"{path}: weights {', '.join(wrong[:3])} are not floating point")
    return shapes, metadata


def _shape(value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value):
        raise ValueError(f"a shape {value!r:.40} is not a list of integers >= 0")
    return tuple(value)


def read_weights_metadata(metadata: dict[str, str], source: object) -> Facts:
    """The facts of a weights file's metadata. ModelError naming `source` when they are missing or not valid."""
    if "architecture" not in metadata:
        raise ModelError(f"{source}: no 'architecture' in the safetensors metadata; not a vdsr weights file")
    try:
        config = _network(metadata["architecture"], metadata.get("config"))
        scales = trained_scales(metadata.get("scales", "[]"))
    except (ValueError, TypeError, RecursionError, OverflowError) as error:  # unknown architecture, bad JSON
        raise ModelError(f"{source}: weights do not match their metadata ({first_line(error)})") from error
    return Facts(architecture_name(config), config, scales, halo(config))


def read_weights(path: Path) -> Facts:
    """The facts of a weights file, its tensors' names and shapes checked against them before anything is loaded:
    a file from elsewhere cannot make a loader allocate more than it holds."""
    shapes, metadata = weights_header(path)
    facts = read_weights_metadata(metadata, path)
    assert facts.config is not None  # read_weights_metadata always has one
    try:
        expected = parameter_shapes(facts.config, max_layers=len(shapes))
        if shapes != expected:
            wrong = sorted(set(shapes) ^ set(expected)) or [k for k in expected if shapes[k] != expected[k]]
            raise ValueError(f"tensors {', '.join(wrong[:3])} differ from what the config describes")
    except ValueError as error:
        raise ModelError(f"{path}: weights do not match their metadata ({first_line(error)})") from error
    return facts


# --- ONNX graphs --------------------------------------------------------------------------------------------------


def graph_metadata(
    config: NetworkConfig, scales: list[float], *, precision: str, weights_sha256: str, producer: str
) -> dict[str, str]:
    """The metadata_props vdsr-export writes into a graph: what the runtime needs to run it."""
    return weights_metadata(config, scales) | {
        "color": COLOR_CONVENTION,
        "halo": str(halo(config)),
        "precision": precision,
        "weights_sha256": weights_sha256,
        "producer": producer,
    }


def int8_metadata(
    *, calibration: str, kept: list[str], selection: str, cost: dict[str, float], bar: dict[str, float], within: bool
) -> dict[str, str]:
    """What vdsr-export --int8 adds to the fp32 graph's metadata: the recipe and its measured cost against the bar."""
    return {
        "precision": "int8",
        "calibration": calibration,
        "int8_kept_fp32": json.dumps(kept),
        "int8_selection": selection,
        "int8_cost_db": json.dumps(cost),
        "int8_max_cost_db": f"{max(cost.values()):.4f}",
        "int8_bar_db": json.dumps(bar),
        "int8_within_bar": "true" if within else "false",
    }


def read_graph_metadata(metadata: dict[str, str], network: Network, source: object) -> GraphFacts:
    """The facts of a graph whose nodes hold `network` (vdsr.onnx_network), with its metadata_props: what they say
    of the network (architecture, config, halo, precision) must be what the nodes hold, or be left unsaid.
    ModelError naming `source` for values that are not valid or say otherwise."""
    try:
        said: dict[str, object] = {
            key: metadata[key] for key in ("architecture", "halo", "precision") if key in metadata
        }
        if "architecture" in metadata and "config" in metadata:
            said["config"] = _network(metadata["architecture"], metadata["config"])
        if "halo" in said:
            said["halo"] = int(metadata["halo"])
        scales = trained_scales(metadata.get("scales", "[]"))
        int8 = _int8(metadata) if "int8_within_bar" in metadata else None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError) as error:
        raise ModelError(f"{source}: the graph's metadata is not valid ({first_line(error)})") from error
    config = network.config
    said_config = said.get("config")
    if isinstance(config, VDSRConfig) and isinstance(said_config, VDSRConfig) and said_config.bias:
        config = replace(config, bias=True)  # biases that are all zero are dropped by the exporter
    found = {
        "architecture": architecture_name(config),
        "config": config,
        "halo": halo(config),
        "precision": network.precision,
    }
    for key, value in said.items():
        if value != found[key]:
            raise ModelError(
                f"{source}: the graph's metadata says {key} {value!r:.80}, its nodes hold {found[key]!r:.80}"
            )
    facts = Facts(architecture_name(config), config, scales, halo(config))
    return GraphFacts(facts, network.precision, metadata.get("weights_sha256"), int8)


def _int8(metadata: dict[str, str]) -> Int8Facts:
    cost = {str(k): float(v) for k, v in json.loads(metadata.get("int8_cost_db", "{}")).items()}
    bar = {str(k): float(v) for k, v in json.loads(metadata.get("int8_bar_db", "{}")).items()}
    kept = [str(name) for name in json.loads(metadata.get("int8_kept_fp32", "[]"))]
    max_cost = float(metadata.get("int8_max_cost_db", "nan"))
    return Int8Facts(
        metadata["int8_within_bar"] == "true",
        max_cost,
        cost,
        bar,
        kept,
        metadata.get("calibration", ""),
        metadata.get("int8_selection", ""),
    )


def read_graph(path: Path) -> tuple[OnnxFile, GraphFacts]:
    """An ONNX graph checked to be self-contained and a network this package knows (vdsr.onnx_file), and its facts."""
    graph = read_onnx(path)
    return graph, read_graph_metadata(graph.metadata, graph.network, path)


# --- model cards --------------------------------------------------------------------------------------------------


def card_facts(config: NetworkConfig, scales: list[float], *, weights: str) -> dict[str, object]:
    """The model card's facts of the network, the first fields of NAME.json (vdsr-train adds the recipe, data,
    steps, time and measured PSNR)."""
    return {
        "architecture": architecture_name(config),
        "config": config_fields(config),
        "parameters": sum(math.prod(shape) for shape in parameter_shapes(config).values()),
        "halo": halo(config),
        "scales": list(scales),
        "input": CARD_INPUT,
        "weights": weights,
    }


def read_card(path: Path) -> dict[str, object]:
    """A model card (NAME.json); ModelError naming the file if it is not a readable JSON object."""
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: not a readable model card ({error})") from error
    if not isinstance(card, dict):
        raise ModelError(f"{path}: not a model card (a JSON object)")
    return card


def card_scales(card: dict[str, object]) -> tuple[float, ...]:
    """The trained scales a card records; ValueError if it records none that are valid."""
    return trained_scales(json.dumps(card.get("scales")))


def card_architecture(card: dict[str, object]) -> str:
    """The network a card says its model is (vdsr_real: vdsr)."""
    return str(card.get("architecture"))
