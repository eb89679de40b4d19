"""`vdsr-train`: train VDSR or SRCNN on the 291 images (T91 + BSD200), resumable, with validation on Set5."""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import torch
import typer
from platformdirs import user_cache_dir
from rich.console import Console

from vdsr.architectures import Architecture
from vdsr.bench.datasets import DATA_DIR_ENV, resolve_dataset
from vdsr.bench.harness import CellResult
from vdsr.catalogue import MODELS
from vdsr.errors import EXIT_STOPPED_EARLY, TrainingError, UsageError, first_line
from vdsr.model import Model
from vdsr.runtime.console import Command, WorkProgress, error_console, exit_on_errors, make_app, safe, version_option
from vdsr.scale import parse_scales
from vdsr.train.average import check_average_from
from vdsr.train.config import TrainConfig, bf16_supported, recipe, resume_config
from vdsr.train.data import build_patches
from vdsr.train.distributed import barrier, check_batch_size, process_group, rank_device, ranks_from_env
from vdsr.train.loop import StepReport, initial_state, train, weights_id

app = make_app(__doc__)


def recipe_default(field: str) -> str:
    """A config field's default as help shows it: one value, or the fast and the paper recipe's."""
    fast, paper = getattr(recipe("fast"), field), getattr(recipe("paper"), field)
    return f"{fast:g}" if fast == paper else f"fast {fast:g}, paper {paper:g}"


class Recipe(str, Enum):
    paper = "paper"
    fast = "fast"


class Loss(str, Enum):  # given, it replaces the recipe's (the paper's: half_sse)
    mse = "mse"
    l1 = "l1"


class ValidationSet(str, Enum):  # checkpoints are chosen and tuned on these only, never on a set we report
    Set5 = "Set5"
    Set14 = "Set14"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device: CUDA is not available in this torch build or machine")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device: {error}") from error


