"""ONNX export: dynamic N/H/W, self-contained, checker-clean, no needless nodes, equal to PyTorch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from extras import without
from typer.testing import CliRunner

from vdsr.catalogue import shipped
from vdsr.export import cli as export_cli
from vdsr.export.cli import app, default_output
from vdsr.export.onnx import export_onnx, save_onnx
from vdsr.files import sha256_file
from vdsr.metadata import COLOR_CONVENTION
from vdsr.networks import SRCNN, VDSR, SRCNNConfig, VDSRConfig
from vdsr.weights import save_weights

SHAPES = [(1, 1, 17, 33), (3, 1, 64, 48), (1, 1, 48, 64), (1, 1, 1, 1), (2, 1, 5, 90)]
runner = CliRunner()


def tiny_models() -> list[VDSR | SRCNN]:
    torch.manual_seed(0)
    return [VDSR(VDSRConfig(depth=4, channels=8)), SRCNN(SRCNNConfig(kernels=(5, 1, 3), channels=(8, 4)))]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[VDSR | SRCNN, Path]]:
    """Each tiny model and its fp32 graph, round-tripped through a file."""
    folder = tmp_path_factory.mktemp("onnx")
    pairs = []
    for model in tiny_models():
        path = folder / f"{type(model).__name__}.onnx"
        save_onnx(export_onnx(model, [2, 3, 4], "f" * 64), path)
        pairs.append((model.float().eval(), path))
    return pairs


def test_ort_equals_pytorch_at_many_shapes(exported: list[tuple[VDSR | SRCNN, Path]]) -> None:
    rng = np.random.default_rng(0)
    for model, path in exported:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for shape in SHAPES:
            x = rng.random(shape, dtype=np.float32)
            with torch.inference_mode():
                expected = model(torch.from_numpy(x)).numpy()
            (got,) = session.run(None, {"ilr": x})
            assert got.shape == shape
            assert np.abs(got - expected).max() <= 1e-5, (type(model).__name__, shape)


def test_graph_is_dynamic_self_contained_and_lean(exported: list[tuple[VDSR | SRCNN, Path]]) -> None:
    for model, path in exported:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, "height", "width"]
        assert all(
            init.data_location == onnx.TensorProto.DEFAULT for init in proto.graph.initializer
        )  # no external data
        ops = [n.op_type for n in proto.graph.node]
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        expected = ["Conv", "Relu"] * (convs - 1) + ["Conv"] + (["Add"] if isinstance(model, VDSR) else [])
        assert ops == expected  # nothing but the network: constants folded, no casts, no reshapes
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["halo"] == str(model.halo) and meta["precision"] == "fp32" and meta["color"] == COLOR_CONVENTION
        assert json.loads(meta["scales"]) == [2, 3, 4] and meta["weights_sha256"] == "f" * 64
        assert meta["architecture"] == type(model).__name__.lower()


def test_fp16_graph_has_fp16_weights_and_io_and_stays_close(tmp_path: Path) -> None:
    model = tiny_models()[0]
    reference = VDSR(model.config)
    reference.load_state_dict(model.state_dict())
    proto = export_onnx(model, [2], "0" * 64, fp16=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert {init.data_type for init in proto.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert "Cast" not in {n.op_type for n in proto.graph.node}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((2, 1, 20, 30), dtype=np.float32)
    (got,) = session.run(None, {"ilr": x.astype(np.float16)})
    with torch.inference_mode():
        expected = reference.eval()(torch.from_numpy(x)).numpy()
    assert got.dtype == np.float16 and np.abs(got.astype(np.float32) - expected).max() < 1e-2


def test_cli_exports_beside_the_weights(tmp_path: Path) -> None:
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, tiny_models()[0], [2, 3])
    result = runner.invoke(app, ["--weights", str(weights)])
    assert result.exit_code == 0, result.output
    fp16 = runner.invoke(app, ["--weights", str(weights), "--fp16"])
    assert fp16.exit_code == 0, fp16.output
    for name, precision in (("tiny.onnx", "fp32"), ("tiny_fp16.onnx", "fp16")):
        meta = {p.key: p.value for p in onnx.load(str(tmp_path / name)).metadata_props}
        assert meta["precision"] == precision and meta["weights_sha256"] == sha256_file(weights)
        assert json.loads(meta["scales"]) == [2, 3]


def test_suffixes_in_capitals_and_an_older_opset_export_quietly(tmp_path: Path) -> None:
    """Found by review: -o X.ONNX wrote the graph, then failed (exit 2) reading it back; --opset 17 printed
    onnxscript's converter note."""
    weights = tmp_path / "tiny.SAFETENSORS"
    save_weights(weights, tiny_models()[0], [2])
    result = runner.invoke(app, ["--weights", str(weights), "-o", str(tmp_path / "X.ONNX"), "--opset", "17"])
    assert result.exit_code == 0 and result.stderr.startswith("wrote ") and "onnxscript" not in result.output
    assert onnx.load(str(tmp_path / "X.ONNX")).opset_import[0].version == 17


