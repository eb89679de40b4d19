"""`vdsr-train`: train VDSR or SRCNN on the 291 images (T91 + BSD200), resumable, with validation on Set5.

Its options are the training settings as vdsr.train.config declares them (help, default, rule), and the options of a
run (where its data and output are, how long it may take, what it starts from)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from contextlib import ExitStack
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from platformdirs import user_cache_dir
from rich.console import Console

from vdsr.bench.datasets import DATA_DIR_ENV, resolve_dataset
from vdsr.catalogue import MODELS
from vdsr.errors import EXIT_STOPPED_EARLY, TrainingError, UsageError, first_line
from vdsr.files import unwritable_folder
from vdsr.model import Model
from vdsr.runtime.console import (
    Command,
    WorkProgress,
    error_console,
    exit_on_errors,
    make_app,
    require_modules,
    safe,
    version_option,
)
from vdsr.scale import parse_scales
from vdsr.train.config import SETTINGS, TrainConfig, bf16_supported, recipe, resume_config
from vdsr.train.settings import parse_range

if TYPE_CHECKING:  # torch and what needs it are imported once a run starts: --help and --version work without them
    import torch

    from vdsr.bench.harness import CellResult
    from vdsr.train.loop import StepReport

app = make_app(__doc__)


def shown(value: object) -> str:
    """A setting's value as help shows it: 2,3,4 for scales, 30-95 for a range, on/off, none."""
    if value is None or isinstance(value, bool):
        return "none" if value is None else "on" if value else "off"
    if isinstance(value, tuple):
        numbers = all(isinstance(v, int | float) for v in value)
        return ("-" if numbers and len(value) == 2 else ",").join(f"{v:g}" if numbers else str(v) for v in value)
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def recipe_default(name: str) -> str:
    """A setting's default as help shows it: one value, or each recipe's."""
    values = {r: shown(getattr(recipe(r), name)) for r in ("fast", "paper", "gpu")}
    if len(set(values.values())) == 1:
        return values["fast"]
    return ", ".join(f"{r} {v}" for r, v in values.items())


SHOWN = {  # defaults that depend on other settings or on the machine
    "recipe": "fast",
    "stride": "the patch size",
    "max_steps": "the schedule's end",
    "scale_weights": "all alike",
    "validate_scales": "the training scales",
    "bf16": "fast: on where bf16 is native; gpu: on; paper: off",
}


def _option(name: str) -> inspect.Parameter:
    """The vdsr-train option of a declared setting: typed as the field, its help, its default as the recipes have it."""
    declared = SETTINGS[name]
    field_type = TrainConfig.__dataclass_fields__[name].type
    kind: Any
    if declared.choices:
        kind = Enum(f"{name.title()}Choice", {c: c for c in declared.choices}, type=str)  # type: ignore[misc,no-redef]
    elif declared.repeatable:
        kind = list[str]
    elif declared.parse is not None:
        kind = str
    else:
        kind = {"int": int, "float": float, "bool": bool}[str(field_type).split(" ")[0]]
    names = [declared.option or ""] + {"architecture": ["--model"], "scales": ["-s"]}.get(name, [])  # --model: old
    shown = SHOWN.get(name) or recipe_default(name)
    option = typer.Option(*names, help=declared.help, show_default=shown, case_sensitive=False)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


class ValidationSet(str, Enum):  # checkpoints are chosen and tuned on these only, never on a set we report
    Set5 = "Set5"
    Set14 = "Set14"


