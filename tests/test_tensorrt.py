"""The TensorRT builder's gate and its pure parts, run for real. Building engines needs TensorRT and a GPU, which
this project's machines lack: that path is type-checked (test_package.py), never mocked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vdsr.export.cli import app
from vdsr.networks import VDSR, VDSRConfig
from vdsr.runtime.backends.specs import Profile, profile_for
from vdsr.runtime.backends.tensorrt import (
    Gpu,
    TensorRTUnavailable,
    build_engine,
    engine_key,
    parse_shape,
    sidecar_path,
)
from vdsr.weights import save_weights

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")


def test_engine_sidecar_never_replaces_the_model_card() -> None:
    assert sidecar_path(Path("models/vdsr.engine")) == Path("models/vdsr.engine.json")  # not models/vdsr.json
    assert sidecar_path(Path("a.b/vdsr")) == Path("a.b/vdsr.json")


def test_profile_shapes() -> None:
    assert parse_shape("4x512x512") == (4, 512, 512) and parse_shape("1X32x48") == (1, 32, 48)
    for bad in ("4x512", "ax1x1", "4x512x-3", ""):
        with pytest.raises(ValueError, match="NxHxW"):
            parse_shape(bad)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        Profile(min=(1, 64, 64), opt=(1, 32, 32), max=(1, 128, 128))


def test_engine_key_changes_with_every_input() -> None:
    DEFAULT_PROFILE = profile_for(512, 4, 20)  # noqa: N806
    gpu, other_gpu = Gpu("NVIDIA H100 80GB HBM3", "9.0"), Gpu("NVIDIA H200", "9.0")
    base = engine_key(gpu, "10.13.0", "a" * 64, profile=DEFAULT_PROFILE)
    assert base == engine_key(gpu, "10.13.0", "a" * 64, profile=DEFAULT_PROFILE)
    variants = {
        engine_key(other_gpu, "10.13.0", "a" * 64, profile=DEFAULT_PROFILE),
        engine_key(Gpu(gpu.name, "8.9"), "10.13.0", "a" * 64, profile=DEFAULT_PROFILE),
        engine_key(gpu, "11.0.0", "a" * 64, profile=DEFAULT_PROFILE),
        engine_key(gpu, "10.13.0", "b" * 64, profile=DEFAULT_PROFILE),
        engine_key(gpu, "10.13.0", "a" * 64, profile=Profile((1, 32, 32), (2, 256, 256), (8, 1024, 1024))),
    }
    assert base not in variants and len(variants) == 5


@needs_no_gpu
def test_without_a_gpu_the_builder_refuses_before_touching_tensorrt(tmp_path: Path) -> None:
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"never read: the GPU check comes first")
    with pytest.raises(TensorRTUnavailable, match="No CUDA GPU is visible"):
        build_engine(onnx_path, profile_for(512, 4, 4), precision="fp32", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


@needs_no_gpu
def test_cli_engine_without_gpu_is_one_clear_error_found_before_any_work(tmp_path: Path) -> None:
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, VDSR(VDSRConfig(depth=3, channels=4)), [2])
    result = CliRunner().invoke(app, ["--weights", str(weights), "--fp16", "--engine", str(tmp_path / "tiny.engine")])
    assert result.exit_code == 2 and "--engine: No CUDA GPU is visible" in result.stderr
    assert not (tmp_path / "tiny_fp16.onnx").exists() and not (tmp_path / "tiny.engine").exists()
    bad = CliRunner().invoke(app, ["--weights", str(weights), "--opt", "4x512"])
    assert bad.exit_code == 2
