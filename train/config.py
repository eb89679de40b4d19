"""Training settings: one config dataclass, the two named recipes (the paper's and a fast one), and the config a
checkpoint was trained with."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from vdsr.architectures import Architecture
from vdsr.bench.protocol import Degradation, parse_degradation
from vdsr.errors import ModelError, TrainingError, UsageError, first_line
from vdsr.runtime.machine import bf16_training_faster
from vdsr.scale import is_quarter_scale
from vdsr.train.checkpoint import load_checkpoint
from vdsr.train.data import Mix


@dataclass(frozen=True)
class TrainConfig:
    model: str = Architecture.vdsr.value  # a vdsr.catalogue.Architecture
    model_config: dict[str, object] = field(default_factory=dict)  # fields of VDSRConfig / SRCNNConfig
    recipe: str = "fast"
    scales: tuple[float, ...] = (2, 3, 4)  # mixed in every batch: one model for all of them
    # the degradation mix (vdsr.train.data.Mix): 0 draws is the paper's clean set, every image at every scale
    draws_per_image: int = 0  # n: n seeded draws per image, each of a scale from `scales` and of the degradations below
    scale_weights: tuple[float, ...] = ()  # a draw's relative chance of each of `scales`; (): all alike
    jpeg_probability: float = 0.0  # of a draw's small image being a JPEG (Pillow, 4:2:0) of a quality in jpeg_quality
    jpeg_quality: tuple[int, int] = (30, 95)
    noise_probability: float = 0.0  # of Gaussian noise (8-bit levels, sigma in noise_sigma) on it, before any JPEG
    noise_sigma: tuple[float, float] = (0.0, 8.0)
    init_from: str | None = None  # fine-tuning: "NAME.safetensors sha256:HEX", the weights the run started from
    validate_scales: tuple[float, ...] = ()  # scales scored in validation; () is `scales`
    validate_degradations: tuple[str, ...] = ("bicubic",)  # small images scored in validation (vdsr-bench's names)
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
    bf16: bool = False  # bf16 autocast (CPUs where faster, CUDA GPUs); the loss stays fp32
    channels_last: bool = True
    seed: int = 0
    log_every: int = 20  # 0: never (likewise below)
    checkpoint_every: int = 500
    validate_every: int = 2000

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError(f"training config: {'; '.join(problems)}")

    def mix(self) -> Mix:
        """How the patch set's small images are made."""
        return Mix(scales=self.scales, draws=self.draws_per_image, scale_weights=self.scale_weights,
                   jpeg_probability=self.jpeg_probability,
                   jpeg_quality=self.jpeg_quality, noise_probability=self.noise_probability,
                   noise_sigma=self.noise_sigma, seed=self.seed)  # fmt: skip

    def validation_cells(self) -> tuple[tuple[float, ...], tuple[Degradation, ...]]:
        """The scales and small images validation scores."""
        return self.validate_scales or self.scales, tuple(map(parse_degradation, self.validate_degradations))


_CHOICES = {
    "model": tuple(a.value for a in Architecture),
    "recipe": ("paper", "fast"),
    "optimizer": ("sgd", "adamw"),
    "schedule": ("cosine", "step"),
    "loss": ("mse", "l1", "half_sse"),
}
_COUNTS = {"patch_size": 1, "stride": 1, "batch_size": 1, "max_steps": 0, "seed": 0, "log_every": 0,
           "checkpoint_every": 0, "validate_every": 0, "draws_per_image": 0}  # field -> smallest value  # fmt: skip
_AMOUNTS = {"epochs": True, "lr": True, "lr_step_epochs": True, "clip_theta": True, "momentum": False,
            "weight_decay": False, "warmup_epochs": False, "jpeg_probability": False,
            "noise_probability": False}  # field -> must be > 0 (else >= 0)  # fmt: skip
_RANGES = {"jpeg_quality": (1, 95, True), "noise_sigma": (0, 64, False)}  # field -> lowest, highest, integers
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
    chances = ("jpeg_probability", "noise_probability")
    problems += [f"{n} is {getattr(config, n)!r}, not a probability" for n in chances
                 if not (_is_number(getattr(config, n), whole=False) and 0 <= getattr(config, n) <= 1)]  # fmt: skip
    for name, (low, high, whole) in _RANGES.items():
        pair = getattr(config, name)
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(_is_number(v, whole) for v in pair)
                and low <= pair[0] <= pair[1] <= high):  # fmt: skip
            problems.append(f"{name} is {pair!r}, not a range (low, high) within {low}..{high}")
    for name in ("scales", "validate_scales"):
        scales = getattr(config, name)
        if not (isinstance(scales, tuple) and (scales or name != "scales") and all(map(is_quarter_scale, scales))):
            problems.append(f"{name} is {scales!r}, not scales 1 < s <= 8 in steps of 0.25")
    weights = config.scale_weights
    if not (isinstance(weights, tuple) and all(_is_number(w, whole=False) and w > 0 for w in weights)
            and len(weights) in (0, len(config.scales)) and math.isfinite(sum(weights))):  # fmt: skip
        problems.append(f"scale_weights is {weights!r}, not one number > 0 for each of the scales")
    elif weights and not config.draws_per_image:
        problems.append("scale_weights weigh the draws: they need draws_per_image > 0")
    names = config.validate_degradations
    if not (isinstance(names, tuple) and names and all(isinstance(n, str) and _is_degradation(n) for n in names)):
        problems.append(f"validate_degradations is {names!r}, not names as vdsr-bench's --degradation takes")
    if not (config.init_from is None or isinstance(config.init_from, str)):
        problems.append(f"init_from is {config.init_from!r}, not a weights file's name and hash")
    if not isinstance(config.model_config, dict):
        problems.append(f"model_config is {config.model_config!r}, not a JSON object")
    return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object, whole: bool) -> bool:
    return _is_int(value) or (not whole and isinstance(value, float) and math.isfinite(value))


def _is_degradation(name: str) -> bool:
    try:
        parse_degradation(name)
    except UsageError:
        return False
    return True


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


def resume_config(checkpoint_path: Path, max_steps: int | None, *, bf16: bool | None = None) -> TrainConfig:
    """The config a checkpoint was trained with; only max_steps and bf16 (the arithmetic, not what is learnt) may
    change when resuming."""
    try:
        info = load_checkpoint(checkpoint_path).info
    except ModelError as error:
        raise TrainingError(str(error)) from error
    keep: dict[str, object] = {} if max_steps is None else {"max_steps": max_steps}  # plain --resume: the run's limit
    if bf16 is not None:
        keep["bf16"] = bf16
    try:
        return config_from_json(info["config"], **keep)  # type: ignore[arg-type]
    except TrainingError as error:
        raise TrainingError(f"{checkpoint_path}: {error}") from error


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 training is faster than fp32 here: CUDA GPUs that support it, CPUs as measured."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bf16_training_faster()
