"""Training settings, each declared once: its default (a TrainConfig field), its help, the rule its value keeps and
its option on vdsr-train (the field's Setting, vdsr.train.settings). The validation, the command line
(vdsr.train.cli) and the model card (the config as recorded) are derived from these declarations. Also the named
recipes (the paper's, a fast one for CPUs, one for a GPU on a time budget) and the config a checkpoint was trained
with."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vdsr.architectures import Architecture
from vdsr.bench.protocol import Degradation, parse_degradation
from vdsr.errors import ModelError, TrainingError, UsageError, first_line
from vdsr.runtime.machine import bf16_training_faster
from vdsr.train.data import Mix
from vdsr.train.settings import (
    Setting,
    amount,
    count,
    degradation_names,
    flag,
    is_number,
    mapping,
    optional_text,
    parse_range,
    probability,
    scale_list,
    setting,
    within,
)

if TYPE_CHECKING:
    import torch

LOSSES = ("mse", "l1", "half_sse", "l1_mse")


RECALIBRATE_EVERY = 50  # steps between measurements of --qat-ranges calibrated (vdsr.train.qat)


@dataclass(frozen=True)
class TrainConfig:
    architecture: str = setting("vdsr", "Network.", tuple(a.value for a in Architecture), "--architecture")
    network: dict[str, object] = setting(dict, "Fields of VDSRConfig / SRCNNConfig.", mapping)
    recipe: str = setting(
        "fast",
        "paper: SGD as Kim et al.; fast: AdamW; gpu: AdamW within --budget-minutes.",
        ("paper", "fast", "gpu"),
        "--recipe",
    )
    scales: tuple[float, ...] = setting(
        (2, 3, 4),
        "Training scales, mixed per batch: a list, or a range LOW-HIGH (every 0.25 in it).",
        scale_list(empty=False),
        "--scale",
        repeatable=True,
    )
    # the degradation mix (vdsr.train.data.Mix): 0 draws is the paper's clean set, every image at every scale
    draws_per_image: int = setting(
        0,
        "Degradation mix: draws of a scale (and JPEG, noise) per image; 0: every image "
        "at every scale, clean (the paper).",
        count(0),
        "--draws-per-image",
    )
    scale_weights: tuple[float, ...] = setting(
        (),
        "SCALE=W: a draw's relative chance of that scale (repeatable; the others 1).",
        lambda v: None,
        "--scale-weight",
        repeatable=True,
    )  # checked with the scales, in problems()
    jpeg_probability: float = setting(0.0, "Of a draw being a JPEG.", probability, "--jpeg-probability")
    jpeg_quality: tuple[int, int] = setting(
        (30, 95),
        "JPEG quality range, LOW-HIGH.",
        within(1, 95, whole=True),
        "--jpeg-quality",
        parse=lambda text: parse_range(text, "--jpeg-quality", whole=True),
    )
    noise_probability: float = setting(0.0, "Of a draw being noisy.", probability, "--noise-probability")
    noise_sigma: tuple[float, float] = setting(
        (0.0, 8.0),
        "Noise sigma range in 8-bit levels.",
        within(0, 64, whole=False),
        "--noise-sigma",
        parse=lambda text: parse_range(text, "--noise-sigma", whole=False),
    )
    init_from: str | None = setting(
        None, "Fine-tuning: the weights the run started from (name and SHA-256).", optional_text
    )
    teacher: str | None = setting(
        None, "Distillation: the weights whose outputs are mixed into the targets (name and SHA-256).", optional_text
    )
    teacher_weight: float = setting(
        0.0,
        "Distillation: each target is (1 - W) x its HR patch + W x the --teacher's output (no autocast) for its input.",
        probability,
        "--teacher-weight",
    )
    validate_scales: tuple[float, ...] = setting(
        (), "Scales validated.", scale_list(empty=True), "--validate-scale", repeatable=True
    )
    validate_degradations: tuple[str, ...] = setting(
        ("bicubic",),
        "Small images validated (as vdsr-bench --degradation).",
        degradation_names,
        "--validate-degradation",
        repeatable=True,
    )
    patch_size: int = setting(41, "Patch side (training input, HR pixels).", count(8), "--patch-size")
    stride: int = setting(41, "Patch grid step.", count(1), "--stride")
    batch_size: int = setting(64, "Patches per step.", count(1), "--batch-size")
    epochs: float = setting(
        3.0,
        "Schedule length in passes over every (patch, rotation/flip) pair.",
        amount(positive=True, below=1e6),
        "--epochs",
    )
    max_steps: int | None = setting(
        None, "Stop at this step; schedule unchanged.", count(0, optional=True), "--max-steps", resumable=True
    )
    optimizer: str = setting("adamw", "sgd or adamw.", ("sgd", "adamw"))
    lr: float = setting(2e-4, "Peak learning rate.", amount(positive=True), "--lr")
    momentum: float = setting(0.9, "SGD's momentum.", amount(positive=False))
    beta2: float = setting(0.999, "AdamW's second-moment decay.", amount(positive=True, below=1))
    weight_decay: float = setting(0.0, "Weight decay.", amount(positive=False))
    clip_theta: float | None = setting(
        None, "Adjustable gradient clipping: every element to +-theta / lr.", amount(positive=True, optional=True)
    )
    clip_norm: float | None = setting(
        None, "Clip the gradients' global norm to this.", amount(positive=True, optional=True)
    )
    schedule: str = setting(
        "cosine", "step: lr / 10 every lr_step_epochs; cosine: linear warm-up, cosine to zero.", ("cosine", "step")
    )
    lr_step_epochs: float = setting(20.0, "Epochs between the step schedule's divisions.", amount(positive=True))
    warmup_epochs: float = setting(0.05, "Warm-up, in epochs (at most a tenth of the run).", amount(positive=False))
    loss: str = setting(
        "mse",
        "mse (mean over pixels); l1: a gradient of one size however large the error (clean "
        "inputs weigh as JPEG ones); l1_mse: l1, then mse for the last fifth; half_sse: the paper's.",
        LOSSES,
        "--loss",
    )
    ema: float = setting(
        0.0,
        "Decay of an exponential moving average of the weights, validated and saved (0: off).",
        amount(positive=False, below=1),
        "--ema",
    )
    qat: str = setting(
        "off",
        "Quantisation-aware: train through the int8 graph's rounding (vdsr.train.qat), every convolution int8 "
        "(every) or all but the first and last (inner).",
        ("off", "every", "inner"),
        "--qat",
    )
    qat_ranges: str = setting(
        "batch",
        "With --qat, the activations' rounding ranges: each batch's own (batch), or the int8 graph's (MinMax), "
        f"measured on the export's calibration crops every {RECALIBRATE_EVERY} steps (calibrated).",
        ("batch", "calibrated"),
        "--qat-ranges",
    )
    zero_init_output: bool = setting(
        False, "The last layer starts at zero: the untrained VDSR returns its input.", flag
    )
    bf16: bool = setting(
        False,
        "bf16 autocast (CPUs where faster, CUDA GPUs); the loss stays fp32.",
        flag,
        "--bf16/--no-bf16",
        resumable=True,
    )
    channels_last: bool = setting(True, "channels_last memory format.", flag)
    data: str = setting(
        "patches",
        "patches: the cached patch set, exact resume (CPUs); device: random crops made on the device each step (GPUs).",
        ("patches", "device"),
        "--data",
    )
    budget_minutes: float | None = setting(
        None,
        "Lay the cosine over this wall-clock time (measured after the warm-up) instead of --epochs.",
        amount(positive=True, optional=True),
        "--budget-minutes",
    )
    seed: int = setting(0, "Seed of the batches, draws and initialisation.", count(0), "--seed")
    log_every: int = setting(20, "Steps between log lines (0: never).", count(0))
    checkpoint_every: int = setting(
        500, "Steps between checkpoints (0: at the end only).", count(0), "--checkpoint-every"
    )
    validate_every: int = setting(2000, "Steps between Set5 checks (0: at the end only).", count(0), "--validate-every")

    def __post_init__(self) -> None:
        found = problems(self)
        if found:
            raise ValueError(f"training config: {'; '.join(found)}")

    def mix(self) -> Mix:
        """How the patch set's small images are made."""
        return Mix(
            scales=self.scales,
            draws=self.draws_per_image,
            scale_weights=self.scale_weights,
            jpeg_probability=self.jpeg_probability,
            jpeg_quality=self.jpeg_quality,
            noise_probability=self.noise_probability,
            noise_sigma=self.noise_sigma,
            seed=self.seed,
        )

    def validation_cells(self) -> tuple[tuple[float, ...], tuple[Degradation, ...]]:
        """The scales and small images validation scores."""
        return self.validate_scales or self.scales, tuple(map(parse_degradation, self.validate_degradations))


SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(TrainConfig)}


def problems(config: TrainConfig) -> list[str]:
    """What is wrong with each field (type, range, choice), by its declaration: a config from a checkpoint or a
    command line."""
    found = [
        f"{name} is {getattr(config, name)!r:.80}, {why}"
        for name, declared in SETTINGS.items()
        if (why := declared.rule(getattr(config, name)))
    ]
    weights = config.scale_weights
    if not (
        isinstance(weights, tuple)
        and all(is_number(w, whole=False) and w > 0 for w in weights)
        and len(weights) in (0, len(config.scales))
        and math.isfinite(sum(weights))
    ):
        found.append(f"scale_weights is {weights!r}, not one number > 0 for each of the scales")
    elif weights and not config.draws_per_image:
        found.append("scale_weights weigh the draws: they need draws_per_image > 0")
    if is_number(config.teacher_weight, whole=False) and (config.teacher is None) != (config.teacher_weight == 0):
        found.append("teacher and teacher_weight go together: a teacher's weights and a weight 0 < W <= 1")
    if config.qat_ranges == "calibrated" and config.qat == "off":
        found.append("qat_ranges calibrated is the rounding of quantisation-aware training: it needs qat")
    patch, stride = config.patch_size, config.stride
    if is_number(patch, whole=True) and is_number(stride, whole=True) and 0 < stride * 4 < patch:
        found.append(
            f"stride {stride} is under a quarter of patch_size {patch}: {(patch / stride) ** 2:.0f}x the memory of "
            "non-overlapping patches"
        )
    return found


