"""The int8 graph for CPUs: calibrated on training images, its cost measured and recorded, chosen only where fast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from vdsr.catalogue import ModelFiles
from vdsr.errors import BackendUnavailable
from vdsr.export.cli import app
from vdsr.runtime.backends import selection as backends
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend


@pytest.fixture(scope="module")
def int8_graph(tiny_model: dict[str, Path], data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    args = ["--weights", str(tiny_model["weights"]), "--int8", "--data-dir", str(data_dir), "--output", str(target)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "int8 PSNR cost vs fp32 (dB)" in result.output
    return target


def test_int8_graph_is_quantised_in_the_middle_and_records_its_cost(int8_graph: Path) -> None:
    model = onnx.load(str(int8_graph))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "int8" and meta["halo"] == "4" and "T91" in meta["calibration"]
    cost = json.loads(meta["int8_cost_db"])
    assert sorted(cost) == sorted(f"{d} x{s}" for d in ("Set5", "Set14") for s in (2, 3, 4))
    assert float(meta["int8_max_cost_db"]) == pytest.approx(max(cost.values()), abs=1e-4)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    produced_by = {out: n.op_type for n in model.graph.node for out in n.output}
    int8_weights = [produced_by.get(c.input[1]) == "DequantizeLinear" for c in convs]
    assert int8_weights == [False, True, True, False]  # first and last stay fp32, the middle runs on int8
    assert produced_by.get(convs[1].input[0]) == "DequantizeLinear"  # with int8 activations


def int8_difference(int8_graph: Path, tiny_model: dict[str, Path]) -> np.ndarray:
    batch = np.random.default_rng(0).random((2, 1, 40, 56), dtype=np.float32)
    fp32, int8 = OnnxRuntimeBackend(tiny_model["onnx"]), OnnxRuntimeBackend(int8_graph)
    assert int8.precision == "int8"
    out = int8(batch)
    assert out.shape == (2, 1, 40, 56) and out.dtype == np.float32 and np.isfinite(out).all()
    return np.abs(fp32(batch) - out)


def test_int8_output_is_quantised_on_any_cpu(int8_graph: Path, tiny_model: dict[str, Path]) -> None:
    """What holds on every x86-64 CPU: the int8 graph runs, gives finite values of the right shape, and is not the
    fp32 graph. How close it is depends on the CPU's int8 kernels (next test)."""
    assert int8_difference(int8_graph, tiny_model).max() > 0


def test_int8_output_is_close_to_fp32_with_dot_product_kernels(int8_graph: Path, tiny_model: dict[str, Path]) -> None:
    """With VNNI (exact int32 accumulation) the tiny model's int8 output stays within 0.05 of fp32."""
    if not backends.int8_is_fast():
        pytest.skip("no VNNI/AMX: ONNX Runtime's AVX2 int8 kernels (VPMADDUBSW) can saturate u8 x s8 products, so "
                    "closeness is not guaranteed on this CPU (issue 16 makes int8 hold there)")  # fmt: skip
    assert int8_difference(int8_graph, tiny_model).max() < 0.05


def test_precision_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    files = ModelFiles("vdsr", {"fp32": Path("a.onnx"), "fp16": Path("b.onnx"), "int8": Path("c.onnx")}, None)
    monkeypatch.setattr(backends, "int8_is_fast", lambda: True)
    assert backends._graph(files, "onnxruntime-cpu", "auto") == Path("c.onnx")
    assert backends._graph(files, "onnxruntime-cpu", "fp32") == Path("a.onnx")
    assert backends._graph(files, "onnxruntime-cuda", "auto") == Path("b.onnx")
    assert backends._graph(files, "tensorrt", "auto") == Path("b.onnx")
    with pytest.raises(BackendUnavailable, match="int8 graph runs on onnxruntime-cpu only"):
        backends._graph(files, "onnxruntime-cuda", "int8")
    monkeypatch.setattr(backends, "int8_is_fast", lambda: False)  # no VNNI: int8 would be slow (or saturate)
    assert backends._graph(files, "onnxruntime-cpu", "auto") == Path("a.onnx")
    with pytest.warns(UserWarning, match="no int8 dot-product instructions"):
        assert backends._graph(files, "onnxruntime-cpu", "int8") == Path("c.onnx")  # asked for: given, with a warning
    with pytest.raises(BackendUnavailable, match="no fp16 ONNX graph"):
        backends._graph(ModelFiles("vdsr", {"fp32": Path("a.onnx")}, None), "onnxruntime-cuda", "fp16")
    with pytest.raises(BackendUnavailable, match="runs as it is"):
        backends._graph(ModelFiles("x", {"given": Path("x.onnx")}, None), "onnxruntime-cpu", "int8")


def test_auto_skips_an_int8_graph_that_costs_too_much(
    int8_graph: Path, tiny_model: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "int8_is_fast", lambda: True)
    model = onnx.load(str(int8_graph))
    for prop in model.metadata_props:
        if prop.key == "int8_max_cost_db":
            prop.value = "0.3"  # as if quantisation had cost 0.3 dB somewhere
    onnx.save(model, str(tmp_path / "costly_int8.onnx"))
    cheap = ModelFiles("t", {"fp32": tiny_model["onnx"], "int8": int8_graph}, None)
    costly = ModelFiles("t", {"fp32": tiny_model["onnx"], "int8": tmp_path / "costly_int8.onnx"}, None)
    assert backends._open("onnxruntime-cpu", costly, "auto").precision == "fp32"
    assert backends._open("onnxruntime-cpu", costly, "int8").precision == "int8"  # asked for: given
    recorded = float({p.key: p.value for p in onnx.load(str(int8_graph)).metadata_props}["int8_max_cost_db"])
    expected = "int8" if recorded <= backends.INT8_AUTO_BAR_DB else "fp32"
    assert backends._open("onnxruntime-cpu", cheap, "auto").precision == expected
