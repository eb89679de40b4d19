"""`vdsr-train`: train VDSR or SRCNN on the 291 images (T91 + BSD200), resumable, with validation on Set5."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import torch
import typer
from platformdirs import user_cache_dir
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vdsr.bench.datasets import resolve_dataset
from vdsr.bench.protocol import parse_scales
from vdsr.catalogue import Architecture
from vdsr.console import error_console, exit_on_errors, safe
from vdsr.errors import EXIT_STOPPED_EARLY, UsageError, first_line
from vdsr.train.config import TrainConfig, bf16_supported, recipe, resume_config
from vdsr.train.data import build_patches
from vdsr.train.loop import StepReport, train

app = typer.Typer(add_completion=False, help=__doc__)


class Recipe(str, Enum):
    paper = "paper"
    fast = "fast"


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


@app.command()
def main(
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: checkpoint, weights, card, log.")],
    model: Annotated[Architecture | None, typer.Option("--model", help="vdsr or srcnn [default: vdsr].")] = None,
    recipe_name: Annotated[
        Recipe | None, typer.Option("--recipe", help="paper: SGD as Kim et al.; fast: AdamW [default: fast].")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Holds T91, BSD200, Set5; default $VDSR_DATA_DIR.")
    ] = None,
    scale: Annotated[
        list[str] | None, typer.Option("--scale", "-s", help="Training scales, mixed per batch [default: 2,3,4].")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the checkpoint in --output.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Checkpoint and stop after this.")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Schedule length (recipe default).")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop at this step; schedule unchanged.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    patch_size: Annotated[int | None, typer.Option("--patch-size")] = None,
    stride: Annotated[int | None, typer.Option("--stride", help="Patch grid step (default: the patch size).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (recipe default).")] = None,
    bf16: Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="Default: fast recipe where native.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="[default: 0]")] = None,
    validate_every: Annotated[
        int | None, typer.Option("--validate-every", help="Steps between Set5 checks [default: 2000].")
    ] = None,
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every", help="[default: 500]")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Patch cache (default: user cache).")] = None,
    final_sets: Annotated[
        list[ValidationSet],
        typer.Option("--final-validation", help="Validation sets scored at the end, for the model card."),
    ] = [ValidationSet.Set5, ValidationSet.Set14],
) -> None:
    """Train one model; Ctrl-C or SIGTERM writes a checkpoint and stops cleanly, --resume continues it exactly."""
    err = error_console()
    with exit_on_errors(err):
        torch_device = pick_device(device)
        options = Options(model=model, recipe=recipe_name, scale=scale, epochs=epochs, batch_size=batch_size,
                          patch_size=patch_size, stride=stride, lr=lr, bf16=bf16, seed=seed,
                          validate_every=validate_every, checkpoint_every=checkpoint_every)  # fmt: skip
        config = settle_config(output, options, resume=resume, max_steps=max_steps, device=torch_device)
        if resume and config.bf16 and not bf16_supported(torch_device):
            err.print(f"note: this run uses bf16, which is not native on {torch_device} here: it will be slow")
        train_sets = [resolve_dataset(name, data_dir) for name in ("T91", "BSD200")]
        validation_sets = [resolve_dataset("Set5", data_dir)]  # checked every --validate-every steps
        final = [resolve_dataset(name.value, data_dir) for name in dict.fromkeys(final_sets)]
        cache = cache_dir or Path(user_cache_dir("vdsr"))
        grid = f"{config.patch_size}px, stride {config.stride}, scales {list(config.scales)}"
        err.print(f"patches: {grid} (cache {safe(cache)})")
        patches = build_patches(train_sets, config.scales, config.patch_size, stride=config.stride, cache_dir=cache)
        err.print(f"{len(patches.hr)} patches; {config.recipe} recipe on {torch_device}, bf16 {config.bf16}")
        columns = (
            TextColumn("step"), MofNCompleteColumn(), BarColumn(),
            TextColumn("loss {task.fields[loss]} lr {task.fields[lr]} {task.fields[rate]} patches/s"),
            TextColumn("Set5 {task.fields[val]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )  # fmt: skip
        last_val = "-"
        with Progress(*columns, console=err) as progress:
            task = progress.add_task("train", total=None, loss="-", lr="-", rate="-", val="-")

            def show(p: StepReport) -> None:
                nonlocal last_val
                if p.validation:
                    last_val = " ".join(f"x{c.scale} {c.psnr:.2f}" for c in p.validation if c.dataset == "Set5")
                    scores = ", ".join(f"{c.dataset} x{c.scale} {c.psnr:.2f}" for c in p.validation)
                    progress.console.print(f"step {p.step}: PSNR {scores}", highlight=False)
                progress.update(task, total=p.total_steps, completed=p.step, val=last_val)
                if not p.validation or p.lr:  # the final validation report carries no training figures
                    progress.update(task, loss=f"{p.loss:.3e}", lr=f"{p.lr:.2e}", rate=f"{p.patches_per_second:.0f}")

            result = train(config, patches, output, device=torch_device, train_sets=train_sets,
                           validation_sets=validation_sets, final_sets=final, resume=resume, max_minutes=max_minutes,
                           on_progress=show)  # fmt: skip
    err.print(f"stopped at step {result.steps} ({result.stopped}); checkpoint {safe(result.checkpoint)}")
    if result.weights is not None:
        err.print(f"weights {safe(result.weights)}, model card {safe(result.weights.with_suffix('.json'))}")
    else:
        err.print(f"not finished: continue with vdsr-train --output {safe(output)} --resume")
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
    bf16: bool | None
    seed: int | None
    validate_every: int | None
    checkpoint_every: int | None


def settle_config(
    output: Path, options: Options, *, resume: bool, max_steps: int | None, device: torch.device
) -> TrainConfig:
    """The run's config: the recipe with the options given on top, or, with --resume, the checkpoint's own (only
    --max-steps may change). UsageError for a resume that cannot be done as asked."""
    checkpoint_path = output / "checkpoint.safetensors"
    if resume:  # the run continues with the settings it started with
        if not checkpoint_path.is_file():
            raise UsageError(f"--resume: no checkpoint to continue: {checkpoint_path} does not exist")
        given = sorted(f"--{k.replace('_', '-')}" for k, v in asdict(options).items() if v is not None)
        if given:
            raise UsageError(f"--resume: a resumed run keeps its settings; drop {', '.join(given)}")
        return resume_config(checkpoint_path, max_steps)
    stride = options.stride if options.stride is not None else options.patch_size  # default: patches do not overlap
    shape = {"epochs": options.epochs, "batch_size": options.batch_size, "patch_size": options.patch_size,
             "stride": stride, "lr": options.lr}  # fmt: skip
    chosen = options.recipe or Recipe.fast
    bf16 = options.bf16 if options.bf16 is not None else (chosen is Recipe.fast and bf16_supported(device))
    scales = tuple(parse_scales(options.scale or ["2,3,4"]))
    try:
        return recipe(
            chosen.value, (options.model or Architecture.vdsr).value, scales=scales, seed=options.seed or 0,
            bf16=bf16, max_steps=max_steps,
            validate_every=2000 if options.validate_every is None else options.validate_every,
            checkpoint_every=500 if options.checkpoint_every is None else options.checkpoint_every,
            **{k: v for k, v in shape.items() if v is not None},
        )  # fmt: skip
    except ValueError as error:  # a value out of range: --batch-size 0, --lr -1, ...
        raise UsageError(first_line(error)) from error
