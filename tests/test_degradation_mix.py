"""The trainer's degradation mix (scales between integers, JPEG and noise per draw), fine-tuning from weights and
distilling from a teacher."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vdsr.bench.datasets import Dataset
from vdsr.bench.protocol import Degradation, degrade
from vdsr.errors import TrainingError
from vdsr.networks import VDSR, VDSRConfig
from vdsr.train.card import weights_id
from vdsr.train.checkpoint import load_checkpoint
from vdsr.train.cli import app as train_app
from vdsr.train.cli import scale_weights
from vdsr.train.config import TrainConfig, config_from_json, recipe
from vdsr.train.data import Mix, PatchSet, build_patches, image_draws, patch_key
from vdsr.train.loop import train
from vdsr.weights import load_weights, save_weights

TINY = {"depth": 3, "channels": 8}
QUARTERS = tuple(q / 4 for q in range(6, 17))  # 1.5 .. 4
runner = CliRunner()


def test_noise_then_jpeg_is_one_repeatable_small_image() -> None:
    rng = np.random.default_rng(0)
    color = (np.cumsum(rng.integers(-6, 7, (45, 50, 3)), axis=1) % 256 / 255).astype(np.float32)
    chain = (Degradation("noise", 5), Degradation("jpeg", 60))
    both = degrade(color, 2.5, chain, seed=3)
    assert both.lr_y.shape == (18, 20) and both.hr_y.shape == (45, 50)  # cropped to a multiple of 5: LR is whole
    assert np.array_equal(both.lr_y, degrade(color, 2.5, chain, seed=3).lr_y)
    assert not np.array_equal(both.lr_y, degrade(color, 2.5, chain, seed=4).lr_y)
    assert not np.array_equal(both.lr_y, degrade(color, 2.5, chain[1:], seed=3).lr_y)  # the noise was applied
    assert not np.array_equal(both.lr_y, degrade(color, 2.5, chain[:1], seed=3).lr_y)  # and then the JPEG
    # one step given as a chain is that step
    assert np.array_equal(degrade(color, 2.5, chain[:1], seed=3).lr_y, degrade(color, 2.5, chain[0], seed=3).lr_y)


def test_the_plain_mix_is_the_papers_set() -> None:
    draws = image_draws(Mix(scales=(2, 3, 4)), 7)
    assert [(d.scale, d.degradations) for d in draws] == [(2, ()), (3, ()), (4, ())]


def test_draws_are_seeded_per_image_and_follow_the_probabilities() -> None:
    mix = Mix(
        scales=QUARTERS,
        draws=4,
        jpeg_probability=0.5,
        jpeg_quality=(30, 95),
        noise_probability=0.25,
        noise_sigma=(0.0, 8.0),
        seed=1,
    )
    assert image_draws(mix, 3) == image_draws(mix, 3) and image_draws(mix, 3) != image_draws(mix, 4)
    assert image_draws(mix, 3) != image_draws(replace(mix, seed=2), 3)
    draws = [d for i in range(500) for d in image_draws(mix, i)]
    assert len(draws) == 2000 and {d.scale for d in draws} == set(QUARTERS)
    kinds = Counter(step.kind for d in draws for step in d.degradations)
    assert abs(kinds["jpeg"] / 2000 - 0.5) < 0.05 and abs(kinds["noise"] / 2000 - 0.25) < 0.05
    for d in draws:
        assert [s.kind for s in d.degradations] in ([], ["jpeg"], ["noise"], ["noise", "jpeg"])  # noise first
        assert all(30 <= s.amount <= 95 for s in d.degradations if s.kind == "jpeg")
        assert all(0 <= s.amount <= 8 for s in d.degradations if s.kind == "noise")
    # one setting never shifts another's draws: the scales drawn do not depend on the JPEG probability
    assert [d.scale for d in image_draws(replace(mix, jpeg_probability=0.9), 5)] == [
        d.scale for d in image_draws(mix, 5)
    ]


def test_scale_weights_tilt_the_draws_and_the_cache_key(tmp_path: Path) -> None:
    mix = Mix(scales=(1.5, 2, 3), draws=4, seed=1)
    heavy = replace(mix, scale_weights=(0.2, 1.0, 3.0))
    counts = Counter(d.scale for i in range(1000) for d in image_draws(heavy, i))
    for scale, share in ((1.5, 0.2 / 4.2), (2, 1 / 4.2), (3, 3 / 4.2)):
        assert abs(counts[scale] / 4000 - share) < 0.03, (scale, counts)
    assert abs(Counter(d.scale for i in range(1000) for d in image_draws(mix, i))[1.5] / 4000 - 1 / 3) < 0.03
    files = [tmp_path / "a.png"]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(files[0])
    keys = {patch_key(files, m, 41, stride=41) for m in (mix, heavy, replace(heavy, scale_weights=(1.0, 1.0, 2.0)))}
    assert len(keys) == 3
    # an unweighted mix draws and keys its patch set as before weights existed (the values of commit ea2bbd0)
    assert patch_key(files, mix, 41, stride=41) == "23d483b0e38ba8d11baa"
    assert [d.scale for d in image_draws(mix, 3)] == [2, 3, 3, 2]
    for bad, message in [
        ((1.0,), "one number > 0 for each"),
        ((0.0, 1.0, 1.0), "one number > 0 for each"),
        ((float("nan"), 1.0, 1.0), "one number > 0 for each"),
    ]:
        with pytest.raises(ValueError, match=message):
            recipe("fast", scales=(1.5, 2, 3), draws_per_image=2, scale_weights=bad)
    assert scale_weights(["1.5=2", "2=2", "3=2"], (1.5, 2, 3)) == () and scale_weights(["2=2"], (2, 3)) == (2.0, 1.0)
    with pytest.raises(ValueError, match="need draws_per_image > 0"):
        recipe("fast", scales=(1.5, 2, 3), scale_weights=(1.0, 2.0, 1.0))


def tiny_dataset(folder: Path) -> Dataset:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n in range(3):
        pixels = (np.cumsum(rng.integers(-9, 10, (60, 70, 3)), axis=0) % 256).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{n}.png")
    return Dataset("tiny", tuple(sorted(folder.glob("*.png"))), verified=False)


def test_a_cached_patch_set_is_reused_only_for_the_same_settings(tmp_path: Path) -> None:
    data, cache = tiny_dataset(tmp_path / "tiny"), tmp_path / "cache"
    mix = Mix(scales=QUARTERS, draws=2, jpeg_probability=0.5, noise_probability=0.5, seed=0)
    first = build_patches([data], mix, 12, stride=12, cache_dir=cache)
    assert len(first.hr) > 0 and set(np.unique(first.scale)) <= set(QUARTERS)
    marker = cache / f"patches-{first.key}" / "done.json"
    marker.write_text(marker.read_text().replace('"images": 3', '"images": 3, "seen": 1'))  # to tell a rebuild
    again = build_patches([data], mix, 12, stride=12, cache_dir=cache)
    assert again.key == first.key and np.array_equal(again.ilr, first.ilr) and '"seen"' in marker.read_text()
    keys = {first.key}
    for other in (
        replace(mix, jpeg_probability=0.6),
        replace(mix, noise_sigma=(0.0, 4.0)),
        replace(mix, seed=1),
        replace(mix, draws=3),
        replace(mix, jpeg_quality=(50, 95)),
        Mix(scales=(2, 3)),
    ):
        built = build_patches([data], other, 12, stride=12, cache_dir=cache)
        assert built.key not in keys
        keys.add(built.key)
    assert len(list(cache.glob("patches-*"))) == 7
    # the same settings, another process: the same patches, bit for bit (no hidden global randomness)
    fresh = build_patches([data], mix, 12, stride=12, cache_dir=tmp_path / "other")
    assert fresh.key == first.key and np.array_equal(fresh.ilr, first.ilr) and np.array_equal(fresh.hr, first.hr)


def test_a_damaged_patch_cache_is_built_again_not_a_traceback(tmp_path: Path) -> None:
    """Found by review: a cut-short hr.npy under a done.json was memory-mapped as is (ValueError traceback, every
    later run too). A cache whose arrays are not what done.json says is built again, the same patches."""
    data, cache = tiny_dataset(tmp_path / "tiny"), tmp_path / "cache"
    first = build_patches([data], Mix(scales=(2,)), 12, stride=12, cache_dir=cache)
    hr_expected, ilr_expected = np.array(first.hr), np.array(first.ilr)
    folder = cache / f"patches-{first.key}"
    del first
    for damage in (
        lambda: (folder / "hr.npy").write_bytes((folder / "hr.npy").read_bytes()[:-100]),  # cut short
        lambda: (folder / "ilr.npy").write_bytes(b""),
        lambda: (folder / "scale.npy").unlink(),
        lambda: np.save(folder / "scale.npy", np.zeros(3, np.float32)),  # another count than done.json's
        lambda: (folder / "done.json").write_text("{"),
    ):
        damage()
        again = build_patches([data], Mix(scales=(2,)), 12, stride=12, cache_dir=cache)
        assert np.array_equal(again.hr, hr_expected) and np.array_equal(again.ilr, ilr_expected)
        del again


def test_mix_settings_are_checked_and_old_configs_read_as_the_paper_mix() -> None:
    for field, value in [
        ("jpeg_probability", 1.5),
        ("noise_probability", -0.1),
        ("jpeg_quality", (90, 30)),
        ("jpeg_quality", (0, 95)),
        ("noise_sigma", (0.0, 99.0)),
        ("draws_per_image", -1),
        ("scales", (1.3,)),
        ("scales", (1.0,)),
        ("validate_scales", (9,)),
        ("validate_degradations", ("blur:2",)),
        ("validate_degradations", ()),
        ("validate_degradations", ("jpeg:inf",)),
        ("jpeg_probability", "half"),
        ("noise_probability", None),
    ]:
        with pytest.raises(ValueError, match=f"training config: {field} is"):
            recipe("fast", **{field: value})
    new_fields = (
        "draws_per_image",
        "jpeg_probability",
        "jpeg_quality",
        "noise_probability",
        "noise_sigma",
        "init_from",
        "validate_scales",
        "validate_degradations",
    )
    saved = {k: v for k, v in json.loads(json.dumps(recipe("fast").__dict__)).items() if k not in new_fields}
    old = config_from_json(saved)
    assert old.mix() == Mix(scales=(2, 3, 4)) and old.validation_cells()[1][0].kind == "bicubic"
    assert old.init_from is None


def tiny_weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_weights(path, VDSR(VDSRConfig(**TINY)), [2, 3, 4])
    return path


def fine_tuning(tmp_path: Path, *, max_steps: int, lr: float) -> tuple[Path, PatchSet, TrainConfig]:
    """Tiny start weights, a patch set of tiny images, and a config that fine-tunes from those weights."""
    start = tiny_weights(tmp_path / "start.safetensors", seed=5)
    patches = build_patches(
        [tiny_dataset(tmp_path / "tiny")], Mix(scales=(2,)), 12, stride=12, cache_dir=tmp_path / "cache"
    )
    config = recipe(
        "fast",
        network=TINY,
        batch_size=4,
        epochs=1,
        max_steps=max_steps,
        lr=lr,
        bf16=False,
        validate_every=0,
        init_from=weights_id(start),
    )
    return start, patches, config


def test_fine_tuning_starts_from_the_weights_it_names(tmp_path: Path) -> None:
    start, patches, config = fine_tuning(tmp_path, max_steps=1, lr=1e-12)
    train(config, patches, tmp_path / "run", device=torch.device("cpu"), init=start)
    tuned, _ = load_weights(tmp_path / "run" / "vdsr.safetensors")
    reference, _ = load_weights(start)
    for (name, a), b in zip(tuned.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name  # one step at lr 1e-12: still the weights it started from
    card = json.loads((tmp_path / "run" / "vdsr.json").read_text())
    assert card["recipe"]["init_from"] == weights_id(start) and "sha256:" in card["recipe"]["init_from"]
    other = tiny_weights(tmp_path / "other.safetensors", seed=6)
    with pytest.raises(TrainingError, match="This run starts from start.safetensors sha256:"):
        train(config, patches, tmp_path / "run2", device=torch.device("cpu"), init=other)
    wide = tmp_path / "wide.safetensors"
    save_weights(wide, VDSR(VDSRConfig(depth=3, channels=16)), [2])
    with pytest.raises(TrainingError, match="not the vdsr"):
        train(
            replace(config, init_from=weights_id(wide)),
            patches,
            tmp_path / "run3",
            device=torch.device("cpu"),
            init=wide,
        )


def test_blend_init_mixes_the_trained_weights_with_those_the_run_started_from(tmp_path: Path) -> None:
    start, patches, config = fine_tuning(tmp_path, max_steps=3, lr=1e-2)
    cpu, run = torch.device("cpu"), tmp_path / "run"
    train(config, patches, run, device=cpu, init=start)
    trained = load_checkpoint(run / "checkpoint.safetensors").model
    with pytest.raises(TrainingError, match="This run starts from start.safetensors"):  # the weights to blend with
        train(config, patches, run, device=cpu, resume=True, blend_init=0.25)
    train(config, patches, run, device=cpu, init=start, resume=True, blend_init=0.25)  # the finished run, blended
    blended, _ = load_weights(run / "vdsr.safetensors")
    reference, _ = load_weights(start)
    for name, value in blended.state_dict().items():
        expected = 0.75 * reference.state_dict()[name] + 0.25 * trained[name]
        assert torch.allclose(value, expected, rtol=1e-5, atol=1e-7), name
        assert not torch.allclose(value, trained[name], rtol=1e-5, atol=1e-7), name
    assert json.loads((run / "vdsr.json").read_text())["blended_with_init"] == 0.25


def logged_loss(run: Path, step: int) -> float:
    lines = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return next(line["loss"] for line in lines if line["step"] == step and "loss" in line)


def test_a_distilling_run_moves_its_targets_toward_the_teachers_outputs(tmp_path: Path) -> None:
    start, patches, config = fine_tuning(tmp_path, max_steps=1, lr=1e-12)
    cpu = torch.device("cpu")
    train(config, patches, tmp_path / "plain", device=cpu, init=start)
    plain = logged_loss(tmp_path / "plain", 1)  # the first step: the start weights against the HR patches
    assert plain > 1e-5
    for weight, expected in ((1.0, 0.0), (0.5, 0.25 * plain)):  # the teacher is the start: its error, scaled
        distilling = replace(config, teacher=weights_id(start), teacher_weight=weight)
        run = tmp_path / f"teacher{weight}"
        train(distilling, patches, run, device=cpu, init=start, teacher=start)
        assert logged_loss(run, 1) == pytest.approx(expected, rel=1e-4, abs=1e-9), weight
        assert json.loads((run / "vdsr.json").read_text())["recipe"]["teacher"] == weights_id(start)
    rounded = replace(config, teacher=weights_id(start), teacher_weight=1.0, qat="every")  # the student alone rounds
    train(rounded, patches, tmp_path / "qat", device=cpu, init=start, teacher=start)
    assert logged_loss(tmp_path / "qat", 1) > 1e-9  # a fake-quantised teacher would round alike: loss 0
    other = tiny_weights(tmp_path / "other.safetensors", seed=6)
    distilling = replace(config, teacher=weights_id(other), teacher_weight=0.5)
    train(distilling, patches, tmp_path / "other", device=cpu, init=start, teacher=other)
    assert logged_loss(tmp_path / "other", 1) not in (pytest.approx(plain, rel=1e-3), pytest.approx(0.25 * plain))
    with pytest.raises(TrainingError, match="This run distils from other.safetensors sha256:"):
        train(distilling, patches, tmp_path / "wrong", device=cpu, init=start, teacher=start)
    with pytest.raises(ValueError, match="teacher and teacher_weight go together"):
        replace(config, teacher_weight=0.5)
    with pytest.raises(ValueError, match="teacher and teacher_weight go together"):
        replace(config, teacher=weights_id(other))


def test_the_cli_asks_a_resumed_distilling_run_for_its_teacher(data_dir: Path, tmp_path: Path) -> None:
    start, patches, config = fine_tuning(tmp_path, max_steps=1, lr=1e-12)
    run = tmp_path / "run"
    distilling = replace(config, teacher=weights_id(start), teacher_weight=0.5, max_steps=None)
    stopped = train(distilling, patches, run, device=torch.device("cpu"), init=start, teacher=start, max_minutes=0)
    assert stopped.weights is None and stopped.steps == 1  # stopped after its first step, to be resumed
    base = ["--output", str(run), "--data-dir", str(data_dir), "--device", "cpu", "--resume", "--init", str(start)]
    other = tiny_weights(tmp_path / "other.safetensors", seed=6)
    for extra, message in [
        ([], "--resume: this run distils from start.safetensors sha256:"),
        (["--teacher", str(other)], "--teacher " + str(other) + " is not the weights this run distils from"),
        (["--teacher", str(tmp_path / "missing.safetensors")], "--teacher " + str(tmp_path / "missing")),
    ]:
        result = runner.invoke(train_app, [*base, *extra])
        assert result.exit_code == 2 and message in " ".join(result.stderr.split()), (extra, result.output)
    result = runner.invoke(train_app, ["--output", str(tmp_path / "new"), "--teacher-weight", "0.5"])
    assert result.exit_code == 2 and "teacher and teacher_weight go together" in " ".join(result.stderr.split())


def test_the_cli_takes_a_scale_range_and_refuses_bad_mixes(data_dir: Path, tmp_path: Path) -> None:
    start = tiny_weights(tmp_path / "start.safetensors", seed=0)
    base = ["--output", str(tmp_path / "run"), "--data-dir", str(data_dir), "--device", "cpu"]
    for extra, message in [
        (["--scale", "1.5-4", "--scale", "2"], "a range (1.5-4) is the only scale"),
        (["--jpeg-quality", "95-30"], "jpeg_quality is (95, 30)"),
        (["--jpeg-quality", "high"], "--jpeg-quality: expected a range"),
        (["--noise-probability", "2"], "noise_probability is 2.0"),
        (["--init", str(tmp_path / "missing.safetensors")], "--init"),
        (["--validate-degradation", "blur"], "validate_degradations"),
        (["--scale-weight", "5=1"], "x5 is not one of the training scales"),
        (["--scale-weight", "2=heavy"], "expected SCALE=WEIGHT"),
        (["--scale-weight", "1.5,2=0.4"], "expected SCALE=WEIGHT"),
        (["--scale-weight", "2=1", "--scale-weight", "2.0=3"], "one for each scale at most"),
        (["--scale-weight", "2=0", "--scale-weight", "3=0", "--scale-weight", "4=0"], "number > 0"),
        (
            ["--scale-weight", "2=1e308", "--scale-weight", "3=1e308", "--draws-per-image", "2"],
            "scale_weights is (1e+308",
        ),
    ]:
        result = runner.invoke(train_app, [*base, *extra])
        assert result.exit_code == 2 and message in result.stderr, (extra, result.output)
    args = [
        *base,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--scale",
        "3.5-4",
        "--draws-per-image",
        "1",
        "--jpeg-probability",
        "1",
        "--jpeg-quality",
        "40-50",
        "--init",
        str(start),
        "--patch-size",
        "96",
        "--batch-size",
        "2",
        "--max-steps",
        "1",
        "--validate-scale",
        "3.5",
        "--validate-degradation",
        "jpeg:75",
        "--final-validation",
        "Set5",
        "--scale-weight",
        "3.75=2",
    ]
    result = runner.invoke(train_app, args)  # a tiny network's weights to start a full VDSR: refused before any work
    assert result.exit_code == 2 and "--init: " in result.stderr and "not the vdsr" in result.stderr, result.output
    assert not (tmp_path / "cache").exists()
    card_args = [a for a in args if a not in ("--init", str(start))]
    result = runner.invoke(train_app, [*card_args, "--output", str(tmp_path / "run4")])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "run4" / "vdsr.json").read_text())
    assert card["scales"] == [3.5, 3.75, 4] and card["recipe"]["jpeg_quality"] == [40, 50]
    assert card["recipe"]["scale_weights"] == [1, 2, 1]
    assert [(c["scale"], c["degradation"]) for c in card["validation"]] == [(3.5, "jpeg:75")]
    for extra, message in [
        (["--resume", "--init", str(start)], "is not the weights this run started from"),
        (["--resume", "--blend-init", "0.5"], "--blend-init 0.5: a weight 0 < A <= 1 for a fine-tuning run"),
        (["--resume", "--teacher", str(start)], "is not the weights this run learns from (it has no teacher)"),
    ]:
        result = runner.invoke(train_app, [*base, "--output", str(tmp_path / "run4"), *extra])
        assert result.exit_code == 2 and message in result.stderr, (extra, result.output)
