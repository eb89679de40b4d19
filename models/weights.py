"""Trained weights as safetensors (no pickle), the network described in the file's own metadata (needs torch)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from vdsr.errors import ModelError
from vdsr.files import atomic_write_bytes
from vdsr.metadata import read_weights, weights_metadata
from vdsr.networks import SRCNN, VDSR, network


def save_weights(path: Path, model: VDSR | SRCNN, scales: list[float]) -> None:
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata=weights_metadata(model.config, scales)))


def read_safetensors(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file; ModelError naming the file when it cannot be read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (OSError, ValueError, SafetensorError) as error:
        raise ModelError(f"{path}: not a readable {kind} ({error})") from error


def load_weights(path: Path) -> tuple[VDSR | SRCNN, list[float]]:
    """The model (fp32, CPU, eval mode) and the scales it was trained for. The file's own description (architecture,
    config) must match its tensors' names and shapes before any model is built (vdsr.metadata.read_weights), and
    every weight must be finite: a file from elsewhere cannot make this allocate more than it holds, or run with NaN
    weights."""
    facts = read_weights(path)
    assert facts.config is not None  # weights always say their network
    tensors, _ = read_safetensors(path, "weights file")
    bad = [name for name, tensor in tensors.items() if not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ModelError(f"{path}: weights {', '.join(bad[:3])} hold NaN or inf")
    model = network(facts.config)
    model.load_state_dict(tensors)
    return model.eval(), list(facts.scales)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
