"""Shared fixtures: the data directory (../shared/datasets beside the repo, or $VDSR_DATA_DIR) and a seeded RNG;
`--cpu-flags "avx2 fma ..."` runs the suite as on a CPU with only those flags (what vdsr decides by them: int8,
bf16; combine with ATEN_CPU_CAPABILITY=avx2 for torch's kernels)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cpu-flags", default=None, help="pretend the CPU has only these flags (space-separated)")


@pytest.fixture(scope="session", autouse=True)
def emulated_cpu(request: pytest.FixtureRequest) -> Iterator[None]:
    flags = request.config.getoption("--cpu-flags")
    if flags is None:
        yield
        return
    from vdsr.runtime import machine

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(machine, "_cpuinfo", lambda: f"model name\t: emulated\nflags\t\t: {flags}\n")
        yield


@pytest.fixture(scope="session", autouse=True)
def plain_environment() -> Iterator[None]:
    """What the suite must not depend on, taken out of the environment (subprocesses inherit it): a proxy (the
    download tests serve on loopback), colours or terminal features forced on (progress is checked as plain lines)."""
    names = ["http_proxy", "https_proxy", "all_proxy", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"]
    with pytest.MonkeyPatch.context() as patch:
        for name in names + [n.upper() for n in names if n.endswith("proxy")]:
            patch.delenv(name, raising=False)
        yield


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


@pytest.fixture(scope="session", autouse=True)
def private_user_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The per-user data folder (where `vdsr-bench --download` puts a set, and the last place a known set is looked
    for) is an empty temporary one, not yet created: what a developer downloaded never changes what the suite sees."""
    from vdsr.bench import datasets

    folder = tmp_path_factory.mktemp("user-data") / "datasets"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets, "user_datasets_dir", lambda: folder)
        yield folder


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20161121)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small random VDSR (depth 4: halo 4) as safetensors weights and as its exported fp32 ONNX graph."""
    import torch

    from vdsr.export.onnx import export_onnx, save_onnx
    from vdsr.networks import VDSR, VDSRConfig
    from vdsr.weights import save_weights

    folder = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    model = VDSR(VDSRConfig(depth=4, channels=8)).eval()
    save_weights(folder / "tiny.safetensors", model, [2, 3, 4])
    save_onnx(export_onnx(model, [2, 3, 4], "0" * 64), folder / "tiny.onnx")
    return {"weights": folder / "tiny.safetensors", "onnx": folder / "tiny.onnx"}
