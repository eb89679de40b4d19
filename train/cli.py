"""`vdsr-train`: train VDSR or SRCNN on the 291 images (T91 + BSD200), resumable, with validation on Set5."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import torch
import typer
from platformdirs import user_cache_dir
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vdsr.bench.cli import parse_scales
from vdsr.bench.datasets import DatasetError, resolve_dataset
from vdsr.train.data import build_patches
from vdsr.train.loop import Progress as TrainProgress
from vdsr.train.loop import TrainingError, bf16_supported, recipe, resume_config, train

app = typer.Typer(add_completion=False, help=__doc__)


class Model(str, Enum):
    vdsr = "vdsr"
    srcnn = "srcnn"


class Recipe(str, Enum):
    paper = "paper"
    fast = "fast"


class ValidationSet(str, Enum):  # checkpoints are chosen and tuned on these only, never on a set we report
    Set5 = "Set5"
    Set14 = "Set14"


STOPPED_EARLY = 3  # exit code: stopped by a signal or --max-minutes, checkpoint written; continue with --resume


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise typer.BadParameter("CUDA is not available in this torch build or machine", param_hint="--device")
    return torch.device(name)


@app.command()
def main(
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: checkpoint, weights, card, log.")],
    model: Annotated[Model | None, typer.Option("--model", help="vdsr or srcnn [default: vdsr].")] = None,
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
    err = Console(stderr=True)
    torch_device = pick_device(device)
    settings = dict(model=model, recipe=recipe_name, epochs=epochs, batch_size=batch_size, patch_size=patch_size,
                    stride=stride, lr=lr, bf16=bf16, scale=scale, seed=seed, validate_every=validate_every,
                    checkpoint_every=checkpoint_every)  # fmt: skip
    overrides = {k: v for k, v in settings.items() if v is not None and k in ("epochs", "batch_size", "patch_size",
                                                                               "stride", "lr")}  # fmt: skip
    if patch_size is not None and stride is None:
        overrides["stride"] = patch_size
    recipe_name = recipe_name or Recipe.fast
    use_bf16 = bf16 if bf16 is not None else (recipe_name is Recipe.fast and bf16_supported(torch_device))
    scales = tuple(parse_scales(scale or ["2,3,4"]))
    config = recipe(recipe_name.value, (model or Model.vdsr).value, scales=scales, seed=seed or 0, bf16=use_bf16,
                    validate_every=2000 if validate_every is None else validate_every,
                    checkpoint_every=500 if checkpoint_every is None else checkpoint_every, max_steps=max_steps,
                    **overrides)  # fmt: skip
    checkpoint_path = output / "checkpoint.safetensors"
    if resume and not checkpoint_path.is_file():
        raise typer.BadParameter(f"no checkpoint to continue: {checkpoint_path} does not exist", param_hint="--resume")
    if resume:  # the run continues with the settings it started with
        given = sorted(f"--{k.replace('_', '-')}" for k, v in settings.items() if v is not None)
        if given:
            raise typer.BadParameter(
                f"a resumed run keeps its settings; drop {', '.join(given)}", param_hint="--resume"
            )
        try:
            config = resume_config(checkpoint_path, max_steps)
        except TrainingError as error:
            err.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from error
        if config.bf16 and not bf16_supported(torch_device):
            err.print(f"note: this run uses bf16, which is not native on {torch_device} here: it will be slow")
    try:
        train_sets = [resolve_dataset(name, data_dir) for name in ("T91", "BSD200")]
        validation_sets = [resolve_dataset("Set5", data_dir)]  # checked every --validate-every steps
        final = [resolve_dataset(name.value, data_dir) for name in dict.fromkeys(final_sets)]
    except DatasetError as error:
        err.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from error
    cache = cache_dir or Path(user_cache_dir("vdsr"))
    err.print(f"patches: {config.patch_size}px, stride {config.stride}, scales {list(config.scales)} (cache {cache})")
    patches = build_patches(train_sets, config.scales, config.patch_size, config.stride, cache)
    summary = f"{len(patches.hr)} patches; {config.recipe} recipe on {torch_device}, bf16 {config.bf16}"
    err.print(summary, soft_wrap=True)
    columns = (
        TextColumn("step"), MofNCompleteColumn(), BarColumn(),
        TextColumn("loss {task.fields[loss]} lr {task.fields[lr]} {task.fields[rate]} patches/s"),
        TextColumn("Set5 {task.fields[val]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    last_val = "-"
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("train", total=None, loss="-", lr="-", rate="-", val="-")

        def show(p: TrainProgress) -> None:
            nonlocal last_val
            if p.validation:
                last_val = " ".join(f"x{c.scale} {c.psnr:.2f}" for c in p.validation if c.dataset == "Set5")
                scores = ", ".join(f"{c.dataset} x{c.scale} {c.psnr:.2f}" for c in p.validation)
                progress.console.print(f"step {p.step}: PSNR {scores}", highlight=False)
            progress.update(task, total=p.total_steps, completed=p.step, val=last_val)
            if not p.validation or p.lr:  # the final validation report carries no training figures
                progress.update(task, loss=f"{p.loss:.3e}", lr=f"{p.lr:.2e}", rate=f"{p.patches_per_second:.0f}")

        try:
            result = train(config, patches, train_sets, validation_sets, output, torch_device, resume=resume,
                           max_minutes=max_minutes, on_progress=show, final_sets=final)  # fmt: skip
        except TrainingError as error:
            err.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from error
    err.print(f"stopped at step {result.steps} ({result.stopped}); checkpoint {result.checkpoint}", soft_wrap=True)
    if result.weights is not None:
        err.print(f"weights {result.weights}, model card {result.weights.with_suffix('.json')}", soft_wrap=True)
    else:
        err.print(f"not finished: continue with vdsr-train --output {output} --resume", soft_wrap=True)
        raise typer.Exit(STOPPED_EARLY)