def run(
    *,
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder: checkpoint, weights, card, log.")],
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Holds T91, BSD200, Set5, Set14.", show_default=f"${DATA_DIR_ENV}"),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Fine-tune: start from these weights (a shipped model's name or a .safetensors).",
            show_default="none: random",
        ),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="Distil: weights whose outputs the targets move toward (--teacher-weight).",
            show_default="none",
        ),
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
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Patch cache.", show_default=user_cache_dir("vdsr"))
    ] = None,
    final_sets: Annotated[
        list[ValidationSet],
        typer.Option("--final-validation", help="Validation sets scored at the end, for the model card."),
    ] = [ValidationSet.Set5, ValidationSet.Set14],
    version: Annotated[bool, version_option()] = False,
    **given: Any,
) -> None:
    """Train one model; Ctrl-C or SIGTERM writes a checkpoint and stops cleanly, --resume continues it exactly."""
    err = error_console()  # errors, from every rank
    with exit_on_errors(err):
        require_modules(("torch",), needs="vdsr-train", extra="train")
    from vdsr.train.average import check_average_from
    from vdsr.train.card import initial_state, teacher_model
    from vdsr.train.device_data import DeviceBatches
    from vdsr.train.distributed import check_batch_size, process_group, rank_device, ranks_from_env
    from vdsr.train.loop import train, training_data

    ranks = ranks_from_env()  # several under torchrun (python -m vdsr.train); vdsr-train alone is one
    out = err if ranks.leader else Console(quiet=True)  # progress and results: rank 0 speaks for all
    given = {k: v.value if isinstance(v, Enum) else v for k, v in given.items() if v is not None}
    with exit_on_errors(err), ExitStack() as stack:
        if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes >= 0):
            raise UsageError(f"--max-minutes: expected a number of minutes >= 0 (0: one step), got {max_minutes}")
        torch_device = rank_device(pick_device(device), ranks)
        init_path, teacher_path = init_weights(init), init_weights(teacher, option="--teacher")
        config = settle_config(output, given, resume=resume, init=init, teacher=teacher, device=torch_device)
        try:  # before the patches are built: a file that does not fit is refused now
            if init_path is not None:
                initial_state(init_path, config)
        except TrainingError as error:
            raise UsageError(f"--init: {error}") from error
        if config.teacher and teacher_path is None:
            raise UsageError(f"--resume: this run distils from {config.teacher}: give its --teacher again")
        try:  # and a distilling run's teacher
            teacher_model(teacher_path, config, torch_device)
        except TrainingError as error:
            raise UsageError(f"--teacher: {error}") from error
        check_batch_size(config.batch_size, ranks)
        check_average_from(average_from, config.checkpoint_every, max_steps=config.max_steps)
        if average_from is not None and config.budget_minutes is not None:
            raise UsageError("--average-from averages a schedule of known length (--epochs), not --budget-minutes")
        if blend_init is not None and not (0 < blend_init <= 1 and init_path and config.init_from):
            raise UsageError(f"--blend-init {blend_init}: a weight 0 < A <= 1 for a fine-tuning run, with its --init")
        stack.enter_context(process_group(torch_device, ranks))
        if resume and config.bf16 and not bf16_supported(torch_device):
            out.print(f"note: bf16 is slower than fp32 on {torch_device} here; --no-bf16 continues the run in fp32")
        train_sets = [resolve_dataset(name, data_dir) for name in ("T91", "BSD200")]
        validation_sets = [resolve_dataset("Set5", data_dir)]  # checked every --validate-every steps
        final = [resolve_dataset(name.value, data_dir) for name in dict.fromkeys(final_sets)]
        cache = cache_dir or Path(user_cache_dir("vdsr"))
        data = training_data(
            config, train_sets, cache, device=torch_device, say=lambda text: out.print(safe(text)), ranks=ranks
        )
        where = f"{torch_device}" if ranks.world == 1 else f"{ranks.world} ranks ({torch_device.type})"
        count = data.crops if isinstance(data, DeviceBatches) else len(data.hr)
        out.print(f"{count} patches; {config.recipe} recipe on {where}, bf16 {config.bf16}")
        result = train(
            config,
            data,
            output,
            device=torch_device,
            train_sets=train_sets,
            validation_sets=validation_sets,
            final_sets=final,
            resume=resume,
            init=init_path,
            max_minutes=max_minutes,
            keep_checkpoints=keep_checkpoints,
            average_from=average_from,
            blend_init=blend_init,
            teacher=teacher_path,
            on_progress=shower(out, stack),
            ranks=ranks,
        )
    out.print(f"stopped at step {result.steps} ({result.stopped}); checkpoint {safe(result.checkpoint)}")
    if result.weights is not None:
        out.print(f"weights {safe(result.weights)}, model card {safe(result.weights.with_suffix('.json'))}")
    else:
        again = f" --teacher {safe(teacher)}" if teacher else ""  # a distilling run needs its teacher again
        out.print(f"not finished: continue with vdsr-train --output {safe(output)} --resume{again}")
        if ranks.leader:  # rank 0 alone exits 3: torchrun stops the others' exits 0 from cutting it short
            raise typer.Exit(EXIT_STOPPED_EARLY)


