"""The int8 graph for CPUs: its recipe chosen by measurement, its cost checked against the bar (refused over it unless
--force), 7-bit weights so no CPU's int8 kernels saturate, and run by default wherever int8 is faster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from vdsr.catalogue import ModelFiles
from vdsr.errors import EXIT_FAILED, BackendUnavailable, DatasetError
from vdsr.export import quantize
from vdsr.export.cli import app
from vdsr.runtime import machine
from vdsr.runtime.backends import selection as backends
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend


@pytest.fixture(scope="module")
def int8_graph(tiny_model: dict[str, Path], data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    args = ["--weights", str(tiny_model["weights"]), "--int8", "--data-dir", str(data_dir), "--output", str(target)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "int8 PSNR cost vs fp32 (dB), bar per cell:" in result.output and "selection cost" in result.output
    return target


def metadata(graph: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(graph)).metadata_props}


def test_int8_graph_records_its_recipe_and_its_cost_against_the_bar(int8_graph: Path) -> None:
    meta = metadata(int8_graph)
    assert meta["precision"] == "int8" and meta["halo"] == "4" and "T91" in meta["calibration"]
    assert meta["calibration"].split()[0] in quantize.METHODS and "7-bit" in meta["calibration"]
    cost = json.loads(meta["int8_cost_db"])
    assert sorted(cost) == sorted(f"{d} x{s} {k}" for d in ("Set5", "Set14") for s in (2, 3, 4)
                                  for k in ("bicubic", "noise:15"))  # fmt: skip
    assert float(meta["int8_max_cost_db"]) == pytest.approx(max(cost.values()), abs=1e-4)
    assert json.loads(meta["int8_bar_db"]) == {"bicubic": 0.02, "noise:15": 0.05}
    within = all(v <= quantize.BAR_DB[cell.split()[-1]] for cell, v in cost.items())
    assert meta["int8_within_bar"] == ("true" if within else "false") == "true"  # written without --force: within


def test_the_convolutions_kept_in_fp32_are_the_recorded_ones(int8_graph: Path) -> None:
    model = onnx.load(str(int8_graph))
    kept = json.loads(metadata(int8_graph)["int8_kept_fp32"])
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    produced_by = {out: n.op_type for n in model.graph.node for out in n.output}
    int8_weights = {c.name: produced_by.get(c.input[1]) == "DequantizeLinear" for c in convs}
    assert {name for name, quantised in int8_weights.items() if not quantised} == set(kept)
    assert any(int8_weights.values())  # at least one convolution runs on int8
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert len(adds) == 1 and all(produced_by.get(i) != "DequantizeLinear" for i in adds[0].input)  # residual: fp32


def test_weights_are_7_bit_so_avx2_kernels_cannot_saturate(int8_graph: Path) -> None:
    """x86 CPUs without VNNI add pairs of u8 x s8 products in 16 bits: 2 x 255 x 64 fits, 2 x 255 x 128 does not."""
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(int8_graph)).graph.initializer if t.data_type == 3]
    assert weights and all(w.min() >= -64 and w.max() <= 64 for w in weights)  # 2 x 255 x 64 = 32640 <= 32767
    assert max(int(np.abs(w).max()) for w in weights) >= 60  # the 7-bit range is used, not a narrower one


def test_int8_output_is_close_to_fp32_on_any_cpu(int8_graph: Path, tiny_model: dict[str, Path]) -> None:
    batch = np.random.default_rng(0).random((2, 1, 40, 56), dtype=np.float32)
    with OnnxRuntimeBackend(tiny_model["onnx"]) as fp32, OnnxRuntimeBackend(int8_graph) as int8:
        assert int8.precision == "int8"
        out = int8(batch)
        difference = np.abs(fp32(batch) - out)
    assert out.shape == (2, 1, 40, 56) and out.dtype == np.float32 and np.isfinite(out).all()
    assert 0 < difference.max() < 0.05


def test_the_recipe_search_picks_the_cheapest_method_and_keeps_the_most_sensitive_layers() -> None:
    """A fake measurement: conv 'b' costs 0.03 dB when quantised, 'd' 0.012, the others up to 0.002; Entropy 0.9x of
    that. Half the clean bar is 0.01 dB: keeping 'b' alone in fp32 is not enough (0.0135), 'b' and 'd' are (0.0027)."""
    convs = ["a", "b", "c", "d", "e"]
    alone = {"a": 0.001, "b": 0.03, "c": 0.0, "d": 0.012, "e": 0.002}
    calls = []

    def cost(method: str, kept: list[str]) -> dict[str, float]:
        calls.append((method, tuple(kept)))
        total = sum(v for conv, v in alone.items() if conv not in kept) * (0.9 if method == "Entropy" else 1.0)
        return {"x2 bicubic": total, "x2 noise:15": 2 * total}

    recipe = quantize.choose_recipe(cost, convs, lambda line: None)
    assert recipe.method == "Entropy" and recipe.kept == ["b", "d"] and recipe.trials == len(calls)
    assert recipe.selection_cost == cost("Entropy", ["b", "d"])
    cheap = quantize.choose_recipe(lambda m, k: {"x2 bicubic": 0.004, "x2 noise:15": 0.01}, convs, lambda line: None)
    assert cheap.kept == [] and cheap.trials == len(quantize.METHODS)  # under half the bar: nothing more measured
    hopeless = quantize.choose_recipe(lambda m, k: {"x4 bicubic": 1.0}, convs, lambda line: None)
    assert len(hopeless.kept) == len(convs) - 1  # one convolution always stays int8; the bar then refuses it


def test_over_the_bar_the_export_refuses_unless_forced(
    tiny_model: dict[str, Path], data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured = {"Set5 x2 bicubic": 0.031, "Set5 x2 noise:15": 0.012}
    monkeypatch.setattr(quantize, "choose_recipe", lambda *a: quantize.Int8Recipe("MinMax", [], {}, 1))
    monkeypatch.setattr(quantize, "measure_cost", lambda *a: measured)
    target = tmp_path / "over_int8.onnx"
    args = ["--weights", str(tiny_model["weights"]), "--int8", "--data-dir", str(data_dir), "--output", str(target)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == EXIT_FAILED and not target.exists() and not list(tmp_path.iterdir())
    assert "Set5 x2 bicubic          +0.0310  (bar 0.02)  OVER" in refused.output
    assert "Set5 x2 noise:15         +0.0120  (bar 0.05)\n" in refused.output
    error = [line for line in refused.output.splitlines() if line.startswith("error:")]
    assert error == [f"error: {target}: not written: the int8 graph costs 0.0310 dB in Set5 x2 bicubic (bar 0.02 "
                     "dB); --force writes it anyway"]  # fmt: skip
    forced = CliRunner().invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert metadata(target)["int8_within_bar"] == "false" and json.loads(metadata(target)["int8_cost_db"]) == measured
    assert CliRunner().invoke(app, ["--force", "--output", str(tmp_path / "x.onnx")]).exit_code == 2  # --int8 only


def test_a_model_of_non_integer_scales_is_calibrated_and_selected_at_those_scales(
    tiny_model: dict[str, Path], data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = onnx.load(str(tiny_model["onnx"]))
    for prop in graph.metadata_props:
        if prop.key == "scales":
            prop.value = "[1.5, 2.5, 4]"
    onnx.save(graph, str(tmp_path / "tiny.onnx"))
    seen: list[list[float]] = []

    def probes(data_dir: Path | None, scales: list[float]) -> list[quantize.Probe]:
        seen.append(scales)
        raise DatasetError("stop after planning")

    monkeypatch.setattr(quantize, "calibration_batches", lambda data_dir, scales: seen.append(scales) or [])
    monkeypatch.setattr(quantize, "Quantiser", lambda *a: None)
    monkeypatch.setattr(quantize, "selection_probes", probes)
    with pytest.raises(DatasetError, match="stop after planning"):
        quantize.quantize_int8(tmp_path / "tiny.onnx", tmp_path / "tiny_int8.onnx", data_dir)
    assert seen == [[1.5, 2.5, 4], [1.5, 2.5, 4]] and not (tmp_path / "tiny_int8.onnx").exists()


def flags(monkeypatch: pytest.MonkeyPatch, cpu_flags: str) -> None:
    monkeypatch.setattr(machine, "_cpuinfo", lambda: f"model name\t: test\nflags\t\t: {cpu_flags}\n")


@pytest.mark.parametrize(
    ("cpu_flags", "fast"),
    [
        ("sse4_2 avx avx2 fma", True),  # Zen 2/3, Haswell..Comet Lake: AVX2, no VNNI
        ("avx2 fma avx512f avx512_vnni", True),  # Cascade Lake, Ice Lake, Zen 4/5
        ("avx2 fma avx_vnni", True),  # Alder Lake
        ("fp asimd asimddp", True),  # Arm with dotprod (Graviton 2+, Apple M)
        ("sse4_2 avx", False),  # Sandy/Ivy Bridge: no AVX2
        ("fp asimd", False),  # Arm without dotprod (Cortex-A72: Raspberry Pi 4, Graviton 1)
        ("", False),  # not Linux: nothing known
    ],
)
def test_auto_runs_int8_where_the_cpu_makes_it_faster(
    cpu_flags: str, fast: bool, int8_graph: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    flags(monkeypatch, cpu_flags)
    files = ModelFiles("tiny", {"fp32": tiny_model["onnx"], "int8": int8_graph}, None)
    lines: list[str] = []
    monkeypatch.setattr(backends, "model_files", lambda model: files)
    with backends.open_backend("auto", "tiny", lines.append, device="cpu") as backend:
        assert backend.precision == ("int8" if fast else "fp32")
    reason = "int8 dot products" if "vnni" in cpu_flags or "asimddp" in cpu_flags else "AVX2"
    expected = f"(int8: {reason}" if fast else "(fp32: int8 not known to be faster on this CPU"
    assert len(lines) == 1 and expected in lines[0]
    with backends.open_backend("onnxruntime-cpu", "tiny", lines.append, precision="fp32") as backend:
        assert backend.precision == "fp32" and lines[-1] == "backend onnxruntime-cpu (fp32) for tiny"  # asked for


def test_precision_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    files = ModelFiles("vdsr", {"fp32": Path("a.onnx"), "fp16": Path("b.onnx"), "int8": Path("c.onnx")}, None)
    flags(monkeypatch, "avx2 fma")
    assert backends._graph(files, "onnxruntime-cpu", "auto") == Path("c.onnx")
    assert backends._graph(files, "onnxruntime-cpu", "fp32") == Path("a.onnx")
    assert backends._graph(files, "onnxruntime-cuda", "auto") == Path("b.onnx")
    assert backends._graph(files, "tensorrt", "auto") == Path("b.onnx")
    with pytest.raises(BackendUnavailable, match="int8 graph runs on onnxruntime-cpu only"):
        backends._graph(files, "onnxruntime-cuda", "int8")
    flags(monkeypatch, "sse4_2 avx")  # no AVX2 nor dot products: int8 not known to be faster
    assert backends._graph(files, "onnxruntime-cpu", "auto") == Path("a.onnx")
    with pytest.warns(UserWarning, match="neither AVX2 nor int8 dot-product"):
        assert backends._graph(files, "onnxruntime-cpu", "int8") == Path("c.onnx")  # asked for: given, with a warning
    with pytest.raises(BackendUnavailable, match="no fp16 ONNX graph"):
        backends._graph(ModelFiles("vdsr", {"fp32": Path("a.onnx")}, None), "onnxruntime-cuda", "fp16")
    with pytest.raises(BackendUnavailable, match="runs as it is"):
        backends._graph(ModelFiles("x", {"given": Path("x.onnx")}, None), "onnxruntime-cpu", "int8")


@pytest.mark.parametrize("within", ["false", None])
def test_auto_skips_an_int8_graph_not_within_its_bar(
    within: str | None, int8_graph: Path, tiny_model: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graph written with --force (within_bar false), or by an exporter before the bar (no such key): fp32."""
    flags(monkeypatch, "avx2 fma avx512f avx512_vnni")
    model = onnx.load(str(int8_graph))
    props = [p for p in model.metadata_props if p.key != "int8_within_bar"]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    if within is not None:
        model.metadata_props.add(key="int8_within_bar", value=within)
    onnx.save(model, str(tmp_path / "costly_int8.onnx"))
    costly = ModelFiles("t", {"fp32": tiny_model["onnx"], "int8": tmp_path / "costly_int8.onnx"}, None)
    with backends._open("onnxruntime-cpu", costly, "auto") as backend:
        assert backend.precision == "fp32" and backend.why == "the int8 graph is not within its PSNR cost bar"
    with backends._open("onnxruntime-cpu", costly, "int8") as backend:
        assert backend.precision == "int8"  # asked for: given


def test_channel_equalisation_changes_the_weights_not_the_function(tiny_model: dict[str, Path]) -> None:
    """vdsr.bench.int8_equalise (an experiment): rescaling across each Conv-ReLU-Conv pair is exact in fp32."""
    import onnxruntime as ort

    from vdsr.bench.int8_equalise import equalised

    model = onnx.load(str(tiny_model["onnx"]))
    rng = np.random.default_rng(0)
    batches = [rng.random((2, 1, 24, 24), dtype=np.float32) for _ in range(2)]
    variant = equalised(model, batches, 0.5)
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in variant.graph.initializer}
    assert all(not np.allclose(before[n], after[n]) for n in before if n.endswith("weight"))
    name, x = model.graph.input[0].name, rng.random((1, 1, 40, 40), dtype=np.float32)
    outputs = [ort.InferenceSession(m.SerializeToString()).run(None, {name: x})[0] for m in (model, variant)]
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)
