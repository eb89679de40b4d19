"""Trained weights as safetensors (no pickle), the network described in the file's own metadata (needs torch)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from vdsr.architectures import parameter_shapes
from vdsr.errors import ModelError
from vdsr.files import atomic_write_bytes, read_model_file
from vdsr.metadata import read_weights, weights_metadata
from vdsr.networks import SRCNN, VDSR, network

MAX_FILE_BYTES = 1 << 30  # a weights file or checkpoint larger is refused (VDSR: 2.7 MB, its checkpoint 11 MB)


def save_weights(path: Path, model: VDSR | SRCNN, scales: list[float]) -> None:
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata=weights_metadata(model.config, scales)))


def read_safetensors(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file, read once (the bytes checked are the bytes loaded);
    ModelError naming the file when it cannot be read."""
    data = read_model_file(path, limit=MAX_FILE_BYTES)
    try:
        tensors = load(data)
        (length,) = struct.unpack("<Q", data[:8])  # a well-formed header: load checked it
        metadata = json.loads(data[8 : 8 + length]).get("__metadata__") or {}
    except (OSError, ValueError, SafetensorError, struct.error, KeyError) as error:  # KeyError: a type torch lacks
        raise ModelError(f"{path}: not a readable {kind} ({error})") from error
    return tensors, metadata


def load_weights(path: Path) -> tuple[VDSR | SRCNN, list[float]]:
    """The model (fp32, CPU, eval mode) and the scales it was trained for. The file's own description (architecture,
    config) must match its tensors' names and shapes before any model is built (vdsr.metadata.read_weights), and
    every weight must be finite: a file from elsewhere cannot make this allocate more than it holds, or run with NaN
    weights."""
    facts = read_weights(path)
    assert facts.config is not None  # weights always say their network
    tensors, _ = read_safetensors(path, "weights file")
    if {name: tuple(t.shape) for name, t in tensors.items()} != parameter_shapes(facts.config):
        raise ModelError(f"{path}: changed while it was read (its tensors no longer match its header)")
    bad = [name for name, tensor in tensors.items() if not bool(torch.isfinite(tensor.float()).all())]
    if bad:  # in fp32, the model's type: an F64 1e300 is finite until it is cast
        raise ModelError(f"{path}: weights {', '.join(bad[:3])} hold NaN or inf (in fp32)")
    model = network(facts.config)
    model.load_state_dict(tensors)
    return model.eval(), list(facts.scales)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
