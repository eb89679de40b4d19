"""The GPU recipe's data source, run on the CPU: batches made on the device (random crops of the training images,
the protocol's degradation as matrix products, a pure function of the seed and the step), and vdsr-train --recipe
gpu --data device taking its steps, with its moving average saved (issue 19's trainer, now an option of the one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vdsr.bench.datasets import Dataset, resolve_dataset
from vdsr.errors import UsageError
from vdsr.runtime.resize import imresize
from vdsr.train.cli import app
from vdsr.train.device_data import DeviceBatches
from vdsr.weights import load_weights


@pytest.fixture(scope="module")
def few(data_dir: Path) -> Dataset:
    t91 = resolve_dataset("T91", data_dir)
    return Dataset("T91", t91.files[:5], verified=False)


def test_batches_are_the_protocols_degradation_of_random_crops(few: Dataset) -> None:
    batches = DeviceBatches([few], (2, 3, 4), patch=24, device=torch.device("cpu"), seed=1)
    hr = np.random.default_rng(0).random((24, 24))
    for scale in (2, 3, 4):
        down, up = batches.matrices[scale]
        made = (up @ (down @ torch.from_numpy(hr).float() @ down.T) @ up.T).numpy()
        np.testing.assert_allclose(made, imresize(imresize(hr, 1 / scale), scale), atol=2e-6)
    ilr, hr_patches = batches.batch(7, 6)
    assert ilr.shape == hr_patches.shape == (6, 1, 24, 24)
    assert 0 <= float(hr_patches.min()) and float(hr_patches.max()) <= 1
    again, _ = batches.batch(7, 6)
    other, _ = batches.batch(8, 6)
    assert torch.equal(ilr, again) and not torch.equal(ilr, other)  # a pure function of (seed, step): resumable
    values = set(np.round(batches.flat.numpy()).astype(int).tolist())  # every patch is a crop (up to flips)
    assert set(np.round(hr_patches.numpy() * 255).astype(int).ravel().tolist()) <= values
    with pytest.raises(UsageError, match="an integer dividing the patch size"):
        DeviceBatches([few], (2, 3, 4), patch=25, device=torch.device("cpu"), seed=1)


def test_the_gpu_recipe_trains_on_device_batches_and_saves_its_moving_average(data_dir: Path, tmp_path: Path) -> None:
    args = [
        "--output",
        str(tmp_path / "run"),
        "--data-dir",
        str(data_dir),
        "--recipe",
        "gpu",
        "--device",
        "cpu",
        "--patch-size",
        "24",
        "--batch-size",
        "6",
        "--max-steps",
        "3",
        "--no-bf16",
        "--final-validation",
        "Set5",
        "--scale",
        "2,3",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "run" / "vdsr.json").read_text())
    recipe = card["recipe"]
    assert (recipe["data"], recipe["ema"], recipe["loss"], recipe["clip_norm"]) == ("device", 0.999, "l1_mse", 1.0)
    assert card["steps"] == 3 and card["patches"]["key"].endswith("-device")
    model, scales = load_weights(tmp_path / "run" / "vdsr.safetensors")
    assert scales == [2, 3] and model.config.depth == 20


def test_a_budget_lays_the_schedule_over_the_time_measured(data_dir: Path, tmp_path: Path) -> None:
    """--budget-minutes: the warm-up's steps are timed, and the cosine ends when the budget would (kept in the log
    and the checkpoint, so a resumed run keeps the same schedule)."""
    args = [
        "--output",
        str(tmp_path / "run"),
        "--data-dir",
        str(data_dir),
        "--recipe",
        "gpu",
        "--device",
        "cpu",
        "--patch-size",
        "12",
        "--batch-size",
        "2",
        "--budget-minutes",
        "0.05",
        "--no-bf16",
        "--validate-every",
        "0",
        "--final-validation",
        "Set5",
        "--scale",
        "2",
        "--architecture",
        "srcnn",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    (timed,) = [record for record in log if "total_steps" in record]
    card = json.loads((tmp_path / "run" / "srcnn.json").read_text())
    assert timed["step"] == 60 and card["finished_schedule"] and timed["step"] < card["steps"] <= timed["total_steps"]
    assert 0 < timed["seconds_per_step"] < 3
