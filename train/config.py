"""Training settings: one config dataclass, the two named recipes (the paper's and a fast one), and the config a
checkpoint was trained with."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from vdsr.catalogue import Architecture
from vdsr.errors import ModelError, TrainingError, first_line
from vdsr.runtime.machine import BF16_FLAGS, cpu_features
from vdsr.train.checkpoint import load_checkpoint


@dataclass(frozen=True)
class TrainConfig:
    model: str = Architecture.vdsr.value  # a vdsr.catalogue.Architecture
    model_config: dict[str, object] = field(default_factory=dict)  # fields of VDSRConfig / SRCNNConfig
    recipe: str = "fast"
    scales: tuple[int, ...] = (2, 3, 4)  # mixed in every batch: one model for all of them
    patch_size: int = 41
    stride: int = 41
    batch_size: int = 64
    epochs: float = 3.0  # passes over all (patch, rotation/flip) pairs; the schedule is laid out over this length
    max_steps: int | None = None  # stop earlier (the schedule is unchanged): short runs, tests
    optimizer: str = "adamw"  # "sgd" or "adamw"
    lr: float = 2e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip_theta: float | None = None  # adjustable gradient clipping: every gradient element to +-theta / lr
    schedule: str = "cosine"  # "step": lr / 10 every lr_step_epochs; "cosine": linear warm-up, cosine to zero
    lr_step_epochs: float = 20.0
    warmup_epochs: float = 0.05  # of a (patch, variant) epoch: 339 steps of 64 on the 291 images at 41x41
    loss: str = "mse"  # "mse" (mean over pixels), "l1", or "half_sse": the paper's 1/2 sum over a patch, batch mean
    zero_init_output: bool = False  # last conv starts at zero, so the untrained model returns its input (the ILR)
    bf16: bool = False  # bf16 autocast (CPUs with AMX/AVX-512-BF16, CUDA GPUs); the loss stays fp32
    channels_last: bool = True
    seed: int = 0
    log_every: int = 20  # 0: never (likewise below)
    checkpoint_every: int = 500
    validate_every: int = 2000

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError(f"training config: {'; '.join(problems)}")


_CHOICES = {
    "model": tuple(a.value for a in Architecture),
    "recipe": ("paper", "fast"),
    "optimizer": ("sgd", "adamw"),
    "schedule": ("cosine", "step"),
    "loss": ("mse", "l1", "half_sse"),
}
_COUNTS = {"patch_size": 1, "stride": 1, "batch_size": 1, "max_steps": 0, "seed": 0, "log_every": 0,
           "checkpoint_every": 0, "validate_every": 0}  # field -> smallest value  # fmt: skip
_AMOUNTS = {"epochs": True, "lr": True, "lr_step_epochs": True, "clip_theta": True, "momentum": False,
            "weight_decay": False, "warmup_epochs": False}  # field -> must be > 0 (else >= 0)  # fmt: skip
_FLAGS = ("zero_init_output", "bf16", "channels_last")


def _problems(config: TrainConfig) -> list[str]:
    """What is wrong with each field (type, range, choice): a config from a checkpoint or a command line."""
    problems = [f"{k} is {getattr(config, k)!r}, not one of {', '.join(v)}"
                for k, v in _CHOICES.items() if getattr(config, k) not in v]  # fmt: skip
    for name, least in _COUNTS.items():
        value = getattr(config, name)
        if not (value is None and name == "max_steps") and not (_is_int(value) and value >= least):
            problems.append(f"{name} is {value!r}, not an integer >= {least}")
    for name, positive in _AMOUNTS.items():
        value = getattr(config, name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (value is None and name == "clip_theta") and not (number and (value > 0 if positive else value >= 0)):
            problems.append(f"{name} is {value!r}, not a number {'>' if positive else '>='} 0")
    problems += [f"{name} is {getattr(config, name)!r}, not true or false"
                 for name in _FLAGS if not isinstance(getattr(config, name), bool)]  # fmt: skip
    if not (
        isinstance(config.scales, tuple) and config.scales and all(_is_int(s) and 2 <= s <= 8 for s in config.scales)
    ):
        problems.append(f"scales is {config.scales!r}, not integers from 2 to 8")
    if not isinstance(config.model_config, dict):
        problems.append(f"model_config is {config.model_config!r}, not a JSON object")
    return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def recipe(name: str, model: str = Architecture.vdsr.value, **overrides: object) -> TrainConfig:
    """The named recipe's defaults for `model`, with `overrides` on top."""
    if name == "paper":
        # Kim et al. 2016, section 4.1, with their loss 1/2 ||y - f(x)||^2 per patch (MatConvNet's convention; a mean
        # over pixels would make gradients ~840x smaller and lr 0.1 meaningless). theta is not given in the paper:
        # 0.01 lets one gradient term move a weight by at most lr * theta / lr = 0.01 (momentum can add up to 10x over
        # steps), a sixth of the He-init std of a 64-channel 3x3 layer (sqrt(2 / 576) = 0.059): loose enough not to
        # slow the start at lr 0.1, tight enough to stop the blow-ups lr 0.1 causes without clipping.
        base = TrainConfig(model=model, recipe="paper", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                           clip_theta=0.01, schedule="step", lr_step_epochs=20, epochs=80, batch_size=64,
                           patch_size=41, stride=41, loss="half_sse")  # fmt: skip
    elif name == "fast":
        # a zero last layer makes the untrained VDSR return its input (the ILR); SRCNN has no residual, so for it a
        # zero last layer would only output zeros and hold back the layers below: He init throughout
        base = TrainConfig(model=model, recipe="fast", bf16=True, zero_init_output=model == Architecture.vdsr,
                           lr=3e-4)  # fmt: skip
    else:
        raise ValueError(f"Unknown recipe {name!r}; expected 'paper' or 'fast'")
    return replace(base, **overrides)  # type: ignore[arg-type]


def config_from_json(saved: dict[str, object], **overrides: object) -> TrainConfig:
    """A TrainConfig from its JSON form (checkpoints, cards); fields added since then take their defaults."""
    unknown = set(saved) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise TrainingError(f"The checkpoint's config has fields this version does not know: {sorted(unknown)}")

    def tuples(value: object) -> object:  # JSON turned the config's tuples into lists, nested ones too
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        if isinstance(value, dict):
            return {k: tuples(v) for k, v in value.items()}
        return value

    fields = {k: tuples(v) for k, v in saved.items()}
    try:
        return replace(TrainConfig(**fields), **overrides)  # type: ignore[arg-type]
    except (ValueError, TypeError) as error:
        raise TrainingError(f"The checkpoint's config is not valid: {first_line(error)}") from error


def resume_config(checkpoint_path: Path, max_steps: int | None) -> TrainConfig:
    """The config a checkpoint was trained with; only max_steps may change when resuming."""
    try:
        info = load_checkpoint(checkpoint_path).info
    except ModelError as error:
        raise TrainingError(str(error)) from error
    keep = {} if max_steps is None else {"max_steps": max_steps}  # a plain --resume keeps the run's own limit
    try:
        return config_from_json(info["config"], **keep)  # type: ignore[arg-type]
    except TrainingError as error:
        raise TrainingError(f"{checkpoint_path}: {error}") from error


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 arithmetic is native here: CUDA GPUs that say so, CPUs with AVX-512-BF16 or AMX-BF16."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(cpu_features() & BF16_FLAGS)