_RUN_PARAMETERS = list(inspect.signature(run, eval_str=True).parameters.values())[:-1]
_SIGNATURE = inspect.Signature(_RUN_PARAMETERS + [_option(name) for name, s in SETTINGS.items() if s.option])


def main(**options: Any) -> None:
    run(**options)


main.__doc__, main.__signature__ = run.__doc__, _SIGNATURE  # type: ignore[attr-defined]
main.__annotations__ = {p.name: p.annotation for p in _SIGNATURE.parameters.values()} | {"return": None}
app.command(cls=Command)(main)


def shower(out: Console, stack: ExitStack) -> Callable[[StepReport], None]:
    """What a step report shows: the progress line (steps done of where the run stops, the current loss), started
    by the first report (before the first step: it knows the total) and ended by `stack`, and each validation's
    scores as a line that stays."""
    last = {"set5": "-"}
    started: list[WorkProgress] = []

    def show(p: StepReport) -> None:
        if not started:
            progress = WorkProgress(out, "step", total=p.end, unit="steps")
            progress.completed = p.step  # a resumed run starts where it stopped
            started.append(stack.enter_context(progress))
        progress = started[0]
        if p.validation:
            last["set5"] = " ".join(f"{cell_name(c)} {c.psnr:.2f}" for c in p.validation if c.dataset == "Set5")
            scores = ", ".join(f"{c.dataset} {cell_name(c)} {c.psnr:.2f}" for c in p.validation)
            progress.print(f"step {p.step}: PSNR {scores}")
        info = None  # the reports at the start and of the final validation carry no training figures
        if math.isfinite(p.loss):
            figures = f"loss {p.loss:.3e}, lr {p.lr:.2e}, {p.patches_per_second:.0f} patches/s"
            info = f"{figures}, Set5 {last['set5']}"
        progress.update(completed=p.step, total=p.end, info=info)

    return show


def pick_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device: CUDA is not available in this torch build or machine")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device: {error}") from error


def cell_name(cell: CellResult) -> str:
    """x2, or x2 jpeg:75 for a small image made otherwise than the paper's way."""
    return f"x{cell.scale:g}" + ("" if cell.degradation == "bicubic" else f" {cell.degradation}")


def training_scales(values: list[str], *, option: str = "--scale") -> tuple[float, ...]:
    """--scale: '2,3,4' as vdsr-bench takes it, or a range '1.5-4': every multiple of 0.25 in it."""
    ranges = [v for v in values if "-" in v]
    if not ranges:
        return tuple(parse_scales(values, option=option))
    if len(values) > 1:
        raise UsageError(f"{option}: a range ({ranges[0]}) is the only scale given, not one of several")
    low, high = parse_range(ranges[0], option, whole=False)
    grid = [str(q / 4) for q in range(math.ceil(low * 4), math.floor(high * 4) + 1)]
    return tuple(parse_scales(grid or [ranges[0]], option=option))


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