@app.command(cls=Command)
def main(
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: checkpoint, weights, card, log.")],
    model: Annotated[Architecture | None, typer.Option("--model", show_default=Architecture.vdsr.value)] = None,
    recipe_name: Annotated[
        Recipe | None,
        typer.Option("--recipe", help="paper: SGD as Kim et al.; fast: AdamW.", show_default=Recipe.fast.value),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Holds T91, BSD200, Set5, Set14.", show_default=f"${DATA_DIR_ENV}"),
    ] = None,
    scale: Annotated[
        list[str] | None,
        typer.Option(
            "--scale",
            "-s",
            help="Training scales, mixed per batch: a list, or a range LOW-HIGH (every 0.25 in it).",
            show_default=",".join(map(str, TrainConfig().scales)),
        ),  # fmt: skip
    ] = None,
    draws_per_image: Annotated[
        int | None,
        typer.Option(
            "--draws-per-image",
            help="Degradation mix: draws of a scale (and JPEG, noise) per image; 0: "
            "every image at every scale, clean (the paper).",
            show_default="0",
        ),  # fmt: skip
    ] = None,
    scale_weight: Annotated[
        list[str] | None,
        typer.Option(
            "--scale-weight",
            help="SCALE=W: a draw's relative chance of that scale (repeatable; the others 1).",
            show_default="all alike",
        ),
    ] = None,
    jpeg_probability: Annotated[
        float | None, typer.Option("--jpeg-probability", help="Of a draw being a JPEG.", show_default="0")
    ] = None,
    jpeg_quality: Annotated[
        str | None, typer.Option("--jpeg-quality", help="JPEG quality range, LOW-HIGH.", show_default="30-95")
    ] = None,
    noise_probability: Annotated[
        float | None, typer.Option("--noise-probability", help="Of a draw being noisy.", show_default="0")
    ] = None,
    noise_sigma: Annotated[
        str | None, typer.Option("--noise-sigma", help="Noise sigma range in 8-bit levels.", show_default="0-8")
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Fine-tune: start from these weights (a shipped model's name or a .safetensors).",
            show_default="none: random",
        ),  # fmt: skip
    ] = None,
    validate_scale: Annotated[
        list[str] | None, typer.Option("--validate-scale", help="Scales validated.", show_default="the training scales")
    ] = None,
    validate_degradation: Annotated[
        list[str] | None,
        typer.Option(
            "--validate-degradation",
            help="Small images validated (as vdsr-bench --degradation).",
            show_default="bicubic",
        ),  # fmt: skip
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the checkpoint in --output.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")] = "auto",
    max_minutes: Annotated[
        float | None, typer.Option("--max-minutes", help="Checkpoint and stop after this.", show_default="no limit")
    ] = None,
    keep_checkpoints: Annotated[
        bool, typer.Option("--keep-checkpoints", help="Keep a copy of each periodic checkpoint in OUTPUT/checkpoints.")
    ] = False,
    blend_init: Annotated[
        float | None, typer.Option("--blend-init", metavar="A", help="(1-A) x --init + A x trained.", show_default="1")
    ] = None,
    average_from: Annotated[
        int | None, typer.Option("--average-from", help="Mean of kept checkpoints from this step.", show_default="no")
    ] = None,
    epochs: Annotated[
        float | None, typer.Option("--epochs", help="Schedule length.", show_default=recipe_default("epochs"))
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option("--max-steps", help="Stop at this step; schedule unchanged.", show_default="the schedule's end"),
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", show_default=recipe_default("batch_size"))] = None,
    patch_size: Annotated[int | None, typer.Option("--patch-size", show_default=recipe_default("patch_size"))] = None,
    stride: Annotated[
        int | None, typer.Option("--stride", help="Patch grid step.", show_default="the patch size")
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help="Peak learning rate.", show_default=recipe_default("lr"))
    ] = None,
    loss: Annotated[
        Loss | None,
        typer.Option(
            "--loss",
            help="l1: a gradient of one size however large the error (clean inputs weigh as JPEG ones).",
            show_default="fast mse, paper half_sse",
        ),  # fmt: skip
    ] = None,
    bf16: Annotated[
        bool | None, typer.Option("--bf16/--no-bf16", show_default="on for the fast recipe where bf16 is native")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", show_default=str(TrainConfig().seed))] = None,
    validate_every: Annotated[
        int | None,
        typer.Option(
            "--validate-every", help="Steps between Set5 checks.", show_default=str(TrainConfig().validate_every)
        ),  # fmt: skip
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option("--checkpoint-every", show_default=str(TrainConfig().checkpoint_every))
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Patch cache.", show_default=user_cache_dir("vdsr"))
    ] = None,
    final_sets: Annotated[
        list[ValidationSet],
        typer.Option("--final-validation", help="Validation sets scored at the end, for the model card."),
    ] = [ValidationSet.Set5, ValidationSet.Set14],
    version: Annotated[bool, version_option()] = False,
) -> None:
    """Train one model; Ctrl-C or SIGTERM writes a checkpoint and stops cleanly, --resume continues it exactly."""
    err = error_console()  # errors, from every rank
    ranks = ranks_from_env()  # several under torchrun (python -m vdsr.train); vdsr-train alone is one
    out = err if ranks.leader else Console(quiet=True)  # progress and results: rank 0 speaks for all
    with exit_on_errors(err), ExitStack() as stack:
        torch_device = rank_device(pick_device(device), ranks)
        options = Options(model=model, recipe=recipe_name, scale=scale, epochs=epochs, batch_size=batch_size,
                          patch_size=patch_size, stride=stride, lr=lr, loss=loss, bf16=bf16, seed=seed,
                          validate_every=validate_every, checkpoint_every=checkpoint_every,
                          draws_per_image=draws_per_image, scale_weight=scale_weight,
                          jpeg_probability=jpeg_probability, jpeg_quality=jpeg_quality,
                          noise_probability=noise_probability, noise_sigma=noise_sigma, init=init,
                          validate_scale=validate_scale, validate_degradation=validate_degradation)  # fmt: skip
        init_path = init_weights(init)
        config = settle_config(output, options, resume=resume, max_steps=max_steps, device=torch_device)
        if init_path is not None:
            try:  # before the patches are built: a file that does not fit is refused now
                initial_state(init_path, config)
            except TrainingError as error:
                raise UsageError(f"--init: {error}") from error
        check_batch_size(config.batch_size, ranks)
        check_average_from(average_from, config.checkpoint_every)
        if blend_init is not None and not (0 < blend_init <= 1 and init_path and config.init_from):
            raise UsageError(f"--blend-init {blend_init}: a weight 0 < A <= 1 for a fine-tuning run, with its --init")
        stack.enter_context(process_group(torch_device, ranks))
        if resume and config.bf16 and not bf16_supported(torch_device):
            out.print(f"note: bf16 is slower than fp32 on {torch_device} here; --no-bf16 continues the run in fp32")
        train_sets = [resolve_dataset(name, data_dir) for name in ("T91", "BSD200")]
        validation_sets = [resolve_dataset("Set5", data_dir)]  # checked every --validate-every steps
        final = [resolve_dataset(name.value, data_dir) for name in dict.fromkeys(final_sets)]
        cache = cache_dir or Path(user_cache_dir("vdsr"))
        weights = config.scale_weights or (1,) * len(config.scales)
        scales = ", ".join(
            f"{s:g}" + (f" (weight {w:g})" if w != 1 else "") for s, w in zip(config.scales, weights, strict=True)
        )
        grid = f"{config.patch_size}px, stride {config.stride}, scales {scales}"
        if config.draws_per_image:
            grid += (f"; {config.draws_per_image} draws per image, JPEG {config.jpeg_probability:g} (q "
                     f"{config.jpeg_quality[0]}-{config.jpeg_quality[1]}), noise {config.noise_probability:g} "
                     f"(sigma {config.noise_sigma[0]:g}-{config.noise_sigma[1]:g})")  # fmt: skip
        out.print(f"patches: {grid} (cache {safe(cache)})")
        if ranks.local != 0:  # the first rank of each machine builds its patch cache, the others read it
            barrier(ranks)
        patches = build_patches(train_sets, config.mix(), config.patch_size, stride=config.stride, cache_dir=cache)
        if ranks.local == 0:
            barrier(ranks)
        where = f"{torch_device}" if ranks.world == 1 else f"{ranks.world} ranks ({torch_device.type})"
        out.print(f"{len(patches.hr)} patches; {config.recipe} recipe on {where}, bf16 {config.bf16}")
        last_val = "-"
        with WorkProgress(out, "step", total=None, unit="steps") as progress:

            def show(p: StepReport) -> None:
                nonlocal last_val
                if p.validation:
                    last_val = " ".join(f"{cell_name(c)} {c.psnr:.2f}" for c in p.validation if c.dataset == "Set5")
                    scores = ", ".join(f"{c.dataset} {cell_name(c)} {c.psnr:.2f}" for c in p.validation)
                    progress.print(f"step {p.step}: PSNR {scores}")
                if not p.validation or p.lr:  # the final validation report carries no training figures
                    figures = f"loss {p.loss:.3e}, lr {p.lr:.2e}, {p.patches_per_second:.0f} patches/s, "
                    progress.update(completed=p.step, total=p.total_steps, info=f"{figures}Set5 {last_val}")
                else:
                    progress.update(completed=p.step, total=p.total_steps)

            result = train(config, patches, output, device=torch_device, train_sets=train_sets,
                           validation_sets=validation_sets, final_sets=final, resume=resume, init=init_path,
                           max_minutes=max_minutes, keep_checkpoints=keep_checkpoints, average_from=average_from,
                           blend_init=blend_init, on_progress=show, ranks=ranks)  # fmt: skip
    out.print(f"stopped at step {result.steps} ({result.stopped}); checkpoint {safe(result.checkpoint)}")
    if result.weights is not None:
        out.print(f"weights {safe(result.weights)}, model card {safe(result.weights.with_suffix('.json'))}")
    else:
        out.print(f"not finished: continue with vdsr-train --output {safe(output)} --resume")
        if ranks.leader:  # rank 0 alone exits 3: torchrun stops the others' exits 0 from cutting it short
            raise typer.Exit(EXIT_STOPPED_EARLY)


@dataclass(frozen=True)
class Options:
    """The settings given on the command line (None: not given), which a resumed run must not change."""

    model: Architecture | None
    recipe: Recipe | None
    scale: list[str] | None
    epochs: float | None
    batch_size: int | None
    patch_size: int | None
    stride: int | None
    lr: float | None
    loss: Loss | None
    bf16: bool | None
    seed: int | None
    validate_every: int | None
    checkpoint_every: int | None
    draws_per_image: int | None
    scale_weight: list[str] | None
    jpeg_probability: float | None
    jpeg_quality: str | None
    noise_probability: float | None
    noise_sigma: str | None
    init: str | None
    validate_scale: list[str] | None
    validate_degradation: list[str] | None


def cell_name(cell: CellResult) -> str:
    """x2, or x2 jpeg:75 for a small image made otherwise than the paper's way."""
    return f"x{cell.scale:g}" + ("" if cell.degradation == "bicubic" else f" {cell.degradation}")


def parse_range(text: str, option: str, *, whole: bool) -> tuple[float, float]:
    """'30-95' -> (30, 95); '5' -> (5, 5). UsageError naming the option otherwise."""
    low, _, high = text.partition("-")
    try:
        pair = tuple(int(v) if whole else float(v) for v in (low, high or low))
    except ValueError:
        raise UsageError(f"{option}: expected a range LOW-HIGH, got {text!r}") from None
    return pair  # type: ignore[return-value]


def training_scales(values: list[str]) -> tuple[float, ...]:
    """--scale: '2,3,4' as vdsr-bench takes it, or a range '1.5-4': every multiple of 0.25 in it."""
    ranges = [v for v in values if "-" in v]
    if not ranges:
        return tuple(parse_scales(values))
    if len(values) > 1:
        raise UsageError(f"--scale: a range ({ranges[0]}) is the only scale given, not one of several")
    low, high = parse_range(ranges[0], "--scale", whole=False)
    grid = [str(q / 4) for q in range(math.ceil(low * 4), math.floor(high * 4) + 1)]
    return tuple(parse_scales(grid or [ranges[0]]))


def scale_weights(values: list[str], scales: tuple[float, ...]) -> tuple[float, ...]:
    """--scale-weight 1.5=0.5 ...: one weight for each training scale, 1 where none is given; () if all alike."""
    given: dict[float, float] = {}
    for value in values:
        scale, _, weight = value.partition("=")
        try:
            (number,), amount = parse_scales([scale]), float(weight)
        except (UsageError, ValueError):  # also two scales in one value: 1.5,2=0.4
            raise UsageError(f"--scale-weight: expected SCALE=WEIGHT (1.5=0.5), got {value!r}") from None
        if not (math.isfinite(amount) and amount > 0) or number in given:
            raise UsageError(f"--scale-weight: {value!r}: a weight is a number > 0, one for each scale at most")
        given[number] = amount
    unknown = [f"{s:g}" for s in given if s not in scales]
    if unknown:
        raise UsageError(f"--scale-weight: x{', x'.join(unknown)} is not one of the training scales")
    weights = tuple(given.get(s, 1.0) for s in scales)
    return () if len(set(weights)) == 1 else weights  # all alike: the unweighted draws (and their cache)


def init_weights(init: str | None) -> Path | None:
    """--init: a shipped model's weights, or a .safetensors file."""
    if init is None:
        return None
    weights = Model.load(init).weights if init in MODELS else Path(init)
    if weights is None or weights.suffix != ".safetensors" or not weights.is_file():
        raise UsageError(f"--init {init}: expected a shipped model with weights ({', '.join(MODELS)}) or an existing "
                         ".safetensors file")  # fmt: skip
    return weights


def settle_config(
    output: Path, options: Options, *, resume: bool, max_steps: int | None, device: torch.device
) -> TrainConfig:
    """The run's config: the recipe with the options given on top, or, with --resume, the checkpoint's own (only
    --max-steps and --bf16/--no-bf16 may change; --init may name the weights it started from again, for
    --blend-init). UsageError for a resume that cannot be done as asked."""
    checkpoint_path = output / "checkpoint.safetensors"
    if resume:  # the run continues with the settings it started with
        if not checkpoint_path.is_file():
            raise UsageError(f"--resume: no checkpoint to continue: {checkpoint_path} does not exist")
        given = sorted(f"--{k.replace('_', '-')}" for k, v in asdict(options).items()
                       if v is not None and k not in ("bf16", "init"))  # fmt: skip
        if given:
            raise UsageError(f"--resume: a resumed run keeps its settings; drop {', '.join(given)}")
        config = resume_config(checkpoint_path, max_steps, bf16=options.bf16)
        if options.init is not None and weights_id(init_weights(options.init)) != config.init_from:  # type: ignore[arg-type]
            raise UsageError(f"--resume: --init {options.init} is not the weights this run started from "
                             f"({config.init_from})")  # fmt: skip
        return config
    stride = options.stride if options.stride is not None else options.patch_size  # default: patches do not overlap
    shape = {"epochs": options.epochs, "batch_size": options.batch_size, "patch_size": options.patch_size,
             "stride": stride, "lr": options.lr, "loss": options.loss and options.loss.value}  # fmt: skip
    chosen = options.recipe or Recipe.fast
    bf16 = options.bf16 if options.bf16 is not None else (chosen is Recipe.fast and bf16_supported(device))
    scales = training_scales(options.scale or ["2,3,4"])
    mix: dict[str, object] = {
        "draws_per_image": options.draws_per_image, "jpeg_probability": options.jpeg_probability,
        "scale_weights": options.scale_weight and scale_weights(options.scale_weight, scales),
        "noise_probability": options.noise_probability,
        "jpeg_quality": options.jpeg_quality and parse_range(options.jpeg_quality, "--jpeg-quality", whole=True),
        "noise_sigma": options.noise_sigma and parse_range(options.noise_sigma, "--noise-sigma", whole=False),
        "init_from": options.init and weights_id(init_weights(options.init)),  # type: ignore[arg-type]
        "validate_scales": options.validate_scale and training_scales(options.validate_scale),
        "validate_degradations": options.validate_degradation and tuple(options.validate_degradation),
    }  # fmt: skip
    try:
        return recipe(
            chosen.value, (options.model or Architecture.vdsr).value, scales=scales, seed=options.seed or 0,
            bf16=bf16, max_steps=max_steps, **{k: v for k, v in mix.items() if v is not None},
            **{k: v for k, v in (("validate_every", options.validate_every),
                                 ("checkpoint_every", options.checkpoint_every)) if v is not None},  # fmt: skip
            **{k: v for k, v in shape.items() if v is not None},
        )  # fmt: skip
    except ValueError as error:  # a value out of range: --batch-size 0, --lr -1, ...
        raise UsageError(first_line(error)) from error
