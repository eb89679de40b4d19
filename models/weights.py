"""Trained weights as safetensors (no pickle), the architecture described in the file's own metadata (needs torch)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from vdsr.errors import ModelError
from vdsr.files import atomic_write_bytes
from vdsr.networks import SRCNN, VDSR, architecture_of, build_model, model_config


def save_weights(path: Path, model: VDSR | SRCNN, scales: list[int]) -> None:
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


def load_weights(path: Path) -> tuple[VDSR | SRCNN, list[int]]:
    """The model (fp32, CPU, eval mode) and the scales it was trained for."""
    tensors, metadata = read_safetensors(path, "weights file")
    if "architecture" not in metadata:
        raise ModelError(f"{path}: no 'architecture' in the safetensors metadata; not a vdsr weights file")
    try:
        model = build_model(metadata["architecture"], json.loads(metadata.get("config", "{}")))
        model.load_state_dict(tensors)
        scales = [int(s) for s in json.loads(metadata.get("scales", "[]"))]
    except (ValueError, TypeError, RuntimeError, KeyError) as error:  # unknown architecture, bad JSON, wrong tensors
        raise ModelError(f"{path}: weights do not match their metadata ({str(error).splitlines()[0]})") from error
    return model.eval(), scales


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
