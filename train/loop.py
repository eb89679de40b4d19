"""One training loop for both recipes: the paper's (SGD + adjustable gradient clipping) and a fast one (AdamW, cosine).

Outputs in the run folder: checkpoint.safetensors (resumable), <model>.safetensors (weights), <model>.json (model
card) and train_log.jsonl. Every write is atomic; a resumed run continues exactly where the checkpoint left it.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType

import numpy as np
import torch

from vdsr import __version__
from vdsr.bench.datasets import Dataset, sha256_file
from vdsr.bench.harness import CellResult
from vdsr.runtime.atomic import atomic_write_text
from vdsr.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from vdsr.train.data import PatchSet, batch_for_step, steps_per_epoch
from vdsr.train.evaluate import validate
from vdsr.train.models import build_model, model_config
from vdsr.train.weights import count_parameters, save_weights


@dataclass(frozen=True)
class TrainConfig:
    model: str = "vdsr"  # "vdsr" or "srcnn"
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


def recipe(name: str, model: str = "vdsr", **overrides: object) -> TrainConfig:
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
        base = TrainConfig(model=model, recipe="fast", bf16=True, zero_init_output=model == "vdsr", lr=3e-4)
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
    return replace(TrainConfig(**fields), **overrides)  # type: ignore[arg-type]


def resume_config(checkpoint_path: Path, max_steps: int | None) -> TrainConfig:
    """The config a checkpoint was trained with; only max_steps may change when resuming."""
    try:
        info = load_checkpoint(checkpoint_path).info
    except ValueError as error:
        raise TrainingError(str(error)) from error
    try:
        return config_from_json(info["config"], max_steps=max_steps)  # type: ignore[arg-type]
    except TrainingError as error:
        raise TrainingError(f"{checkpoint_path}: {error}") from error


def learning_rate(config: TrainConfig, step: int, total_steps: int, per_epoch: int) -> float:
    """The learning rate at `step`, a pure function of the config (nothing to save for resuming)."""
    if config.schedule == "step":
        return config.lr * 0.1 ** (step // max(1, round(config.lr_step_epochs * per_epoch)))
    if config.schedule == "cosine":
        warmup = max(1, round(config.warmup_epochs * per_epoch))
        if step < warmup:
            return config.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"Unknown schedule {config.schedule!r}; expected 'step' or 'cosine'")


def clip_gradients(parameters: Iterator[torch.nn.Parameter], theta: float, lr: float) -> None:
    """Adjustable gradient clipping (Kim et al. 2016): each gradient element into [-theta / lr, theta / lr]."""
    bound = theta / lr
    for p in parameters:
        if p.grad is not None:
            p.grad.clamp_(-bound, bound)


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    loss: float  # mean over the steps since the last report
    lr: float
    patches_per_second: float
    validation: list[CellResult] | None = None  # set on validation steps


@dataclass(frozen=True)
class TrainResult:
    steps: int
    stopped: str  # "finished", "time limit", "max steps" or "signal SIGINT/SIGTERM"
    weights: Path | None  # written when the schedule finished or max_steps was reached
    checkpoint: Path


class TrainingError(RuntimeError):
    pass


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


def logged_step(line: str) -> float:
    """The step of a train_log.jsonl line; a line cut short by a crash counts as after every checkpoint."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def dataset_digest(dataset: Dataset) -> str:
    """One hash over the files' names and SHA-256s: the exact images a model was trained on."""
    hashes = sorted((path.name, sha256_file(path)) for path in dataset.files)
    return hashlib.sha256(json.dumps(hashes).encode()).hexdigest()


