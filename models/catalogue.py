"""The networks this package defines and the models it ships: names, files by precision, model cards.

A shipped model is a set of files beside this module (package data): NAME.safetensors (weights), NAME.json (its model
card: architecture, trained scales, halo, measured PSNR, ...) and ONNX graphs NAME.onnx (fp32), NAME_fp16.onnx and
NAME_int8.onnx. vdsr is the paper's (clean small images, x2-x4); vdsr_real the same network fine-tuned for real
small images (JPEG, noise) at any scale from x1.5 to x4. SRCNN ships one model per scale, as in its paper: srcnn
(x2), srcnn_x3, srcnn_x4.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from vdsr.errors import ModelError, UsageError


class Architecture(str, Enum):
    """The networks of vdsr.networks, by the name weights, graphs and model cards record."""

    vdsr = "vdsr"
    srcnn = "srcnn"


# the shipped models by family: what vdsr-bench scores as one method (SRCNN: one model per scale, as in its paper)
FAMILIES = {"vdsr": ("vdsr",), "vdsr_real": ("vdsr_real",), "srcnn": ("srcnn", "srcnn_x3", "srcnn_x4")}
MODELS = tuple(name for family in FAMILIES.values() for name in family)  # in the order the commands list them
GRAPH_PRECISIONS = ("fp32", "fp16", "int8")  # the ONNX graphs a model can come as (vdsr-export)
DEFAULT_OPSET = 18  # the ONNX opset vdsr-export writes (TensorRT 10 and ONNX Runtime >= 1.17 read it)


def trained_scales(text: str) -> list[float]:
    """The scales a weights file or graph records (JSON list): integers stay ints (2, not 2.0). ValueError if not."""
    values = json.loads(text)
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and 1 < v <= 8 for v in values):
        raise ValueError(f"scales {text[:60]!r} are not a list of numbers in 1 < s <= 8")
    return [int(v) if float(v).is_integer() else float(v) for v in values]


def shipped(filename: str) -> Path:
    """A file shipped with the package beside this module: weights, ONNX graphs, model cards (e.g. vdsr.safetensors)."""
    return Path(__file__).with_name(filename)


def graph_name(stem: str, precision: str) -> str:
    """The file name of a model's ONNX graph: vdsr.onnx (fp32), vdsr_fp16.onnx, vdsr_int8.onnx."""
    if precision not in GRAPH_PRECISIONS:
        raise UsageError(f"Unknown graph precision {precision!r}; expected one of: {', '.join(GRAPH_PRECISIONS)}")
    return f"{stem}.onnx" if precision == "fp32" else f"{stem}_{precision}.onnx"


@dataclass(frozen=True)
class ModelFiles:
    """The files one model comes as: ONNX graphs by precision (fp32, fp16, int8), safetensors weights (or None).
    A graph given by path is filed under "given": it runs as it is."""

    name: str
    graphs: dict[str, Path]
    weights: Path | None


def model_files(model: str | Path | None = None) -> ModelFiles:
    """A shipped model by name (see MODELS; 'vdsr' by default), or the path of an .onnx graph or .safetensors file."""
    model = model or "vdsr"
    if str(model) in MODELS:
        names = {precision: graph_name(str(model), precision) for precision in GRAPH_PRECISIONS}
        graphs = {precision: shipped(name) for precision, name in names.items() if shipped(name).is_file()}
        weights = shipped(f"{model}.safetensors")
        if not graphs and not weights.is_file():
            raise ModelError(f"No shipped {model} model in {shipped('')}: reinstall vdsr, or give --model PATH")
        return ModelFiles(str(model), graphs, weights if weights.is_file() else None)
    path = Path(model)
    if not path.is_file():
        raise UsageError(
            f"--model {model}: expected a shipped model ({', '.join(MODELS)}) or an existing .onnx or .safetensors file"
        )
    if path.suffix == ".onnx":
        return ModelFiles(path.stem, {"given": path}, None)
    if path.suffix == ".safetensors":
        return ModelFiles(path.stem, {}, path)
    raise UsageError(f"--model {path}: expected an .onnx graph or .safetensors weights")


def model_card(name: str) -> dict[str, object]:
    """The model card of a shipped model (NAME.json, written by vdsr-train)."""
    path = shipped(f"{name}.json")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: not a readable model card ({error}); reinstall vdsr") from error
    if not isinstance(card, dict):
        raise ModelError(f"{path}: not a model card (a JSON object)")
    return card


def family_architecture(family: str) -> str:
    """The network a family's models are (vdsr_real: vdsr), as their model cards say."""
    return str(model_card(FAMILIES[family][0]).get("architecture"))


def models_trained_for(scale: float) -> list[str]:
    """The shipped models trained for scales spanning `scale`, as their model cards say (a model whose card is
    missing or unreadable is left out)."""
    names = []
    for name in MODELS:
        try:
            scales = trained_scales(json.dumps(model_card(name).get("scales")))
        except (ModelError, ValueError):
            continue
        if scales and min(scales) <= scale <= max(scales):
            names.append(name)
    return names
