"""Tail averaging: the mean of a run's weights over the last stretch of its schedule (`vdsr-train --average-from`).

Averaging the checkpoints a cosine schedule passes through near its end gives a flatter, slightly better model than
its last step alone (Izmailov et al. 2018, "Averaging weights leads to wider optima"). With --keep-checkpoints the
trainer keeps a copy of each periodic checkpoint in OUTPUT/checkpoints/step-NNNNNNN.safetensors; the average is over
the periodic steps from --average-from on and the last step, all equally weighted. The steps depend only on the
config, never on where a run was stopped and resumed, so the same command gives the same average.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from vdsr.errors import ModelError, TrainingError, UsageError
from vdsr.train.checkpoint import load_checkpoint
from vdsr.train.config import TrainConfig, config_from_json

KEPT_FOLDER = "checkpoints"


def kept_checkpoint(out_dir: Path, step: int) -> Path:
    """Where --keep-checkpoints keeps the checkpoint of `step`."""
    return out_dir / KEPT_FOLDER / f"step-{step:07d}.safetensors"


def check_average_from(first: int | None, every: int, *, max_steps: int | None = None) -> None:
    """UsageError unless `first` (None: no average) can start an average of checkpoints kept every `every` steps,
    at or before `max_steps` when one is given: before the patches are built, which the schedule's length needs."""
    if first is None:
        return
    if max_steps is not None and first > max_steps:
        raise UsageError(f"--average-from {first} is past the run's last step (--max-steps {max_steps})")
    if every < 1:
        raise UsageError("--average-from needs periodic checkpoints (--checkpoint-every > 0)")
    if first < 1:
        raise UsageError(f"--average-from {first} is not a step (1 or more)")


def averaged_steps(first: int, last_step: int, every: int) -> list[int]:
    """The steps averaged: the multiples of `every` from `first` on, and `last_step`. UsageError when there is no
    such stretch."""
    check_average_from(first, every)
    if first > last_step:
        raise UsageError(f"--average-from {first} is past the run's last step ({last_step})")
    start = -(-first // every) * every
    return sorted({*range(start, last_step, every), last_step})


def average_checkpoints(paths: Sequence[Path], config: TrainConfig, data_key: str) -> dict[str, torch.Tensor]:
    """The mean (in float64, returned as float32) of the model tensors (the moving average's, with config.ema) of
    `paths`, each a checkpoint of this config
    (max_steps and bf16 aside) and data. TrainingError naming a missing or foreign file."""
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        if not path.is_file():
            raise TrainingError(
                f"{path}: missing, so the average cannot be made (that step's checkpoint was not "
                "kept: train with --keep-checkpoints, or average from a later step)"
            )
        try:
            saved = load_checkpoint(path)
        except ModelError as error:
            raise TrainingError(str(error)) from error
        try:
            same = config_from_json(saved.info["config"], max_steps=config.max_steps, bf16=config.bf16)  # type: ignore[arg-type]
        except TrainingError as error:
            raise TrainingError(f"{path}: {error}") from error
        if same != config or saved.info["data"] != data_key:
            raise TrainingError(f"{path}: a checkpoint of another config or data, not of this run")
        for name, tensor in (saved.ema or saved.model).items():  # the moving average, where the run keeps one
            total[name] = total.get(name, torch.zeros_like(tensor, dtype=torch.float64)) + tensor.double()
    return {name: (tensor / len(paths)).float() for name, tensor in total.items()}
