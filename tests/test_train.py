"""Trainer: tiny models and synthetic patches, seconds each (spandrel/torchvision style)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vdsr.errors import TrainingError, UsageError
from vdsr.networks import SRCNN, VDSR, SRCNNConfig, VDSRConfig
from vdsr.runtime import machine
from vdsr.train.average import averaged_steps, kept_checkpoint
from vdsr.train.checkpoint import load_checkpoint, save_checkpoint
from vdsr.train.config import TrainConfig, bf16_supported, recipe
from vdsr.train.data import PatchSet, augment, batch_for_step, steps_per_epoch
from vdsr.train.loop import StepReport, train
from vdsr.train.schedule import clip_gradients, compute_loss, learning_rate
from vdsr.weights import count_parameters, load_weights, save_weights

TINY = {"depth": 3, "channels": 8}


def synthetic_patches(count: int = 64, size: int = 12, seed: int = 0) -> PatchSet:
    """HR patches with structure, and a blurred copy standing in for the bicubic ILR."""
    rng = np.random.default_rng(seed)
    hr = rng.random((count, size, size)).astype(np.float32)
    ilr = (hr + np.roll(hr, 1, 1) + np.roll(hr, 1, 2) + np.roll(hr, (1, 1), (1, 2))) / 4
    return PatchSet(ilr=ilr.astype(np.float32), hr=hr, scale=np.full(count, 2, np.int8), key=f"synthetic-{seed}")


def tiny_config(**overrides: object) -> TrainConfig:
    base = recipe(
        "fast",
        "vdsr",
        network=TINY,
        batch_size=8,
        epochs=4,
        warmup_epochs=0.5,
        bf16=False,
        channels_last=False,
        log_every=1,
        checkpoint_every=3,
        validate_every=10_000,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def run(config: TrainConfig, out: Path, patches: PatchSet | None = None, **kwargs: object) -> object:
    return train(config, patches or synthetic_patches(), out, device=torch.device("cpu"), **kwargs)  # type: ignore[arg-type]


def test_paper_sizes() -> None:
    assert count_parameters(VDSR(VDSRConfig(bias=True))) == 665_921
    assert count_parameters(VDSR(VDSRConfig(bias=False))) == 664_704
    assert VDSR().halo == 20 and SRCNN().halo == 8
    assert count_parameters(SRCNN()) == 64 * 81 + 64 + 32 * 64 * 25 + 32 + 32 * 25 + 1


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 17, 33), (3, 1, 64, 48), (2, 1, 5, 1), (1, 1, 1, 7)])
def test_any_shape_keeps_its_size(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape)
    for model in (VDSR(VDSRConfig(**TINY)), SRCNN(SRCNNConfig(kernels=(3, 1, 3), channels=(4, 4))), SRCNN()):
        assert model(x).shape == x.shape


def test_vdsr_is_residual_and_zero_net_returns_its_input() -> None:
    model = VDSR(VDSRConfig(**TINY))
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(1, 1, 9, 9)
    assert torch.equal(model(x), x)


def test_tiny_vdsr_overfits_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = VDSR(VDSRConfig(**TINY))
    patches = synthetic_patches(8, 16)
    x, y = torch.from_numpy(patches.ilr)[:, None], torch.from_numpy(patches.hr)[:, None]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    assert loss.item() < first / 10, (first, loss.item())


def test_adjustable_clipping_bounds_every_element() -> None:
    model = VDSR(VDSRConfig(**TINY))
    loss = model(torch.rand(2, 1, 10, 10) * 50).square().mean()
    loss.backward()  # type: ignore[no-untyped-call]
    theta, lr = 0.01, 0.1
    before = max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)
    assert before > theta / lr  # the test means something only if some elements were over the bound
    clip_gradients(model.parameters(), theta, lr)
    bound = float(np.float32(theta / lr))  # the clamp runs in float32
    assert max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None) <= bound


def test_augmentation_gives_eight_distinct_variants_and_keeps_pairs_aligned() -> None:
    patch = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    variants = augment(np.repeat(patch, 8, 0), np.arange(8))
    assert len({v.tobytes() for v in variants}) == 8
    assert np.array_equal(variants[1], np.rot90(patch[0]))
    assert np.array_equal(variants[4], patch[0, :, ::-1])
    patches = synthetic_patches()
    ilr, hr = batch_for_step(patches, 5, 8, seed=3)
    ilr_again, hr_again = batch_for_step(patches, 5, 8, seed=3)
    assert np.array_equal(ilr, ilr_again) and np.array_equal(hr, hr_again)  # a pure function of the step
    # the same transform on both: hr matches some variant of a stored hr whose ilr matches the same variant of ilr
    variants_hr = augment(np.repeat(patches.hr, 8, 0), np.tile(np.arange(8), len(patches.hr)))
    variants_ilr = augment(np.repeat(patches.ilr, 8, 0), np.tile(np.arange(8), len(patches.hr)))
    for a, b in zip(hr, ilr, strict=True):
        (match,) = np.flatnonzero((variants_hr == a).all(axis=(1, 2)))
        assert np.array_equal(variants_ilr[match], b)


def test_epoch_visits_every_patch_variant_once() -> None:
    patches = synthetic_patches(16)
    per_epoch = steps_per_epoch(patches, 8)
    assert per_epoch == 16 * 8 // 8
    seen = np.concatenate([batch_for_step(patches, s, 8, seed=1)[1] for s in range(per_epoch)])
    every_variant = augment(np.repeat(patches.hr, 8, 0), np.tile(np.arange(8), 16))
    assert sorted(p.tobytes() for p in seen) == sorted(p.tobytes() for p in every_variant)
    next_epoch = np.concatenate([batch_for_step(patches, s, 8, seed=1)[1] for s in range(per_epoch, 2 * per_epoch)])
    assert not np.array_equal(seen, next_epoch)  # a new order every epoch


@pytest.mark.parametrize(
    "config",
    [
        tiny_config(),  # AdamW, warm-up + cosine
        tiny_config(
            optimizer="sgd",
            lr=0.05,
            weight_decay=1e-4,
            clip_theta=0.01,
            schedule="step",
            lr_step_epochs=0.1,
            loss="half_sse",
            channels_last=True,
            zero_init_output=False,
        ),  # the paper's pieces
        tiny_config(qat="inner", channels_last=True),  # quantisation-aware: stateless rounding, resumed exactly
    ],
    ids=["fast", "paper", "qat"],
)
def test_resume_equals_straight_run(tmp_path: Path, config: TrainConfig) -> None:
    run(replace(config, max_steps=6), tmp_path / "a")
    run(replace(config, max_steps=12), tmp_path / "a", resume=True)
    run(replace(config, max_steps=12), tmp_path / "b")
    resumed = load_checkpoint(tmp_path / "a" / "checkpoint.safetensors")
    straight = load_checkpoint(tmp_path / "b" / "checkpoint.safetensors")
    assert resumed.info["step"] == straight.info["step"] == 12
    for name, tensor in straight.model.items():
        assert torch.allclose(resumed.model[name], tensor, rtol=0, atol=1e-6), name
    for name, tensor in straight.optimizer["state"][0].items():  # type: ignore[index]
        assert torch.allclose(resumed.optimizer["state"][0][name], tensor, rtol=0, atol=1e-6), name  # type: ignore[index]
    # the resumed run continued from step 6 rather than starting over: every step was trained (and logged) once
    records = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))


def test_resume_survives_a_log_line_cut_short_by_a_crash(tmp_path: Path) -> None:
    run(tiny_config(max_steps=3), tmp_path)
    with (tmp_path / "train_log.jsonl").open("a") as log:
        log.write('{"step": 4, "loss": 0.0')  # the process was killed mid-write
    run(tiny_config(max_steps=5), tmp_path, resume=True)
    records = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5]


def test_weights_that_do_not_match_their_metadata_name_the_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    deeper = {k: v.contiguous() for k, v in VDSR(VDSRConfig(depth=4, channels=8)).state_dict().items()}
    cases = {
        "tensors.safetensors": {"architecture": "vdsr", "config": json.dumps(TINY)},  # depth 3 declared, 4 stored
        "architecture.safetensors": {"architecture": "edsr"},
        "config.safetensors": {"architecture": "vdsr", "config": "{not json"},
    }
    for name, metadata in cases.items():
        save_file(deeper, str(tmp_path / name), metadata=metadata)
        with pytest.raises(ValueError, match=f"{name}: weights do not match their metadata"):
            load_weights(tmp_path / name)


def test_finished_run_writes_weights_and_card(tmp_path: Path) -> None:
    result = run(tiny_config(epochs=1), tmp_path)
    assert result.stopped == "finished" and result.weights == tmp_path / "vdsr.safetensors"  # type: ignore[attr-defined]
    model, scales = load_weights(tmp_path / "vdsr.safetensors")
    assert isinstance(model, VDSR) and model.config == VDSRConfig(**TINY) and scales == [2, 3, 4]
    card = json.loads((tmp_path / "vdsr.json").read_text())
    assert (
        card["steps"] == 64 and card["finished_schedule"] and card["halo"] == 3 and card["recipe"]["recipe"] == "fast"
    )
    from vdsr.files import sha256_file

    assert card["weights_sha256"] == sha256_file(tmp_path / "vdsr.safetensors")
    assert [json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()][:2] == [1, 2]


def test_tail_average_is_the_mean_of_the_kept_checkpoints_wherever_the_run_was_stopped(tmp_path: Path) -> None:
    assert averaged_steps(55, 64, 3) == [57, 60, 63, 64] and averaged_steps(64, 64, 3) == [64]
    for first, every in ((0, 3), (65, 3), (10, 0)):
        with pytest.raises(UsageError, match="average-from"):
            averaged_steps(first, 64, every)
    run(tiny_config(epochs=1), tmp_path / "a", average_from=55)
    kept = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert kept == [f"step-{s:07d}.safetensors" for s in [57, 60, 63, 64]]  # only those averaged
    card = json.loads((tmp_path / "a" / "vdsr.json").read_text())
    assert card["averaged_steps"] == [57, 60, 63, 64] and card["steps"] == 64
    averaged, _ = load_weights(tmp_path / "a" / "vdsr.safetensors")
    models = [load_checkpoint(kept_checkpoint(tmp_path / "a", s)).model for s in card["averaged_steps"]]
    for name, tensor in averaged.state_dict().items():
        assert torch.allclose(tensor, sum(m[name] for m in models) / 4, rtol=1e-5, atol=1e-7), name
        assert not torch.equal(tensor, models[-1][name]), name  # not the last step's alone

    def same_weights(folder: str) -> None:
        model, _ = load_weights(tmp_path / folder / "vdsr.safetensors")
        for name, tensor in averaged.state_dict().items():
            assert torch.allclose(model.state_dict()[name], tensor, rtol=1e-5, atol=1e-6), (folder, name)

    def stop_at(step: int) -> Callable[[StepReport], None]:
        return lambda progress: os.kill(os.getpid(), signal.SIGINT) if progress.step == step else None

    run(tiny_config(epochs=1), tmp_path / "b", average_from=55, on_progress=stop_at(58))
    assert not kept_checkpoint(tmp_path / "b", 58).is_file()  # a stop's checkpoint is not one of the schedule's
    run(tiny_config(epochs=1), tmp_path / "b", resume=True)  # without the option: still kept, the folder says so
    run(tiny_config(epochs=1), tmp_path / "b", average_from=55, resume=True)
    same_weights("b")
    # kept all along, averaged once the run has finished
    run(tiny_config(epochs=1), tmp_path / "c", keep_checkpoints=True)
    assert len(list((tmp_path / "c" / "checkpoints").iterdir())) == 22  # steps 3, 6, ... 63 and 64
    run(tiny_config(epochs=1), tmp_path / "c", average_from=55, resume=True)
    same_weights("c")
    assert json.loads((tmp_path / "c" / "vdsr.json").read_text())["averaged_steps"] == [57, 60, 63, 64]
    # the copy of a kept step lost between its checkpoint and the copy (a crash): made again from the checkpoint
    run(tiny_config(epochs=1), tmp_path / "d", average_from=55, on_progress=stop_at(60))
    kept_checkpoint(tmp_path / "d", 60).unlink()
    run(tiny_config(epochs=1), tmp_path / "d", average_from=55, resume=True)
    same_weights("d")


def test_tail_average_without_the_kept_checkpoints_is_refused_before_training(tmp_path: Path) -> None:
    run(tiny_config(epochs=1, max_steps=30), tmp_path)
    with pytest.raises(TrainingError, match=r"step-0000021.safetensors: missing.*average from a later step"):
        run(tiny_config(epochs=1), tmp_path, average_from=20, resume=True)
    assert load_checkpoint(tmp_path / "checkpoint.safetensors").info["step"] == 30
    run(tiny_config(epochs=1, max_steps=30), tmp_path / "b", keep_checkpoints=True)
    tampered = load_checkpoint(kept_checkpoint(tmp_path / "b", 24))
    save_checkpoint(kept_checkpoint(tmp_path / "b", 24), replace(tampered, info={**tampered.info, "data": "other"}))
    with pytest.raises(TrainingError, match=r"step-0000024.safetensors: a checkpoint of another config or data"):
        run(tiny_config(epochs=1), tmp_path / "b", average_from=20, resume=True)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.safetensors").info["step"] == 30


def test_existing_checkpoint_needs_resume_and_matching_config(tmp_path: Path) -> None:
    run(tiny_config(max_steps=3), tmp_path)
    with pytest.raises(TrainingError, match="pass --resume"):
        run(tiny_config(max_steps=3), tmp_path)
    with pytest.raises(TrainingError, match="another config"):
        run(tiny_config(max_steps=6, lr=1e-2), tmp_path, resume=True)


def test_signal_checkpoints_and_stops(tmp_path: Path) -> None:
    def interrupt(progress: StepReport) -> None:
        if progress.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    result = run(tiny_config(), tmp_path, on_progress=interrupt)
    assert result.stopped == "signal SIGINT" and result.steps == 2 and result.weights is None  # type: ignore[attr-defined]
    assert load_checkpoint(tmp_path / "checkpoint.safetensors").info["step"] == 2


def test_time_limit_checkpoints_and_stops(tmp_path: Path) -> None:
    result = run(tiny_config(), tmp_path, max_minutes=0)
    assert result.stopped == "time limit" and result.steps == 1  # type: ignore[attr-defined]
    assert load_checkpoint(tmp_path / "checkpoint.safetensors").info["step"] == 1


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run(tiny_config(max_steps=3), tmp_path)
    good = (tmp_path / "checkpoint.safetensors").read_bytes()
    broken = synthetic_patches()
    broken.hr[:] = np.nan
    with pytest.raises(TrainingError, match=r"Non-finite loss \(nan\) at step 3"):
        run(tiny_config(max_steps=6), tmp_path, patches=replace(broken, key="synthetic-0"), resume=True)
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == good


def test_paper_loss_is_half_sum_per_patch_and_makes_clipping_bite() -> None:
    out, target = torch.rand(4, 1, 41, 41), torch.rand(4, 1, 41, 41)
    expected = 0.5 * ((out - target) ** 2).sum() / 4
    assert compute_loss(recipe("paper"), out, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert compute_loss(recipe("fast"), out, target).item() == pytest.approx(((out - target) ** 2).mean().item())
    torch.manual_seed(0)
    model = VDSR(VDSRConfig(depth=5, channels=16))
    patches = synthetic_patches(4, 41)
    x, y = torch.from_numpy(patches.ilr)[:, None], torch.from_numpy(patches.hr)[:, None]
    compute_loss(recipe("paper"), model(x), y).backward()  # type: ignore[no-untyped-call]
    paper = recipe("paper")
    assert paper.clip_theta is not None
    largest = max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)
    assert largest > paper.clip_theta / paper.lr  # at lr 0.1 the clipping acts from the first step


def test_non_finite_weights_never_reach_a_checkpoint(tmp_path: Path) -> None:
    # lr * gradient overflows float32 in the first step, while that step's loss was still finite
    config = tiny_config(
        optimizer="sgd",
        lr=3e38,
        momentum=0.0,
        schedule="step",
        zero_init_output=False,
        loss="half_sse",
        checkpoint_every=1,
    )
    with pytest.raises(TrainingError, match="Non-finite weights .* at step 1; the last good checkpoint: none"):
        run(config, tmp_path)
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_schedules() -> None:
    paper = recipe("paper")
    assert paper.optimizer == "sgd" and paper.clip_theta == 0.01 and paper.lr == 0.1 and paper.epochs == 80
    per_epoch = 100
    assert learning_rate(paper, 0, 8000, per_epoch=per_epoch) == pytest.approx(0.1)
    assert learning_rate(paper, 1999, 8000, per_epoch=per_epoch) == pytest.approx(0.1)
    assert learning_rate(paper, 2000, 8000, per_epoch=per_epoch) == pytest.approx(0.01)
    assert learning_rate(paper, 7999, 8000, per_epoch=per_epoch) == pytest.approx(1e-4)
    fast = recipe("fast", epochs=10)
    assert fast.zero_init_output and not recipe("fast", "srcnn").zero_init_output  # only the residual model
    warmup = round(fast.warmup_epochs * per_epoch)
    assert warmup >= 2
    start, peak = (learning_rate(fast, step, 1000, per_epoch=per_epoch) for step in (0, warmup - 1))
    assert start < peak
    assert learning_rate(fast, warmup - 1, 1000, per_epoch=per_epoch) == pytest.approx(fast.lr)  # the peak, then cosine
    assert learning_rate(fast, warmup + 100, 1000, per_epoch=per_epoch) < fast.lr
    assert learning_rate(fast, 999, 1000, per_epoch=per_epoch) < fast.lr * 1e-4
    # a short fine-tune (a fraction of an epoch) warms up over a tenth of its steps at most, then decays
    short = recipe("fast", epochs=0.1)
    assert learning_rate(short, 49, 500, per_epoch=5000) == pytest.approx(short.lr)
    assert learning_rate(short, 0, 500, per_epoch=5000) == pytest.approx(short.lr / 50)
    assert learning_rate(short, 499, 500, per_epoch=5000) < short.lr * 1e-4


def test_a_backend_failure_while_validating_keeps_the_steps_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vdsr.errors import BackendError
    from vdsr.train import loop

    def device_lost(*args: object, **kwargs: object) -> None:
        raise BackendError("PyTorch failed on a batch of shape (1, 1, 20, 20): CUDA error: an illegal memory access")

    monkeypatch.setattr(loop, "validate", device_lost)
    with pytest.raises(BackendError, match="illegal memory access"):
        run(tiny_config(validate_every=2, checkpoint_every=0), tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.safetensors").info["step"] == 2


def test_parameter_shapes_are_the_models_own() -> None:
    from vdsr.architectures import parameter_shapes
    from vdsr.networks import build_model, model_config

    for model in (VDSR(), VDSR(VDSRConfig(depth=3, channels=8, bias=False)), SRCNN(), SRCNN(SRCNNConfig((9, 1, 5)))):
        name = "vdsr" if isinstance(model, VDSR) else "srcnn"
        assert parameter_shapes(model.config) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert build_model(name, model_config(model)).config == model.config


def test_weights_from_elsewhere_are_checked_before_anything_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 200-byte file claiming 3000 layers must not make the loader build (and allocate) a 3000-layer model."""
    from safetensors.torch import save_file

    from vdsr import weights
    from vdsr.errors import ModelError
    from vdsr.metadata import weights_metadata

    built: list[object] = []
    real_build = weights.network
    monkeypatch.setattr(weights, "network", lambda *args: built.append(args) or real_build(*args))
    claim = {"architecture": "vdsr", "config": json.dumps({"depth": 3000, "channels": 64}), "scales": "[2]"}
    save_file({"body.0.weight": torch.zeros(64, 1, 3, 3)}, str(tmp_path / "claims.safetensors"), metadata=claim)
    with pytest.raises(ModelError, match="claims.safetensors: weights do not match their metadata .*depth=3000"):
        load_weights(tmp_path / "claims.safetensors")
    model = VDSR(VDSRConfig(**TINY))
    with torch.no_grad():
        model.body[0].weight[0, 0, 0, 0] = float("nan")
    save_weights(tmp_path / "nan.safetensors", model, [2])
    with pytest.raises(ModelError, match=r"nan.safetensors: weights body.0.weight hold NaN or inf"):
        load_weights(tmp_path / "nan.safetensors")
    assert not built
    tensors = {k: v.double() for k, v in VDSR(VDSRConfig(**TINY)).state_dict().items()}
    tensors["body.0.weight"].view(-1)[0] = 1e300  # finite as F64, inf once cast to the model's fp32
    metadata = weights_metadata(VDSRConfig(**TINY), [2])
    save_file(tensors, str(tmp_path / "f64.safetensors"), metadata=metadata)
    with pytest.raises(ModelError, match=r"f64.safetensors: weights body.0.weight hold NaN or inf \(in fp32\)"):
        load_weights(tmp_path / "f64.safetensors")
    deep = metadata | {"config": "[" * 100_000 + "]" * 100_000}  # json.loads: RecursionError, not a ValueError
    save_file(tensors, str(tmp_path / "deep.safetensors"), metadata=deep)
    with pytest.raises(ModelError, match="deep.safetensors: weights do not match their metadata"):
        load_weights(tmp_path / "deep.safetensors")