def recipe(name: str, architecture: str = Architecture.vdsr.value, **overrides: object) -> TrainConfig:
    """The named recipe's defaults for `architecture`, with `overrides` on top."""
    if name == "paper":
        # Kim et al. 2016, section 4.1, with their loss 1/2 ||y - f(x)||^2 per patch (MatConvNet's convention; a mean
        # over pixels would make gradients ~840x smaller and lr 0.1 meaningless). theta is not given in the paper:
        # 0.01 lets one gradient term move a weight by at most lr * theta / lr = 0.01 (momentum can add up to 10x over
        # steps), a sixth of the He-init std of a 64-channel 3x3 layer (sqrt(2 / 576) = 0.059): loose enough not to
        # slow the start at lr 0.1, tight enough to stop the blow-ups lr 0.1 causes without clipping.
        base = TrainConfig(
            architecture=architecture,
            recipe="paper",
            optimizer="sgd",
            lr=0.1,
            momentum=0.9,
            weight_decay=1e-4,
            clip_theta=0.01,
            schedule="step",
            lr_step_epochs=20,
            epochs=80,
            batch_size=64,
            patch_size=41,
            stride=41,
            loss="half_sse",
        )
    elif name in ("fast", "gpu"):
        # a zero last layer makes the untrained VDSR return its input (the ILR); SRCNN has no residual, so for it a
        # zero last layer would only output zeros and hold back the layers below: He init throughout
        base = TrainConfig(
            architecture=architecture,
            recipe="fast",
            bf16=True,
            lr=3e-4,
            zero_init_output=architecture == Architecture.vdsr,
        )
        if name == "gpu":  # large random crops made on the device, a cosine timed to a wall-clock budget, an EMA
            base = replace(
                base,
                recipe="gpu",
                data="device",
                patch_size=96,
                stride=96,
                batch_size=192,
                lr=1e-3,
                beta2=0.99,
                clip_norm=1.0,
                ema=0.999,
                loss="l1_mse",
                budget_minutes=8.5,
                warmup_epochs=2.0,  # about 300 steps of 192 crops of 96 px on the 291 images
            )
    else:
        raise ValueError(f"Unknown recipe {name!r}; expected 'paper', 'fast' or 'gpu'")
    return replace(base, **overrides)  # type: ignore[arg-type]


RENAMED = {"model": "architecture", "model_config": "network"}  # the fields' names in checkpoints before issue 36


def config_from_json(saved: dict[str, object], **overrides: object) -> TrainConfig:
    """A TrainConfig from its JSON form (checkpoints, cards); fields added since then take their defaults."""
    saved = {RENAMED.get(k, k): v for k, v in saved.items()}
    unknown = set(saved) - set(SETTINGS)
    if unknown:
        raise TrainingError(f"The checkpoint's config has fields this version does not know: {sorted(unknown)}")

    def tuples(value: object) -> object:  # JSON turned the config's tuples into lists, nested ones too
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        if isinstance(value, dict):
            return {k: tuples(v) for k, v in value.items()}
        return value

    values = {k: tuples(v) for k, v in saved.items()}
    try:
        return replace(TrainConfig(**values), **overrides)  # type: ignore[arg-type]
    except (ValueError, TypeError) as error:
        raise TrainingError(f"The checkpoint's config is not valid: {first_line(error)}") from error


def resume_config(checkpoint_path: Path, max_steps: int | None, *, bf16: bool | None = None) -> TrainConfig:
    """The config a checkpoint was trained with; only the resumable settings (max_steps, bf16: the arithmetic and
    where it stops, not what is learnt) may change when resuming."""
    from vdsr.train.checkpoint import load_checkpoint  # torch: imported once a run starts

    try:
        info = load_checkpoint(checkpoint_path).info
    except ModelError as error:
        raise TrainingError(str(error)) from error
    step = info["step"]
    assert isinstance(step, int)  # load_checkpoint checked it is a count
    if max_steps is not None and max_steps < step:  # the card would say a limit the run is past
        raise UsageError(f"--max-steps {max_steps}: {checkpoint_path} is at step {step} already")
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
        import torch

        return bool(torch.cuda.is_bf16_supported())
    return bf16_training_faster()
