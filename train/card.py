"""What a training run starts from and what it leaves: the network of a config (initialised, or from the weights a
fine-tuning run names), the teacher a distilling run learns from, and the model card written beside the weights
(NAME.json)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from vdsr.bench.datasets import Dataset, dataset_digest
from vdsr.bench.harness import CellResult
from vdsr.errors import ModelError, TrainingError
from vdsr.files import sha256_file
from vdsr.metadata import card_facts
from vdsr.networks import SRCNN, VDSR, architecture_of, build_model, model_config
from vdsr.train.config import TrainConfig
from vdsr.train.qat import quantisation_aware
from vdsr.weights import load_weights


def new_model(config: TrainConfig, device: torch.device) -> VDSR | SRCNN:
    """The untrained network of `config`, seeded, on `device` in the recipe's memory format."""
    torch.manual_seed(config.seed)
    model = build_model(config.architecture, config.network).to(device)
    if config.zero_init_output:
        last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        torch.nn.init.zeros_(last.weight)
    if config.qat != "off":
        quantisation_aware(model, config.qat)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    return model


def weights_id(path: Path) -> str:
    """How a config records weights a run uses (init_from, teacher): the file's name and SHA-256."""
    return f"{path.name} sha256:{sha256_file(path)}"


def recorded_weights(path: Path | None, recorded: str | None, config: TrainConfig, *, role: str) -> VDSR | SRCNN:
    """The weights a config records (init_from, teacher: `recorded`), read from `path`: the same file, the same
    network as the config's. TrainingError otherwise, saying what the run `role`s ("starts from")."""
    if path is None or weights_id(path) != recorded:
        raise TrainingError(f"This run {role} {recorded}; got {path and weights_id(path)}")
    try:
        found, _ = load_weights(path)
    except ModelError as error:
        raise TrainingError(str(error)) from error
    wanted = model_config(build_model(config.architecture, config.network))
    if architecture_of(found) != config.architecture or model_config(found) != wanted:
        raise TrainingError(
            f"{path}: a {architecture_of(found)} {model_config(found)}, not the {config.architecture} "
            f"{wanted} this run trains"
        )
    return found


def initial_state(init: Path | None, config: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights a fine-tuning config names (init_from), read from `init`."""
    return recorded_weights(init, config.init_from, config, role="starts from").state_dict()


def teacher_model(path: Path | None, config: TrainConfig, device: torch.device) -> VDSR | SRCNN | None:
    """The network whose outputs a distilling config (teacher) mixes into its targets, read from `path`: fp32,
    frozen, on `device`. None for a config without one."""
    if config.teacher is None:
        return None
    teacher = recorded_weights(path, config.teacher, config, role="distils from").to(device).eval()
    return teacher.requires_grad_(False)


def model_card(
    config: TrainConfig,
    model: VDSR | SRCNN,
    weights_path: Path,
    *,
    steps: int,
    total_steps: int,
    train_sets: Sequence[Dataset],
    data: tuple[str, int],
    validation: list[CellResult],
    wall_seconds: float,
    device: torch.device,
) -> dict[str, object]:
    """What travels with the weights (NAME.json): the network's facts (vdsr.metadata), the recipe as declared
    (every setting), data hashes, steps, time and measured PSNR. `data`: the patch set's key and size."""
    return card_facts(model.config, list(config.scales), weights=weights_path.name) | {
        "recipe": asdict(config),
        "steps": steps,
        "finished_schedule": steps == total_steps,
        "wall_seconds": round(wall_seconds, 1),
        "device": str(device),
        "torch": torch.__version__,
        "weights_sha256": sha256_file(weights_path),
        "training_data": {d.name: {"files": len(d.files), "sha256": dataset_digest(d)} for d in train_sets},
        "patches": {"key": data[0], "count": data[1]},
        "validation": [asdict(c) for c in validation],
    }
