"""The models this package ships: their names, families and files (package data beside this module).

A shipped model is a set of files: NAME.safetensors (weights), NAME.json (its model card: architecture, trained
scales, halo, measured PSNR, ...) and ONNX graphs NAME.onnx (fp32), NAME_fp16.onnx and NAME_int8.onnx. vdsr is the
paper's (clean small images, x2-x4); vdsr_real the same network fine-tuned for real small images (JPEG, noise) at
any scale from x1.5 to x4. SRCNN ships one model per scale, as in its paper: srcnn (x2), srcnn_x3, srcnn_x4.
vdsr.model.Model reads a model's facts from these files.
"""

from __future__ import annotations

from pathlib import Path

from vdsr.errors import ModelError, UsageError
from vdsr.metadata import GRAPH_PRECISIONS, card_architecture, card_scales, read_card
from vdsr.scale import scale_label

# the shipped models by family: what vdsr-bench scores as one method (SRCNN: one model per scale, as in its paper)
FAMILIES = {"vdsr": ("vdsr",), "vdsr_real": ("vdsr_real",), "srcnn": ("srcnn", "srcnn_x3", "srcnn_x4")}
MODELS = tuple(name for family in FAMILIES.values() for name in family)  # in the order the commands list them
DEFAULT_OPSET = 18  # the ONNX opset vdsr-export writes (TensorRT 10 and ONNX Runtime >= 1.17 read it)


def shipped(filename: str) -> Path:
    """A file shipped with the package beside this module: weights, ONNX graphs, model cards (e.g. vdsr.safetensors)."""
    return Path(__file__).with_name(filename)


def graph_name(stem: str, precision: str) -> str:
    """The file name of a model's ONNX graph: vdsr.onnx (fp32), vdsr_fp16.onnx, vdsr_int8.onnx."""
    if precision not in GRAPH_PRECISIONS:
        raise UsageError(f"Unknown graph precision {precision!r}; expected one of: {', '.join(GRAPH_PRECISIONS)}")
    return f"{stem}.onnx" if precision == "fp32" else f"{stem}_{precision}.onnx"


def model_card(name: str) -> dict[str, object]:
    """The model card of a shipped model (NAME.json, written by vdsr-train)."""
    try:
        return read_card(shipped(f"{name}.json"))
    except ModelError as error:
        raise ModelError(f"{error}; reinstall vdsr") from error


def family_architecture(family: str) -> str:
    """The network a family's models are (vdsr_real: vdsr), as their model cards say."""
    return card_architecture(model_card(FAMILIES[family][0]))


def models_trained_for(scale: float) -> list[str]:
    """The shipped models trained for scales spanning `scale`, as their model cards say (a model whose card is
    missing or unreadable is left out)."""
    names = []
    for name in MODELS:
        try:
            scales = card_scales(model_card(name))
        except (ModelError, ValueError):
            continue
        if scales and min(scales) <= scale <= max(scales):
            names.append(name)
    return names


def untrained_warning(scale: float, trained: list[float] | tuple[float, ...]) -> str | None:
    """The warning for running a model trained for `trained` scales at `scale`, naming the shipped models trained for
    it; None within them (or when they are not recorded)."""
    if not trained or min(trained) <= scale <= max(trained):
        return None
    better = models_trained_for(scale)
    risk = (
        ": it can do worse than bicubic there (vdsr at x1.5: 2.2 dB below bicubic on Set5)"
        if scale < min(trained)
        else ": its results there are not measured"
    )
    label = scale_label(scale)
    return f"warning: x{label} is outside the scales the model was trained for ({list(trained)}){risk}" + (
        f"; models trained for x{label}: {', '.join(better)}" if better else ""
    )
