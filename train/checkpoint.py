"""Checkpoints without pickle: every tensor in one safetensors file, everything else as JSON in its metadata.

Holds the model, the optimizer state, the step, RNG states, the training config and the data hash, written
atomically (temp file, then rename) so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save

from vdsr.errors import ModelError
from vdsr.files import atomic_write_bytes
from vdsr.weights import read_safetensors


@dataclass(frozen=True)
class Checkpoint:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, object]  # torch optimizer state_dict
    rng: torch.Tensor
    info: dict[str, object]  # step, config, data key, wall time, ...


def _optimizer_tensors(state: dict[str, object]) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    tensors: dict[str, torch.Tensor] = {}
    per_param = state["state"]
    assert isinstance(per_param, dict)
    for index, values in per_param.items():
        for name, value in values.items():
            if value is not None:  # SGD without momentum keeps None buffers: no state to save
                tensors[f"optimizer.{index}.{name}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    return tensors, {"param_groups": state["param_groups"]}


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    optimizer_tensors, optimizer_rest = _optimizer_tensors(checkpoint.optimizer)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in checkpoint.model.items()}
    tensors |= {k: v.detach().contiguous() for k, v in optimizer_tensors.items()}
    tensors["rng.torch"] = checkpoint.rng
    metadata = {"info": json.dumps(checkpoint.info), "optimizer": json.dumps(optimizer_rest)}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_checkpoint(path: Path) -> Checkpoint:
    """Raises ModelError naming the file when it is not a readable checkpoint."""
    tensors, metadata = read_safetensors(path, "checkpoint")
    if "info" not in metadata or "optimizer" not in metadata or "rng.torch" not in tensors:
        raise ModelError(f"{path}: not a vdsr training checkpoint (metadata keys {sorted(metadata)})")
    model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    state: dict[int, dict[str, torch.Tensor]] = {}
    try:
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer = {"state": state, **json.loads(metadata["optimizer"])}
        info = json.loads(metadata["info"])
    except ValueError as error:  # a malformed tensor name or JSON
        raise ModelError(f"{path}: not a vdsr training checkpoint ({error})") from error
    return Checkpoint(model=model, optimizer=optimizer, rng=tensors["rng.torch"], info=info)
