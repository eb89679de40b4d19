"""One training loop for both recipes (vdsr.train.config): checkpoints, validation, and the model card at the end.

Outputs in the run folder: checkpoint.safetensors (resumable), <model>.safetensors (weights), <model>.json (model
card) and train_log.jsonl; with keep_checkpoints, a copy of each periodic checkpoint in checkpoints/ (for the tail
average, vdsr.train.average). Every write is atomic; a resumed run continues exactly where the checkpoint left it.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from vdsr._version import __version__
from vdsr.bench.datasets import Dataset
from vdsr.bench.harness import CellResult
from vdsr.errors import BackendError, DatasetError, TrainingError
from vdsr.files import atomic_write_bytes, atomic_write_text
from vdsr.train.average import average_checkpoints, averaged_steps, kept_checkpoint
from vdsr.train.card import initial_state, model_card, new_model, teacher_model
from vdsr.train.checkpoint import Checkpoint, save_checkpoint
from vdsr.train.config import TrainConfig
from vdsr.train.data import PatchSet, batch_for_step, build_patches, steps_per_epoch
from vdsr.train.device_data import DeviceBatches
from vdsr.train.distributed import SINGLE, Ranks, any_rank, barrier, largest, share, wrap
from vdsr.train.evaluate import validate
from vdsr.train.qat import RangeKeeper
from vdsr.train.resume import logged_step, restore
from vdsr.train.schedule import clip, compute_loss, learning_rate, make_optimizer
from vdsr.weights import save_weights

Data = PatchSet | DeviceBatches  # where batches come from: the cached patch set, or crops made on the device
UNMEASURED = 10**12  # a budgeted schedule's length before its steps are timed
TIMED = (10, 60)  # a budgeted schedule times steps 10 to 60 of a process (the first ones start kernels, caches)


@dataclass(frozen=True)
class StepReport:
    step: int
    total_steps: int
    loss: float  # mean over the steps since the last log line (nan in the reports at the start and the end)
    lr: float
    patches_per_second: float
    validation: list[CellResult] | None = None  # set on validation steps
    end: int | None = None  # the step this run stops at (max_steps or the schedule's); None while a budget is untimed


@dataclass(frozen=True)
class TrainResult:
    steps: int
    stopped: str  # "finished", "time limit", "max steps" or "signal SIGINT/SIGTERM"
    weights: Path | None  # written when the schedule finished or max_steps was reached
    checkpoint: Path


@contextmanager
def stop_on_signals() -> Iterator[list[str]]:
    """SIGINT/SIGTERM set a flag (the list gets the signal's name) instead of killing the loop mid-step."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signals can only be handled in the main thread
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def training_data(
    config: TrainConfig,
    train_sets: Sequence[Dataset],
    cache: Path,
    *,
    device: torch.device,
    say: Callable[[str], None],
    ranks: Ranks,
) -> Data:
    """Where the batches come from: the patch set (built once and cached), or crops made on the device."""
    if config.data == "device":
        say(f"patches: {config.patch_size}px random crops made on {device}, scales {config.scales}")
        return DeviceBatches(train_sets, config.scales, patch=config.patch_size, device=device, seed=config.seed)
    weights = config.scale_weights or (1,) * len(config.scales)
    scales = ", ".join(
        f"{s:g}" + (f" (weight {w:g})" if w != 1 else "") for s, w in zip(config.scales, weights, strict=True)
    )
    grid = f"{config.patch_size}px, stride {config.stride}, scales {scales}"
    if config.draws_per_image:
        grid += (
            f"; {config.draws_per_image} draws per image, JPEG {config.jpeg_probability:g} (q "
            f"{config.jpeg_quality[0]}-{config.jpeg_quality[1]}), noise {config.noise_probability:g} "
            f"(sigma {config.noise_sigma[0]:g}-{config.noise_sigma[1]:g})"
        )
    say(f"patches: {grid} (cache {cache})")
    if ranks.local != 0:  # the first rank of each machine builds its patch cache, the others read it
        barrier(ranks)
    patches = build_patches(train_sets, config.mix(), config.patch_size, stride=config.stride, cache_dir=cache)
    if ranks.local == 0:
        barrier(ranks)
    return patches


def fetcher(data: Data, config: TrainConfig, *, device: torch.device, ranks: Ranks) -> Callable[[int], Any]:
    """step -> this rank's (ILR, HR) batch of the step, on the device in the recipe's memory format: every rank makes
    the whole batch (a pure function of the seed and the step) and takes its rows."""
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

    def fetch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(data, DeviceBatches):
            made = data.batch(step, config.batch_size)
            return tuple(t[ranks.rank :: ranks.world].contiguous(memory_format=memory_format) for t in made)  # type: ignore[return-value]
        ilr, hr = (share(b, ranks) for b in batch_for_step(data, step, config.batch_size, seed=config.seed))
        return (
            torch.from_numpy(ilr)[:, None].to(device, memory_format=memory_format),
            torch.from_numpy(hr)[:, None].to(device, memory_format=memory_format),
        )

    return fetch


def train(
    config: TrainConfig,
    patches: Data,
    out_dir: Path,
    *,
    device: torch.device,
    train_sets: Sequence[Dataset] = (),
    validation_sets: Sequence[Dataset] = (),
    final_sets: Sequence[Dataset] | None = None,
    resume: bool = False,
    init: Path | None = None,
    max_minutes: float | None = None,
    keep_checkpoints: bool = False,
    average_from: int | None = None,
    blend_init: float | None = None,
    teacher: Path | None = None,
    on_progress: Callable[[StepReport], None] = lambda p: None,
    ranks: Ranks = SINGLE,
) -> TrainResult:
    """Train `config.architecture` on `patches` (the cached patch set, or batches made on the device); checkpoints in
    `out_dir`. A fine-tuning config (init_from) starts from the weights file `init`. Every validate_every steps the
    model (its moving average, with config.ema) is scored on `validation_sets` (full images, the bench protocol), at
    the end on `final_sets` (default: the same); the model card names `train_sets`. With config.budget_minutes the
    cosine's length is set once the warm-up has timed the steps (kept in the checkpoint). With several `ranks`
    (torchrun), see vdsr.train.distributed: rank 0 alone validates and writes. keep_checkpoints keeps a copy of each
    periodic checkpoint; with average_from (which keeps them too), the weights written at the end are the mean of the
    kept ones from that step on (vdsr.train.average), the card says which. blend_init A (fine-tuning): those weights
    become (1 - A) * the `init` weights + A * themselves (WiSE-FT, Wortsman et al. 2022). A distilling config
    (teacher) reads its teacher from `teacher` and moves each target toward the teacher's output for that input."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TrainingError(f"{out_dir}: cannot make the run folder ({error.strerror or error})") from error
    checkpoint_path = out_dir / "checkpoint.safetensors"
    log_path = out_dir / "train_log.jsonl"
    try:
        per_epoch = (
            patches.steps_per_epoch(config.batch_size)
            if isinstance(patches, DeviceBatches)
            else (steps_per_epoch(patches, config.batch_size))
        )
    except ValueError as error:
        raise TrainingError(str(error)) from error
    budget = None if config.budget_minutes is None else config.budget_minutes * 60
    if budget is not None and average_from is not None:
        raise TrainingError("--average-from averages steps of a schedule of known length (--epochs), not one laid "
                            "over --budget-minutes")  # fmt: skip
    total_steps = UNMEASURED if budget is not None else max(1, round(config.epochs * per_epoch))
    model = new_model(config, device)
    resuming = resume and checkpoint_path.is_file()
    needs_start = blend_init is not None or (config.init_from is not None and not resuming)
    start_state = initial_state(init, config) if needs_start else None  # checked before any step is trained
    guide = teacher_model(teacher, config, device)  # checked before any step is trained too
    scales, degradations = config.validation_cells()
    if start_state is not None and not resuming:
        model.load_state_dict(start_state)
    optimizer = make_optimizer(config, model)
    step, wall_before = 0, 0.0
    ema = copy.deepcopy(model) if config.ema else None  # the moving average: what is validated and saved
    ranges = RangeKeeper(config, model, train_sets, device=device, ranks=ranks)  # --qat-ranges calibrated
    if resuming:
        saved = restore(checkpoint_path, config, patches, model=model, optimizer=optimizer)
        found_step, found_wall = saved.info["step"], saved.info["wall_seconds"]
        found_total = saved.info.get("total_steps", total_steps)  # a budgeted schedule's measured length
        assert isinstance(found_step, int) and isinstance(found_wall, int | float) and isinstance(found_total, int)
        step, wall_before, total_steps = found_step, float(found_wall), found_total  # checked by load_checkpoint
        if total_steps != UNMEASURED and step > total_steps:
            raise TrainingError(f"{checkpoint_path}: its step {step} is past the schedule's {total_steps} steps")
        if ema is not None:
            ema.load_state_dict(saved.ema or model.state_dict())
        ranges.restore(saved.info, checkpoint_path)
        if log_path.is_file() and ranks.leader:  # drop what was logged after the checkpoint: those steps run again
            kept = [line for line in log_path.read_text().splitlines() if logged_step(line) <= step]
            atomic_write_text(log_path, "".join(f"{line}\n" for line in kept))
    elif checkpoint_path.is_file():
        raise TrainingError(f"{checkpoint_path} exists: pass --resume to continue it, or choose another --output")
    last_step = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
    averaged = None if average_from is None else averaged_steps(average_from, last_step, config.checkpoint_every)
    keeping = keep_checkpoints or kept_checkpoint(out_dir, 0).parent.is_dir()  # once kept, kept on every resume

    def keep_copy() -> None:  # of the checkpoint just written: the periodic steps' and the last, as asked
        periodic = config.checkpoint_every and (step % config.checkpoint_every == 0 or step == last_step)
        if ranks.leader and periodic and (keeping or (averaged is not None and step in averaged)):
            kept = kept_checkpoint(out_dir, step)
            kept.parent.mkdir(exist_ok=True)
            atomic_write_bytes(kept, checkpoint_path.read_bytes())

    if averaged is not None and ranks.leader:  # the kept checkpoints of the steps done: checked now, not at the end
        if step and not kept_checkpoint(out_dir, step).is_file():
            keep_copy()  # the restored checkpoint is that step's (a crash or failure came between it and its copy)
        average_checkpoints([kept_checkpoint(out_dir, s) for s in averaged if s <= step], config, patches.key)
    start, first_step = time.monotonic(), step

    def checkpoint() -> None:
        if not ranks.leader:
            return
        bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # never overwrite the last good checkpoint with a broken model
            raise TrainingError(
                f"Non-finite weights in {bad[:3]} at step {step}; the last good checkpoint: "
                f"{checkpoint_path if checkpoint_path.is_file() else 'none'}"
            )
        versions = {"vdsr": __version__, "torch": torch.__version__, "numpy": np.__version__}
        info = {
            "step": step,
            "config": asdict(config),
            "data": patches.key,
            "versions": versions,
            "wall_seconds": wall_before + time.monotonic() - start,
            "device": str(device),
        } | ranges.info()
        if budget is not None and total_steps != UNMEASURED:
            info["total_steps"] = total_steps
        save_checkpoint(
            checkpoint_path,
            Checkpoint(
                model.state_dict(),
                optimizer.state_dict(),
                torch.get_rng_state(),
                info,
                None if ema is None else ema.state_dict(),
            ),
        )
        keep_copy()

    def log(record: dict[str, object]) -> None:
        if not ranks.leader:
            return
        with log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    losses: list[float] = []
    window_start, window_steps = time.monotonic(), 0
    stopped = ""
    network = wrap(model, device, ranks)  # DDP with several ranks: their gradients averaged
    fetch = fetcher(patches, config, device=device, ranks=ranks)
    timed_from = start
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one batch shape throughout: the fastest kernels, chosen once
    model.train()

    def end() -> int | None:
        return None if total_steps == UNMEASURED else last_step

    on_progress(StepReport(step, total_steps, math.nan, 0.0, 0.0, end=end()))  # before the first step: the total
    with stop_on_signals() as received:
        while step < last_step:
            if budget is not None and total_steps == UNMEASURED and step - first_step in TIMED:
                if step - first_step == TIMED[0]:
                    timed_from = time.monotonic()
                else:  # every rank the slowest one's time, so that all lay out the same schedule
                    per_step = largest((time.monotonic() - timed_from) / (TIMED[1] - TIMED[0]), ranks, device)
                    left = budget - (wall_before + time.monotonic() - start)
                    total_steps = step + max(1, int(left / per_step * 0.95))  # the cosine ends as the budget does
                    last_step = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
                    log({"step": step, "total_steps": total_steps, "seconds_per_step": per_step})
            ranges.at(step)
            x, y = fetch(step)
            if guide is not None:  # distillation: (1 - W) x the HR patch + W x the teacher's output, in fp32
                with torch.no_grad():
                    y = torch.lerp(y, guide(x).float(), config.teacher_weight)
            lr = learning_rate(config, step, total_steps, per_epoch=per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                out = network(x)
            loss = compute_loss(config, out.float(), y, progress=step / total_steps)
            if not torch.isfinite(loss):
                last_good = checkpoint_path if checkpoint_path.is_file() else "none (none written yet)"
                raise TrainingError(
                    f"Non-finite loss ({loss.item()}) at step {step}; the last good checkpoint: {last_good}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            clip(config, model, lr)
            optimizer.step()
            if ema is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - config.ema)
            step += 1
            losses.append(loss.item())
            window_steps += 1
            validation = None
            if config.validate_every and step % config.validate_every == 0 and step < last_step and ranks.leader:
                try:
                    validation = validate(
                        ema or model,
                        config.architecture,
                        datasets=validation_sets,
                        scales=scales,
                        device=device,
                        degradations=degradations,
                    )
                except DatasetError as error:  # keep the steps done so far: the run can go on once the data is fixed
                    checkpoint()
                    raise TrainingError(f"validation at step {step} failed ({error}); checkpoint written") from error
                except BackendError:  # the device failed (out of memory, lost): keep the steps done so far too
                    checkpoint()
                    raise
                log({"step": step, "validation": [asdict(c) for c in validation]})
            rate = window_steps * config.batch_size / max(1e-9, time.monotonic() - window_start)
            report = StepReport(step, total_steps, float(np.mean(losses)), lr, rate, validation, end=end())
            logged = (config.log_every and step % config.log_every == 0) or validation is not None or step == last_step
            if logged:
                log({"step": step, "loss": report.loss, "lr": lr, "patches_per_second": rate, "bf16": config.bf16})
            on_progress(report)  # every step (the progress shows the current loss), the log every log_every steps
            if logged:
                losses, window_start, window_steps = [], time.monotonic(), 0
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint()
            out_of_time = max_minutes is not None and time.monotonic() - start > max_minutes * 60
            spent = budget is not None and wall_before + time.monotonic() - start > budget
            if budget is not None and any_rank(spent, ranks, device):  # the budget ends the schedule where it is
                total_steps = last_step = step
            if any_rank(bool(received) or out_of_time, ranks, device):  # every rank stops after the same step
                stopped = f"signal {received[0]}" if received else "time limit" if out_of_time else "another rank"
                break
        checkpoint()  # still under the signal guard: a SIGTERM now cannot cut it short
    stopped = stopped or ("finished" if last_step == total_steps else "max steps")
    weights_path = out_dir / f"{config.architecture}.safetensors"
    if step < last_step or not ranks.leader:  # rank 0 scores and writes the model
        weights = weights_path if step == last_step else None
        return TrainResult(steps=step, stopped=stopped, weights=weights, checkpoint=checkpoint_path)
    final_model = ema or model
    if averaged is not None:
        final_model.load_state_dict(
            average_checkpoints([kept_checkpoint(out_dir, s) for s in averaged], config, patches.key)
        )
    if blend_init is not None and start_state is not None:
        state = final_model.state_dict()
        final_model.load_state_dict({k: torch.lerp(start_state[k].to(v), v, blend_init) for k, v in state.items()})
    final = validate(
        final_model,
        config.architecture,
        datasets=final_sets or validation_sets,
        scales=scales,
        device=device,
        degradations=degradations,
    )
    on_progress(StepReport(step, total_steps, math.nan, 0.0, 0.0, final, end=end()))
    log({"step": step, "validation": [asdict(c) for c in final]})
    save_weights(weights_path, final_model, list(config.scales))
    count = patches.crops if isinstance(patches, DeviceBatches) else len(patches.hr)
    card = model_card(
        config,
        final_model,
        weights_path,
        steps=step,
        total_steps=total_steps,
        train_sets=train_sets,
        data=(patches.key, count),
        validation=final,
        wall_seconds=wall_before + time.monotonic() - start,
        device=device,
    )
    if averaged is not None:
        card["averaged_steps"] = averaged
    if blend_init is not None:
        card["blended_with_init"] = blend_init  # weights: (1 - this) * recipe.init_from + this * trained
    atomic_write_text(out_dir / f"{config.architecture}.json", json.dumps(card, indent=1) + "\n")
    return TrainResult(steps=step, stopped=stopped, weights=weights_path, checkpoint=checkpoint_path)
