"""Shared fixtures: the data directory (../shared/datasets beside the repo, or $VDSR_DATA_DIR) and a seeded RNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("VDSR_DATA_DIR", REPO.parent / "shared" / "datasets"))
    if not (path / "Set5").is_dir():
        pytest.fail(
            f"Benchmark data not found at {path}: put Set5/Set14/B100 there (../shared/datasets beside the repository) "
            "or set VDSR_DATA_DIR to the folder that holds them.",
            pytrace=False,
        )
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20161121)