def compute_loss(config: TrainConfig, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if config.loss == "mse":
        return torch.nn.functional.mse_loss(out, target)
    if config.loss == "l1":
        return torch.nn.functional.l1_loss(out, target)
    if config.loss == "half_sse":
        return 0.5 * (out - target).square().sum(dim=(1, 2, 3)).mean()
    raise ValueError(f"Unknown loss {config.loss!r}; expected 'mse', 'l1' or 'half_sse'")


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 arithmetic is native here: CUDA GPUs that say so, CPUs with AVX-512-BF16 or AMX-BF16."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)  # fmt: skip
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; expected 'sgd' or 'adamw'")


def train(
    config: TrainConfig,
    patches: PatchSet,
    train_sets: list[Dataset],
    validation_sets: list[Dataset],
    out_dir: Path,
    device: torch.device,
    resume: bool = False,
    max_minutes: float | None = None,
    on_progress: Callable[[Progress], None] = lambda p: None,
    final_sets: list[Dataset] | None = None,
) -> TrainResult:
    """Train `config.model` on `patches`; checkpoints in `out_dir`. Every validate_every steps the model is scored
    on `validation_sets` (full images, the bench protocol), at the end on `final_sets` (default: the same)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "checkpoint.safetensors"
    log_path = out_dir / "train_log.jsonl"
    try:
        per_epoch = steps_per_epoch(patches, config.batch_size)
    except ValueError as error:
        raise TrainingError(str(error)) from error
    total_steps = max(1, round(config.epochs * per_epoch))
    last_step = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
    torch.manual_seed(config.seed)
    model = build_model(config.model, config.model_config).to(device)
    if config.zero_init_output:
        last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        torch.nn.init.zeros_(last.weight)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    optimizer = make_optimizer(config, model)
    step, wall_before = 0, 0.0
    if resume and checkpoint_path.is_file():
        try:
            saved = load_checkpoint(checkpoint_path)
        except ValueError as error:
            raise TrainingError(str(error)) from error
        saved_config = config_from_json(saved.info["config"], max_steps=config.max_steps)  # type: ignore[arg-type]
        if saved_config != config or saved.info["data"] != patches.key:
            raise TrainingError(f"{checkpoint_path} was written with another config or data; use another --output")
        model.load_state_dict(saved.model)
        optimizer.load_state_dict(saved.optimizer)
        torch.set_rng_state(saved.rng)
        saved_step, saved_wall = saved.info["step"], saved.info["wall_seconds"]
        assert isinstance(saved_step, int) and isinstance(saved_wall, float)
        step, wall_before = saved_step, saved_wall
        if log_path.is_file():  # drop what was logged after the checkpoint: those steps run again
            kept = [line for line in log_path.read_text().splitlines() if logged_step(line) <= step]
            atomic_write_text(log_path, "".join(f"{line}\n" for line in kept))
    elif checkpoint_path.is_file():
        raise TrainingError(f"{checkpoint_path} exists: pass --resume to continue it, or choose another --output")

    start = time.monotonic()

    def checkpoint() -> None:
        bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # never overwrite the last good checkpoint with a broken model
            raise TrainingError(f"Non-finite weights in {bad[:3]} at step {step}; the last good checkpoint: "
                                f"{checkpoint_path if checkpoint_path.is_file() else 'none'}")  # fmt: skip
        versions = {"vdsr": __version__, "torch": torch.__version__, "numpy": np.__version__}
        info = {"step": step, "config": asdict(config), "data": patches.key, "versions": versions,
                "wall_seconds": wall_before + time.monotonic() - start, "device": str(device)}  # fmt: skip
        save_checkpoint(checkpoint_path, Checkpoint(model.state_dict(), optimizer.state_dict(),
                                                    torch.get_rng_state(), info))  # fmt: skip

    def log(record: dict[str, object]) -> None:
        with log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    losses: list[float] = []
    window_start, window_steps = time.monotonic(), 0
    stopped = "finished" if last_step == total_steps else "max steps"
    model.train()
    with stop_on_signals() as received:
        while step < last_step:
            ilr, hr = batch_for_step(patches, step, config.batch_size, config.seed)
            x = torch.from_numpy(ilr)[:, None].to(device, memory_format=memory_format)
            y = torch.from_numpy(hr)[:, None].to(device, memory_format=memory_format)
            lr = learning_rate(config, step, total_steps, per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                out = model(x)
            loss = compute_loss(config, out.float(), y)
            if not torch.isfinite(loss):
                last_good = checkpoint_path if checkpoint_path.is_file() else "none (none written yet)"
                raise TrainingError(
                    f"Non-finite loss ({loss.item()}) at step {step}; the last good checkpoint: {last_good}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if config.clip_theta is not None:
                clip_gradients(model.parameters(), config.clip_theta, lr)
            optimizer.step()
            step += 1
            losses.append(loss.item())
            window_steps += 1
            validation = None
            if config.validate_every and step % config.validate_every == 0 and step < last_step:
                try:
                    validation = validate(model, config.model, validation_sets, config.scales, device)
                except ValueError as error:  # keep the steps done so far: the run can go on once the data is fixed
                    checkpoint()
                    raise TrainingError(f"validation at step {step} failed ({error}); checkpoint written") from error
                log({"step": step, "validation": [asdict(c) for c in validation]})
            if (config.log_every and step % config.log_every == 0) or validation is not None or step == last_step:
                rate = window_steps * config.batch_size / max(1e-9, time.monotonic() - window_start)
                report = Progress(step, total_steps, float(np.mean(losses)), lr, rate, validation)
                log({"step": step, "loss": report.loss, "lr": lr, "patches_per_second": rate})
                on_progress(report)
                losses, window_start, window_steps = [], time.monotonic(), 0
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint()
            if received:
                stopped = f"signal {received[0]}"
                break
            if max_minutes is not None and time.monotonic() - start > max_minutes * 60:
                stopped = "time limit"
                break
        checkpoint()  # still under the signal guard: a SIGTERM now cannot cut it short
    if step < last_step:
        return TrainResult(steps=step, stopped=stopped, weights=None, checkpoint=checkpoint_path)

    final = validate(model, config.model, final_sets or validation_sets, config.scales, device)
    on_progress(Progress(step, total_steps, float("nan"), 0.0, 0.0, final))
    log({"step": step, "validation": [asdict(c) for c in final]})
    weights_path = out_dir / f"{config.model}.safetensors"
    save_weights(weights_path, model, list(config.scales))
    card = {
        "architecture": config.model,
        "config": model_config(model),
        "parameters": count_parameters(model),
        "halo": model.halo,
        "scales": list(config.scales),
        "input": "ILR luminance: BT.601 studio-range Y in [0, 1], MATLAB-bicubic upscaled; output the same",
        "weights": weights_path.name,
        "recipe": asdict(config),
        "steps": step,
        "finished_schedule": step == total_steps,
        "wall_seconds": round(wall_before + time.monotonic() - start, 1),
        "device": str(device),
        "torch": torch.__version__,
        "weights_sha256": sha256_file(weights_path),
        "training_data": {d.name: {"files": len(d.files), "sha256": dataset_digest(d)} for d in train_sets},
        "patches": {"key": patches.key, "count": len(patches.hr)},
        "validation": [asdict(c) for c in final],
    }
    atomic_write_text(out_dir / f"{config.model}.json", json.dumps(card, indent=1) + "\n")
    return TrainResult(steps=step, stopped=stopped, weights=weights_path, checkpoint=checkpoint_path)
