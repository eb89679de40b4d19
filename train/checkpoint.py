"""Checkpoints without pickle: every tensor in one safetensors file, everything else as JSON in its metadata.

Holds the model, the optimizer state, the step, RNG states, the training config and the data hash, written
atomically (temp file, then rename) so a crash never leaves a half-written checkpoint. A SHA-256 of every tensor
(name, dtype, shape, bytes) travels in the metadata: flipped bytes are refused at load, as are fields of the wrong
type or range, model tensors that differ from the config's shapes (checked before anything is built) and NaN or inf.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save

from vdsr.architectures import network_config, parameter_shapes
from vdsr.errors import ModelError, first_line
from vdsr.files import atomic_write_bytes
from vdsr.weights import read_safetensors


@dataclass(frozen=True)
class Checkpoint:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, object]  # torch optimizer state_dict
    rng: torch.Tensor
    info: dict[str, object]  # step, config, data key, wall time, ...
    ema: dict[str, torch.Tensor] | None = None  # the moving average of the weights (config.ema > 0)


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
    tensors |= {f"ema.{k}": v.detach().contiguous() for k, v in (checkpoint.ema or {}).items()}
    metadata = {
        "info": json.dumps(checkpoint.info),
        "optimizer": json.dumps(optimizer_rest),
        "tensors_sha256": tensors_digest(tensors),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def load_checkpoint(path: Path) -> Checkpoint:
    """Raises ModelError naming the file and the first problem when it is not a sound checkpoint."""
    tensors, metadata = read_safetensors(path, "checkpoint")
    if "info" not in metadata or "optimizer" not in metadata or "rng.torch" not in tensors:
        raise ModelError(f"{path}: not a vdsr training checkpoint (metadata keys {sorted(metadata)})")
    if "tensors_sha256" not in metadata:
        raise ModelError(
            f"{path}: the checkpoint has no checksum of its tensors (written by vdsr before checkpoints "
            "carried one, or edited): it cannot be checked, so it is not resumed"
        )
    if metadata["tensors_sha256"] != tensors_digest(tensors):
        raise ModelError(f"{path}: the checkpoint's tensors do not match their checksum (a damaged or edited file)")
    model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k.removeprefix("ema."): v for k, v in tensors.items() if k.startswith("ema.")} or None
    if ema is not None and {k: v.shape for k, v in ema.items()} != {k: v.shape for k, v in model.items()}:
        raise ModelError(f"{path}: not a sound vdsr training checkpoint (its moving average is not the model's shape)")
    state: dict[int, dict[str, torch.Tensor]] = {}
    try:
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer = {"state": state, **json.loads(metadata["optimizer"])}
        info = json.loads(metadata["info"])
        _check_info(info, model)
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError) as error:  # a malformed name, JSON or field
        raise ModelError(f"{path}: not a sound vdsr training checkpoint ({first_line(error)})") from error
    bad = [name for name, tensor in tensors.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise ModelError(f"{path}: checkpoint tensors {', '.join(bad[:3])} hold NaN or inf")
    weights = [
        (f"{part}.{name}", tensor)
        for part, kept in (("model", model), ("ema", ema or {}))
        for name, tensor in kept.items()
    ]
    bad = [name for name, tensor in weights if not tensor.is_floating_point()]
    steps = {f"optimizer.{i}.step": entry["step"] for i, entry in state.items() if "step" in entry}
    bad += [name for name, step in steps.items() if step.numel() != 1 or bool(step < 0)]
    if bad:
        raise ModelError(f"{path}: not a sound vdsr training checkpoint ({', '.join(bad[:3])}: wrong type or range)")
    return Checkpoint(model=model, optimizer=optimizer, rng=tensors["rng.torch"], info=info, ema=ema)


def _check_info(info: object, model: dict[str, torch.Tensor]) -> None:
    """The fields the trainer reads, with their types and ranges; the model tensors against the config's shapes."""
    if not isinstance(info, dict):
        raise ValueError("its info is not a JSON object")
    step, wall, config, data = (info.get(k) for k in ("step", "wall_seconds", "config", "data"))
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"'step' is {step!r}, not a count")
    if not isinstance(wall, (int, float)) or isinstance(wall, bool) or not math.isfinite(wall) or wall < 0:
        raise ValueError(f"'wall_seconds' is {wall!r}, not a duration")
    if not isinstance(data, str):
        raise ValueError(f"'data' is {data!r}, not a data key")
    total = info.get("total_steps", 1)  # a budgeted schedule's measured length
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        raise ValueError(f"'total_steps' is {total!r}, not a count of steps")
    if not isinstance(config, dict):
        raise ValueError(f"'config' is {config!r:.60}, not a training config")
    architecture = config.get("architecture", config.get("model"))  # its name before issue 36: model
    network = config.get("network", config.get("model_config", {}))
    if not isinstance(network, dict):
        raise ValueError(f"'config' is {config!r:.60}, not a training config")
    expected = parameter_shapes(network_config(str(architecture), network), max_layers=len(model))
    if {k: tuple(v.shape) for k, v in model.items()} != expected:
        raise ValueError("its model tensors differ from what its config describes")
