"""Resuming a run: a checkpoint loaded into the model and optimiser once checked to be this run's (config, data,
optimiser settings and state shapes), and the log lines written after it dropped (those steps run again)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from vdsr.errors import ModelError, TrainingError, first_line
from vdsr.train.checkpoint import Checkpoint, load_checkpoint
from vdsr.train.config import TrainConfig, config_from_json
from vdsr.train.data import PatchSet
from vdsr.train.device_data import DeviceBatches


def logged_step(line: str) -> float:
    """The step of a train_log.jsonl line; a line cut short by a crash counts as after every checkpoint."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def restore(
    checkpoint_path: Path,
    config: TrainConfig,
    data: PatchSet | DeviceBatches,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> Checkpoint:
    """Load a checkpoint of this config and data into model and optimizer (and the torch RNG); the checkpoint, for its
    step, wall time, moving average and budgeted length."""
    try:
        saved = load_checkpoint(checkpoint_path)
    except ModelError as error:
        raise TrainingError(str(error)) from error
    may_change = {"max_steps": config.max_steps, "bf16": config.bf16}  # on resume
    saved_config = config_from_json(saved.info["config"], **may_change)  # type: ignore[arg-type]
    if saved_config != config or saved.info["data"] != data.key:
        raise TrainingError(f"{checkpoint_path} was written with another config or data; use another --output")
    model.load_state_dict(saved.model)
    expected_groups = optimizer.state_dict()["param_groups"]
    try:
        state = saved.optimizer["state"]
        unknown = (
            sorted(set(state) - {i for group in expected_groups for i in group["params"]})
            if isinstance(state, dict)
            else ["(not a mapping)"]
        )
        if unknown:
            raise ValueError(f"state for parameters {unknown[:3]} the model does not have")
        optimizer.load_state_dict(saved.optimizer)
        _check_optimizer(optimizer, expected_groups)
        torch.set_rng_state(saved.rng)
    except (ValueError, TypeError, KeyError, RuntimeError) as error:
        raise TrainingError(f"{checkpoint_path}: its optimizer state does not fit ({first_line(error)})") from error
    return saved


def _check_optimizer(optimizer: torch.optim.Optimizer, expected_groups: list[dict[str, object]]) -> None:
    """After loading: the hyperparameters are the config's (lr aside: it is set every step) and every state tensor
    has its parameter's shape (a scalar step count aside)."""
    loaded = json.loads(json.dumps(optimizer.state_dict()["param_groups"]))  # tuples as lists, as the file has them
    for want, got in zip(json.loads(json.dumps(expected_groups)), loaded, strict=True):
        differ = sorted(k for k in want.keys() | got.keys() if k != "lr" and want.get(k) != got.get(k))
        if differ:
            raise ValueError(f"settings {', '.join(differ)} differ from the config")
    for param, state in optimizer.state.items():
        for name, value in state.items():
            shape = () if name == "step" else tuple(param.shape)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                raise ValueError(f"state {name!r} is not a tensor of shape {shape}")