def init_weights(init: str | None, *, option: str = "--init") -> Path | None:
    """--init (--teacher): a shipped model's weights, or a .safetensors file."""
    if init is None:
        return None
    weights = Model.load(init).weights if init in MODELS else Path(init)
    if weights is None or weights.suffix.lower() != ".safetensors" or not weights.is_file():
        raise UsageError(
            f"{option} {init}: expected a shipped model with weights ({', '.join(MODELS)}) or an existing "
            ".safetensors file"
        )
    return weights


def settle_config(
    output: Path, given: dict[str, Any], *, resume: bool, init: str | None, teacher: str | None, device: torch.device
) -> TrainConfig:
    """The run's config: the recipe with the settings given on top, or, with --resume, the checkpoint's own (only the
    resumable settings may change; --init may name the weights it started from again, for --blend-init; --teacher
    names the weights it distils from again). UsageError for a resume that cannot be done as asked, or a value out of
    its range."""
    from vdsr.train.card import weights_id

    checkpoint_path = output / "checkpoint.safetensors"
    problem = unwritable_folder(output)  # before any data work: a file where the folder goes, a read-only place
    if problem:
        raise UsageError(f"--output: {problem}")
    if not resume and checkpoint_path.is_file():
        raise UsageError(
            f"--output: {checkpoint_path} exists: pass --resume to continue it, or choose another --output"
        )
    if resume:  # the run continues with the settings it started with
        if not checkpoint_path.is_file():
            raise UsageError(f"--resume: no checkpoint to continue: {checkpoint_path} does not exist")
        fixed = sorted(SETTINGS[k].option.split("/")[0] for k in given if not SETTINGS[k].resumable)  # type: ignore[union-attr]
        if fixed:
            raise UsageError(f"--resume: a resumed run keeps its settings; drop {', '.join(fixed)}")
        config = resume_config(checkpoint_path, given.get("max_steps"), bf16=given.get("bf16"))
        if init is not None and weights_id(init_weights(init)) != config.init_from:  # type: ignore[arg-type]
            raise UsageError(f"--resume: --init {init} is not the weights this run started from ({config.init_from})")
        if teacher is not None and weights_id(init_weights(teacher, option="--teacher")) != config.teacher:  # type: ignore[arg-type]
            learns_from = f"distils from ({config.teacher})" if config.teacher else "learns from (it has no teacher)"
            raise UsageError(f"--resume: --teacher {teacher} is not the weights this run {learns_from}")
        return config
    name = given.pop("recipe", "fast")
    values: dict[str, Any] = {}
    for key, value in given.items():
        declared = SETTINGS[key]
        values[key] = declared.parse(value) if declared.parse is not None else value
    values["scales"] = training_scales(given.get("scales", ["2,3,4"]))
    if "scale_weights" in given:
        values["scale_weights"] = scale_weights(given["scale_weights"], values["scales"])
    if "validate_scales" in given:
        values["validate_scales"] = training_scales(given["validate_scales"], option="--validate-scale")
    if "validate_degradations" in given:
        values["validate_degradations"] = tuple(given["validate_degradations"])
    if "patch_size" in given and "stride" not in given:
        values["stride"] = given["patch_size"]  # default: patches do not overlap
    if init is not None:
        values["init_from"] = weights_id(init_weights(init))  # type: ignore[arg-type]
    if teacher is not None:
        values["teacher"] = weights_id(init_weights(teacher, option="--teacher"))  # type: ignore[arg-type]
    if "bf16" not in given:
        values["bf16"] = name == "gpu" or (name == "fast" and bf16_supported(device))
    try:
        config = recipe(name, values.pop("architecture", "vdsr"), **values)
    except ValueError as error:  # a value out of range: --batch-size 0, --lr -1, ...
        raise UsageError(first_line(error)) from error
    finished = [output / f"{config.architecture}{suffix}" for suffix in (".safetensors", ".json")]
    if any(path.exists() for path in finished):  # a finished run's weights, never replaced by a new run
        raise UsageError(f"--output: {output} holds a finished run's {finished[0].name}; choose another --output")
    return config