def test_a_plain_resume_keeps_the_runs_own_step_limit(tmp_path: Path) -> None:
    """The README: a resumed run keeps its settings, only --max-steps may change; a plain --resume dropped it."""
    from vdsr.train.config import resume_config

    run(tiny_config(max_steps=3), tmp_path)
    assert resume_config(tmp_path / "checkpoint.safetensors", None).max_steps == 3
    assert resume_config(tmp_path / "checkpoint.safetensors", 5).max_steps == 5
    assert resume_config(tmp_path / "checkpoint.safetensors", 3).max_steps == 3  # where it stands: allowed
    with pytest.raises(UsageError, match=r"--max-steps 2: .*checkpoint.safetensors is at step 3 already"):
        resume_config(tmp_path / "checkpoint.safetensors", 2)  # found by review: was taken, and the card said 2


def rewrite_checkpoint(
    path: Path,
    *,
    info: dict[str, object] | None = None,
    optimizer: dict[str, object] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """The checkpoint at `path` with fields or tensors replaced, its checksum made to match (a crafted file)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from vdsr.train.checkpoint import tensors_digest

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
    stored = load_file(str(path)) | (tensors or {})
    metadata["info"] = json.dumps(json.loads(metadata["info"]) | (info or {}))
    metadata["optimizer"] = json.dumps(json.loads(metadata["optimizer"]) | (optimizer or {}))
    metadata["tensors_sha256"] = tensors_digest(stored)
    save_file(stored, str(path), metadata=metadata)


def test_crafted_or_damaged_checkpoints_get_one_line_errors(tmp_path: Path) -> None:
    """Crafted metadata gave tracebacks and flipped tensor bytes were trained on (weights up to 1e29, "PSNR nan")."""
    from vdsr.train.config import resume_config

    run(tiny_config(max_steps=2), tmp_path / "good")
    good = (tmp_path / "good" / "checkpoint.safetensors").read_bytes()
    saved = load_checkpoint(tmp_path / "good" / "checkpoint.safetensors")
    groups = saved.optimizer["param_groups"]
    assert isinstance(groups, list) and isinstance(saved.info["config"], dict)
    nan_weight = saved.model["body.0.weight"].clone()
    nan_weight[0, 0, 0, 0] = float("nan")
    cases: dict[str, tuple[dict[str, object], str]] = {
        "no_step": ({"info": {"step": None}}, "'step' is None, not a count"),
        "string_step": ({"info": {"step": "3"}}, "'step' is '3', not a count"),
        "batch_0": ({"info": {"config": saved.info["config"] | {"batch_size": 0}}}, "batch_size is 0, not an integer"),
        "deep": (
            {"info": {"config": saved.info["config"] | {"network": {"depth": 3000, "channels": 8}}}},
            "depth=3000",
        ),
        "betas": ({"optimizer": {"param_groups": [groups[0] | {"betas": [0.5, "x"]}]}}, "settings betas differ"),
        "state": ({"tensors": {"optimizer.0.exp_avg": torch.zeros(3)}}, "state 'exp_avg' is not a tensor of shape"),
        "index": ({"tensors": {"optimizer.99.exp_avg": torch.zeros(3)}}, "state for parameters \\[99\\] the model"),
        "nan": ({"tensors": {"model.body.0.weight": nan_weight}}, "tensors model.body.0.weight hold NaN or inf"),
        "whole": (
            {"tensors": {"model.body.0.weight": nan_weight.nan_to_num().long()}},
            "model.body.0.weight: wrong type or range",
        ),
        "step_back": ({"tensors": {"optimizer.0.step": torch.tensor(-5.0)}}, "optimizer.0.step: wrong type or range"),
        "past": ({"info": {"step": 10**7}}, "its step 10000000 is past the schedule's"),
        "huge": ({"info": {"wall_seconds": 10**400}}, "int too large to convert to float"),  # an OverflowError
    }
    for name, (changes, cause) in cases.items():
        path = tmp_path / name / "checkpoint.safetensors"
        path.parent.mkdir()
        path.write_bytes(good)
        rewrite_checkpoint(path, **changes)  # type: ignore[arg-type]
        with pytest.raises(TrainingError, match=f"{name}/checkpoint.safetensors: .*{cause}") as error:
            run(resume_config(path, None), path.parent, resume=True)
        assert "\n" not in str(error.value), name
    flipped = bytearray(good)
    flipped[-5] ^= 0x40  # inside the last tensor's data: an exponent bit
    (tmp_path / "flipped").mkdir()
    (tmp_path / "flipped" / "checkpoint.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(TrainingError, match="flipped/checkpoint.safetensors: .*do not match their checksum"):
        resume_config(tmp_path / "flipped" / "checkpoint.safetensors", None)
    from safetensors.torch import load_file, save_file

    unchecked = tmp_path / "unchecked.safetensors"  # as written before checkpoints carried a checksum
    metadata = {
        k: v
        for k, v in json.loads(good[8 : 8 + int.from_bytes(good[:8], "little")])["__metadata__"].items()
        if k != "tensors_sha256"
    }
    save_file(load_file(str(tmp_path / "good" / "checkpoint.safetensors")), str(unchecked), metadata=metadata)
    with pytest.raises(TrainingError, match="unchecked.safetensors: the checkpoint has no checksum of its tensors"):
        resume_config(unchecked, None)


def test_a_config_out_of_range_is_refused_wherever_it_comes_from() -> None:
    for field, value in [
        ("batch_size", 0),
        ("lr", -1.0),
        ("scales", ()),
        ("optimizer", "adam"),
        ("bf16", "yes"),
        ("epochs", float("nan")),
        ("max_steps", -1),
        ("scales", (2, True)),
        ("epochs", 1e308),  # finite, but no count of steps
        ("patch_size", 4),
    ]:
        with pytest.raises(ValueError, match=f"training config: {field} is"):
            tiny_config(**{field: value})
    with pytest.raises(ValueError, match="stride 10 is under a quarter of patch_size 41: 17x the memory"):
        tiny_config(stride=10)  # (41 / 10)^2 times the patches of a non-overlapping grid
    tiny_config(stride=11)


def test_bf16_is_the_default_only_where_it_is_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured: AMX and AMD's AVX-512-BF16 train bf16 2-4x faster than fp32; Intel's AVX-512-BF16 alone slower."""
    cpu = torch.device("cpu")
    cases = [
        ("GenuineIntel", "amx_bf16 avx512_bf16", True),
        ("AuthenticAMD", "avx512_bf16 avx512f", True),
        ("GenuineIntel", "avx512_bf16 avx512f", False),
        ("AuthenticAMD", "avx2", False),
    ]
    for vendor, flags, expected in cases:
        info = f"vendor_id\t: {vendor}\nflags\t\t: {flags}\n"
        monkeypatch.setattr(machine, "_cpuinfo", lambda info=info: info)
        assert bf16_supported(cpu) is expected, (vendor, flags)