def test_cli_missing_weights_is_one_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--weights", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 2 and "none.safetensors is not a file" in result.stderr  # found before any work
    (tmp_path / "bad.safetensors").write_bytes(b"not weights")
    result = runner.invoke(app, ["--weights", str(tmp_path / "bad.safetensors")])
    assert result.exit_code == 1 and "bad.safetensors: not a readable weights file" in result.stderr
    model = tiny_models()[0]
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = 1e6  # finite in fp32, over fp16's 65504
    save_weights(tmp_path / "large.safetensors", model, [2])
    result = runner.invoke(app, ["--weights", str(tmp_path / "large.safetensors"), "--fp16"])
    assert result.exit_code == 1 and "large.safetensors: weights body.0.weight are over fp16's range" in result.stderr
    assert not (tmp_path / "large_fp16.onnx").exists()


def test_export_validates_before_it_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--int8 without data and --engine without a GPU used to export first and fail after (exit 1, a file left)."""
    monkeypatch.delenv("VDSR_DATA_DIR", raising=False)
    out = tmp_path / "x.onnx"
    result = runner.invoke(app, ["--int8", "--output", str(out)])
    assert result.exit_code == 2 and "No data directory" in result.stderr and not out.exists()
    result = runner.invoke(app, ["--engine", str(tmp_path / "x.engine"), "--output", str(out)])
    assert result.exit_code == 2 and "--engine: " in result.stderr and not out.exists()
    result = runner.invoke(app, ["--output", str(tmp_path)])  # a folder, found before the export
    assert result.exit_code == 2 and "is a folder; give the graph's file name" in result.stderr


def test_the_default_output_is_beside_given_weights_else_in_the_current_folder() -> None:
    assert default_output(Path("runs/v.safetensors"), "vdsr", "int8") == Path("runs/v_int8.onnx")
    assert default_output(None, "vdsr", "fp16") == Path("vdsr_fp16.onnx")  # not the package's vdsr_fp16.onnx
    assert default_output(None, "srcnn_x3", "fp32") == Path("srcnn_x3.onnx")


def test_weights_inside_an_installed_package_are_not_exported_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--weights <site-packages>/vdsr/vdsr.safetensors` would write its graph into the package: refused, before any
    work, unless the package folder is a source checkout's models/ (the maintainers' export)."""
    from vdsr.export import cli as export_cli

    site = tmp_path / "site-packages" / "vdsr"
    site.mkdir(parents=True)
    (site / "srcnn.safetensors").write_bytes(shipped("srcnn.safetensors").read_bytes())
    monkeypatch.setattr(export_cli, "shipped", lambda name: site / name)
    result = runner.invoke(app, ["--weights", str(site / "srcnn.safetensors")])
    assert result.exit_code == 2 and "inside the installed vdsr package" in result.output, result.output
    assert sorted(site.iterdir()) == [site / "srcnn.safetensors"]
    assert not export_cli.inside_installed_package(shipped("srcnn.onnx"))  # this checkout's models/


def test_a_shipped_model_is_exported_into_the_current_folder_never_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vdsr-export --fp16` without --weights overwrote the package's vdsr_fp16.onnx. The package folder is stood in
    for by a copy (`shipped` patched), so even a failure leaves the real one alone; that one is checked too."""
    package = shipped("srcnn.safetensors").parent
    before = {p.name: sha256_file(p) for p in package.iterdir() if p.is_file()}
    copy = tmp_path / "package"
    copy.mkdir()
    shutil.copy(package / "srcnn.safetensors", copy)
    monkeypatch.setattr(export_cli, "shipped", lambda name: copy / name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["--model", "srcnn", "--fp16"])
    assert result.exit_code == 0, result.output
    assert "wrote srcnn_fp16.onnx" in result.stderr and [p.name for p in work.iterdir()] == ["srcnn_fp16.onnx"]
    assert [p.name for p in copy.iterdir()] == ["srcnn.safetensors"]
    assert {p.name: sha256_file(p) for p in package.iterdir() if p.is_file()} == before


BLOCKED_IMPORTS = without(("torch", "onnx", "onnxscript"), module="vdsr.export.cli", prog="vdsr-export")  # [cpu] only


def test_without_the_train_extra_help_works_and_an_export_says_what_to_install(tmp_path: Path) -> None:
    def export(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", BLOCKED_IMPORTS, *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)

    for option in ("--help", "--version"):
        shown = export(option)
        assert shown.returncode == 0 and "vdsr-export" in shown.stdout and not shown.stderr, shown.stderr
    refused = export("--model", "srcnn")
    assert refused.returncode == 2 and not refused.stdout
    assert refused.stderr == 'error: vdsr-export needs torch, onnx, onnxscript: pip install "vdsr[train]"\n'
    assert list(tmp_path.iterdir()) == []
