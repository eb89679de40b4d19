"""The prepared GPU training (vdsr.train.gpu_train, issue 19), dry-run on the CPU: packing, the on-device batches and
the protocol's degradation as matrix products, and a few steps that write weights, log and summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vdsr.runtime.resize import imresize
from vdsr.train.gpu_train import SCALES, Batches, pack
from vdsr.weights import load_weights


@pytest.fixture(scope="module")
def packed(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gpu") / "pack.npz"
    pack(data_dir, path, limit=5)
    return path


def test_batches_are_the_protocols_degradation_of_random_crops(packed: Path) -> None:
    data = dict(np.load(packed))
    batches = Batches(data, patch=24, device=torch.device("cpu"), seed=1)
    hr = np.random.default_rng(0).random((24, 24))
    for scale in SCALES:
        down, up = batches.matrices[scale]
        made = (up @ (down @ torch.from_numpy(hr).float() @ down.T) @ up.T).numpy()
        np.testing.assert_allclose(made, imresize(imresize(hr, 1 / scale), scale), atol=2e-6)
    ilr, hr_patches = batches(6)
    assert ilr.shape == hr_patches.shape == (6, 1, 24, 24)
    assert 0 <= float(hr_patches.min()) and float(hr_patches.max()) <= 1
    flat = data["train"].astype(np.float32) / 255  # every patch is a crop of a training image (up to flips)
    values = set(np.round(flat * 255).astype(int).tolist())
    assert set(np.round(hr_patches.numpy() * 255).astype(int).ravel().tolist()) <= values


def test_a_dry_run_writes_weights_log_and_summary(packed: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "vdsr.train.gpu_train", "train", "--pack", str(packed), "--out", str(tmp_path),
               "--dry-run"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    summary = json.loads((tmp_path / "gpu_train.json").read_text())
    assert summary["steps"] == 4 and summary["environment"]["device"] == "cpu" and summary["patches_per_second"] > 0
    assert set(summary["final_set5"]) == {"2", "3", "4"}
    model, scales = load_weights(tmp_path / "vdsr.safetensors")
    assert scales == [2, 3, 4] and model.config.depth == 3
    lines = (tmp_path / "gpu_train_log.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["step"] == 4
