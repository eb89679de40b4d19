"""Trained weights as safetensors (no pickle), the architecture described in the file's own metadata (needs torch)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from vdsr.catalogue import trained_scales
from vdsr.errors import ModelError, first_line
from vdsr.files import atomic_write_bytes
from vdsr.networks import SRCNN, VDSR, architecture_of, build_model, model_config, parameter_shapes


def save_weights(path: Path, model: VDSR | SRCNN, scales: list[float]) -> None:
    metadata = {
        "architecture": architecture_of(model),
        "config": json.dumps(model_config(model)),
        "scales": json.dumps(scales),
    }
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_safetensors(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file; ModelError naming the file when it cannot be read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (OSError, ValueError, SafetensorError) as error:
        raise ModelError(f"{path}: not a readable {kind} ({error})") from error


def declared_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """The tensor names and shapes a safetensors file declares in its header, and its metadata, without reading a
    tensor (the file's size bounds what loading it then costs)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, f.metadata() or {}
    except (OSError, ValueError, SafetensorError) as error:
        raise ModelError(f"{path}: not a readable weights file ({error})") from error


def load_weights(path: Path) -> tuple[VDSR | SRCNN, list[float]]:
    """The model (fp32, CPU, eval mode) and the scales it was trained for. The file's own description (architecture,
    config) must match its tensors' names and shapes before any model is built, and every weight must be finite:
    a file from elsewhere cannot make this allocate more than it holds, or run with NaN weights."""
    shapes, metadata = declared_shapes(path)
    if "architecture" not in metadata:
        raise ModelError(f"{path}: no 'architecture' in the safetensors metadata; not a vdsr weights file")
    try:
        config = json.loads(metadata.get("config", "{}"))
        expected = parameter_shapes(metadata["architecture"], config, max_layers=len(shapes))
        if shapes != expected:
            wrong = sorted(set(shapes) ^ set(expected)) or [k for k in expected if shapes[k] != expected[k]]
            raise ValueError(f"tensors {', '.join(wrong[:3])} differ from what the config describes")
        scales = trained_scales(metadata.get("scales", "[]"))
    except (ValueError, TypeError, KeyError) as error:  # unknown architecture, bad JSON, other tensors
        raise ModelError(f"{path}: weights do not match their metadata ({first_line(error)})") from error
    tensors, _ = read_safetensors(path, "weights file")
    bad = [name for name, tensor in tensors.items() if not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ModelError(f"{path}: weights {', '.join(bad[:3])} hold NaN or inf")
    model = build_model(metadata["architecture"], config)
    model.load_state_dict(tensors)
    return model.eval(), scales


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
