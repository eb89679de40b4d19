"""vdsr-bench on ONNX graphs (ONNX Runtime, no PyTorch) and the fp16 cost benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vdsr.bench.cli import app as bench_app
from vdsr.bench.scripts import fp16_cost
from vdsr.export.onnx import export_onnx, save_onnx
from vdsr.files import sha256_file
from vdsr.networks import SRCNN, VDSR, VDSRConfig
from vdsr.weights import save_weights

runner = CliRunner()


def zero_residual_vdsr() -> VDSR:
    """A VDSR whose residual branch is zero: it returns its bicubic input exactly, so scores are predictable."""
    model = VDSR(VDSRConfig(depth=3, channels=4))
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    return model


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("graphs")
    save_onnx(export_onnx(zero_residual_vdsr(), [2, 3, 4], "1" * 64), folder / "v.onnx")
    save_onnx(export_onnx(zero_residual_vdsr(), [2, 3, 4], "1" * 64, fp16=True), folder / "v_fp16.onnx")
    return folder / "v.onnx", folder / "v_fp16.onnx"


def test_bench_runs_onnx_graphs_on_onnx_runtime(data_dir: Path, graphs: tuple[Path, Path], tmp_path: Path) -> None:
    args = [
        "--data-dir",
        str(data_dir),
        "-d",
        "Set5",
        "-s",
        "2",
        "-m",
        "bicubic",
        "-m",
        "vdsr",
        "--weights",
        str(graphs[0]),
        "--json",
        str(tmp_path / "r.json"),
    ]
    result = runner.invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    cells = {r["method"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert cells["vdsr"]["backend"] == "onnxruntime-cpu" and cells["vdsr"]["precision"] == "fp32"
    assert abs(cells["vdsr"]["psnr"] - cells["bicubic"]["psnr"]) < 1e-3  # the graph returned its input


@pytest.mark.parametrize("suffix", [".onnx", ".safetensors"])
def test_scales_a_model_was_not_trained_for_are_left_out(data_dir: Path, tmp_path: Path, suffix: str) -> None:
    weights = tmp_path / f"x2{suffix}"
    if suffix == ".onnx":
        save_onnx(export_onnx(zero_residual_vdsr(), [2], "1" * 64), weights)
    else:
        save_weights(weights, zero_residual_vdsr(), [2])
    args = [
        "--data-dir",
        str(data_dir),
        "-d",
        "Set5",
        "-s",
        "2,3",
        "-m",
        "bicubic",
        "-m",
        "vdsr",
        "--weights",
        str(weights),
        "--json",
        str(tmp_path / "r.json"),
        "--markdown",
        str(tmp_path / "r.md"),
    ]
    result = runner.invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "r.json").read_text())
    cells = sorted((r["method"], r["scale"]) for r in document["results"])
    assert cells == [("bicubic", 2), ("bicubic", 3), ("vdsr", 2)]
    assert document["left_out"] == ["vdsr: no x3 cells (the model was trained for x2)"]
    assert "left out: vdsr: no x3 cells" in result.stderr and "vdsr: no x3 cells" in (tmp_path / "r.md").read_text()


def test_one_model_per_scale_serves_its_scales(data_dir: Path, tmp_path: Path) -> None:
    """SRCNN is trained per scale, as in its paper: a x2 and a x3 file together fill both cells, each its own."""
    x2, x3 = tmp_path / "s2.safetensors", tmp_path / "s3.onnx"
    save_weights(x2, SRCNN(), [2])
    save_onnx(export_onnx(SRCNN(), [3], "1" * 64), x3)
    args = [
        "--data-dir",
        str(data_dir),
        "-d",
        "Set5",
        "-s",
        "2,3,4",
        "-m",
        "srcnn",
        "--weights",
        str(x3),
        "--weights",
        str(x2),
        "--json",
        str(tmp_path / "r.json"),
    ]
    result = runner.invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "r.json").read_text())
    cells = {r["scale"]: r["backend"] for r in document["results"]}
    assert cells == {2: "onnxruntime-cpu+torch-cpu", 3: "onnxruntime-cpu+torch-cpu"}
    per_image = {(r["scale"], r["image"]): r["psnr"] for r in document["per_image"]}
    assert per_image[(2, "baby.png")] != per_image[(3, "baby.png")]
    assert document["left_out"] == ["srcnn: no x4 cells (the model was trained for x2, x3)"]
    assert document["environment"]["weights"] == {
        "srcnn": [{"file": str(x3), "sha256": sha256_file(x3)}, {"file": str(x2), "sha256": sha256_file(x2)}]
    }


def test_models_for_one_scale_twice_or_a_method_without_weights_are_errors(data_dir: Path, tmp_path: Path) -> None:
    save_weights(tmp_path / "a.safetensors", SRCNN(), [2])
    save_weights(tmp_path / "b.safetensors", SRCNN(), [2, 3])
    base = ["--data-dir", str(data_dir), "-d", "Set5", "-s", "2"]
    both = ["--weights", str(tmp_path / "a.safetensors"), "--weights", str(tmp_path / "b.safetensors")]
    twice = runner.invoke(bench_app, [*base, "-m", "srcnn", *both])
    assert twice.exit_code == 1 and "a.safetensors and " in twice.stderr
    assert "are both srcnn models for x2" in twice.stderr
    missing = runner.invoke(
        bench_app, [*base, "-m", "vdsr", "-m", "srcnn", "--weights", str(tmp_path / "a.safetensors")]
    )
    assert missing.exit_code == 2 and "no --weights for vdsr" in missing.stderr


def test_onnx_path_imports_no_torch(graphs: tuple[Path, Path]) -> None:
    code = (
        "import sys, numpy as np; from pathlib import Path; from vdsr.bench.harness import Method, method_runner; "
        f"r = method_runner(Method.vdsr, [Path({str(graphs[0])!r})]); r.upscale(np.random.rand(9, 7), 3); "
        "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_wrong_architecture_graph_is_refused(graphs: tuple[Path, Path], data_dir: Path) -> None:
    result = runner.invoke(
        bench_app, ["--data-dir", str(data_dir), "-d", "Set5", "-m", "srcnn", "--weights", str(graphs[0])]
    )
    assert result.exit_code == 2 and "holds vdsr weights, not srcnn" in result.stderr


def test_fp16_cost_table(data_dir: Path, graphs: tuple[Path, Path], tmp_path: Path) -> None:
    args = [
        "--fp32",
        str(graphs[0]),
        "--fp16",
        str(graphs[1]),
        "--data-dir",
        str(data_dir),
        "-d",
        "Set5",
        "-s",
        "2",
        "--json",
        str(tmp_path / "c.json"),
        "--markdown",
        str(tmp_path / "c.md"),
    ]
    result = runner.invoke(fp16_cost.app, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "c.json").read_text())["results"]
    assert row["dataset"] == "Set5" and row["scale"] == 2 and row["within_bar"]
    assert 0 <= row["cost_db"] < fp16_cost.BAR_DB  # fp16 rounding of the ILR only: a tiny, non-negative cost
    assert "| Set5 | x2 |" in (tmp_path / "c.md").read_text()


def test_fp16_cost_refuses_a_wrong_graph_and_an_empty_table(
    data_dir: Path, graphs: tuple[Path, Path], tmp_path: Path
) -> None:
    swapped = runner.invoke(
        fp16_cost.app, ["--fp32", str(graphs[0]), "--fp16", str(graphs[0]), "-d", "Set5", "--data-dir", str(data_dir)]
    )
    assert swapped.exit_code == 1 and "is not an fp16 graph" in swapped.stderr
    x2 = tmp_path / "x2.onnx", tmp_path / "x2_fp16.onnx"
    save_onnx(export_onnx(zero_residual_vdsr(), [2], "3" * 64), x2[0])
    save_onnx(export_onnx(zero_residual_vdsr(), [2], "3" * 64, fp16=True), x2[1])
    untrained = runner.invoke(
        fp16_cost.app,
        ["--fp32", str(x2[0]), "--fp16", str(x2[1]), "-d", "Set5", "-s", "3", "--data-dir", str(data_dir)],
    )
    assert untrained.exit_code == 1 and "no cell was scored" in untrained.stderr


def test_fp16_cost_refuses_graphs_of_different_weights(
    data_dir: Path, graphs: tuple[Path, Path], tmp_path: Path
) -> None:
    other = tmp_path / "other_fp16.onnx"
    save_onnx(export_onnx(zero_residual_vdsr(), [2], "2" * 64, fp16=True), other)
    result = runner.invoke(fp16_cost.app, ["--fp32", str(graphs[0]), "--fp16", str(other), "--data-dir", str(data_dir)])
    assert result.exit_code == 1 and "different weights" in result.output
