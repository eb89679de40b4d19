"""The int8 graph for CPUs: its recipe chosen by measurement, its cost checked against the bar (refused over it unless
--force), 7-bit weights so no CPU's int8 kernels saturate, and run by default wherever int8 is faster."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from vdsr.bench.datasets import resolve_dataset
from vdsr.bench.protocol import degrade
from vdsr.errors import EXIT_FAILED, DatasetError
from vdsr.export import quantize
from vdsr.export.cli import app
from vdsr.export.equalise import equalised
from vdsr.model import Model
from vdsr.runtime import machine
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend
from vdsr.runtime.backends.opening import open_chosen
from vdsr.runtime.backends.specs import Request
from vdsr.runtime.images import load_image


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
    assert sorted(cost) == sorted(
        f"{d} x{s} {k}" for d in ("Set5", "Set14") for s in (2, 3, 4) for k in ("bicubic", "noise:15")
    )
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


def test_int8_output_is_close_to_fp32_on_any_cpu(int8_graph: Path, tiny_model: dict[str, Path], data_dir: Path) -> None:
    """On small images of the kind it was calibrated and checked on (white noise is not one: its activations leave
    the calibrated ranges, where any int8 graph saturates)."""
    crops = []
    for path in resolve_dataset("Set14", data_dir).files[:2]:
        ilr = degrade(load_image(path).color, 2).ilr().astype(np.float32)
        crops.append(ilr[:40, :56])
    batch = np.stack(crops)[:, None]
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
    # Percentile cheapest with every convolution int8, MinMax once two are kept (quantisation-aware weights)
    floor = {"MinMax": 0.0, "Percentile": 0.008, "Entropy": 0.02}
    clipped = quantize.choose_recipe(
        lambda m, k: {"x2 bicubic": (0.8 if m == "Percentile" else 1) * sum(v for c, v in alone.items() if c not in k)
                      + floor[m]},
        convs,
        lambda line: None,
    )  # fmt: skip
    assert clipped.method == "MinMax" and clipped.kept == ["b", "d"]  # Percentile needs "b", "d", "e" (0.0088)
    # 3 with every convolution int8, 5 alone per method; Percentile 3 kept, MinMax and Entropy stopped at 2
    assert clipped.trials == 3 + 3 * 5 + 3 + 2 + 2
    # each method its own order: MinMax is sensitive at the ends ('a', 'e'), Percentile in the middle ('b', 'c')
    ends = {"a": 0.02, "b": 0.001, "c": 0.001, "d": 0.001, "e": 0.02}
    middle = {"a": 0.004, "b": 0.015, "c": 0.015, "d": 0.004, "e": 0.004}
    by_method = {"MinMax": ends, "Percentile": middle, "Entropy": {c: 1.5 * v for c, v in ends.items()}}
    own = quantize.choose_recipe(
        lambda m, k: {"x2 bicubic": sum(v for c, v in by_method[m].items() if c not in k)}, convs, lambda line: None
    )
    assert own.method == "MinMax" and own.kept == ["a", "e"]  # Percentile's order would have kept 'b', 'c', 'a'

    bounded = quantize.choose_recipe(cost, convs, lambda line: None, at_most=1)
    assert len(bounded.kept) == 1 and quantize.over_bar(bounded.selection_cost, share=0.5) > 1  # over: cannot win
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
    assert error == [
        f"error: {target}: not written: the int8 graph costs 0.0310 dB in Set5 x2 bicubic (bar 0.02 "
        "dB); --force writes it anyway"
    ]
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


def tiny_pair(fp32: Path, int8: Path) -> Model:
    """The tiny model as a shipped one: its fp32 graph and an int8 graph, facts read from their files."""
    graphs = {"fp32": Model.load(fp32).graphs["fp32"], "int8": Model.load(int8).graphs["int8"]}
    return dataclasses.replace(Model.load(fp32), name="tiny", graphs=graphs, given=False)


@pytest.mark.parametrize(("cpu_flags", "fast"), [("avx2 fma", True), ("fp asimd asimddp", True), ("sse4_2 avx", False)])
def test_auto_runs_int8_where_the_cpu_makes_it_faster(
    cpu_flags: str, fast: bool, int8_graph: Path, tiny_model: dict[str, Path]
) -> None:
    """The graph chosen is opened and runs (the choice itself: tests/test_backend_choice.py's table)."""
    cpu = machine.Machine(frozenset(cpu_flags.split()), installed=frozenset({"onnxruntime"}))
    lines: list[str] = []
    with open_chosen(
        tiny_pair(tiny_model["onnx"], int8_graph), Request(device="cpu"), lines.append, machine=cpu
    ) as backend:
        assert backend.precision == ("int8" if fast else "fp32")
        assert backend(np.full((1, 1, 9, 9), 0.5, np.float32)).shape == (1, 1, 9, 9)
    reason = "int8 dot products" if "asimddp" in cpu_flags else "AVX2"
    expected = f"(int8: {reason}" if fast else "(fp32: int8 not known to be faster on this CPU"
    assert len(lines) == 1 and expected in lines[0]
    with open_chosen(
        tiny_pair(tiny_model["onnx"], int8_graph),
        Request("onnxruntime-cpu", precision="fp32"),
        lines.append,
        machine=cpu,
    ) as backend:
        assert backend.precision == "fp32" and lines[-1] == "backend onnxruntime-cpu (fp32) for tiny"  # asked for


@pytest.mark.parametrize("within", ["false", None])
def test_auto_skips_an_int8_graph_not_within_its_bar(
    within: str | None, int8_graph: Path, tiny_model: dict[str, Path], tmp_path: Path
) -> None:
    """A graph written with --force (within_bar false), or by an exporter before the bar (no such key): fp32."""
    model = onnx.load(str(int8_graph))
    props = [p for p in model.metadata_props if p.key != "int8_within_bar"]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    if within is not None:
        model.metadata_props.add(key="int8_within_bar", value=within)
    onnx.save(model, str(tmp_path / "costly_int8.onnx"))
    costly = tiny_pair(tiny_model["onnx"], tmp_path / "costly_int8.onnx")
    vnni = machine.Machine(frozenset({"avx2", "avx512_vnni"}), installed=frozenset({"onnxruntime"}))
    lines: list[str] = []
    with open_chosen(costly, Request("onnxruntime-cpu"), lines.append, machine=vnni) as backend:
        assert backend.precision == "fp32"
    assert lines == ["backend onnxruntime-cpu (fp32: the int8 graph is not within its PSNR cost bar) for tiny"]
    with open_chosen(costly, Request("onnxruntime-cpu", precision="int8"), machine=vnni) as backend:
        assert backend.precision == "int8"  # asked for: given


def test_channel_equalisation_changes_the_weights_not_the_function(tiny_model: dict[str, Path]) -> None:
    """vdsr.export.equalise: rescaling across each Conv-ReLU-Conv pair is exact in fp32."""
    import onnxruntime as ort

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


@pytest.mark.parametrize(
    ("plain_kept", "equalised_kept", "equalised_cost", "taken"),
    [
        (3, 2, 0.009, "equalised"),  # fewer convolutions in fp32
        (2, 2, 0.004, "equalised"),  # as many, a lower cost
        (2, 2, 0.006, "plain"),  # as many, a higher cost
        (2, 3, 0.001, "plain"),  # more
        (0, None, None, "plain"),  # every convolution int8 already: the equalised graph is not tried
    ],
)
def test_the_export_takes_the_equalised_graph_where_it_keeps_fewer_convolutions_in_fp32(
    tiny_model: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    plain_kept: int,
    equalised_kept: int | None,
    equalised_cost: float | None,
    taken: str,
) -> None:
    """The recipe search itself is tested above; here a fake one gives each graph its recipe."""
    convs = [n.name for n in onnx.load(str(tiny_model["onnx"])).graph.node if n.op_type == "Conv"]
    recipes = {
        "plain": quantize.Int8Recipe("MinMax", convs[:plain_kept], {"x2 bicubic": 0.005}, 7),
        "equalised": quantize.Int8Recipe(
            "MinMax", convs[: equalised_kept or 0], {"x2 bicubic": equalised_cost or 0}, 8
        ),
    }
    searched = []

    def search(cost: Path, convs: list[str], log: object, at_most: int | None = None) -> quantize.Int8Recipe:
        searched.append(cost.parent.name)  # the fake cost function is the graph's path: which graph was searched
        return recipes[cost.parent.name]

    monkeypatch.setattr(quantize, "selection_cost", lambda quantise, probes: quantise.fp32_graph)
    monkeypatch.setattr(quantize, "choose_recipe", search)
    fp32 = tmp_path / "plain" / "tiny.onnx"
    fp32.parent.mkdir()
    fp32.write_bytes(tiny_model["onnx"].read_bytes())
    batches = [np.random.default_rng(0).random((2, 1, 24, 24), dtype=np.float32)]
    (tmp_path / "work").mkdir()
    quantiser, recipe = quantize.best_recipe(fp32, batches, [], workdir=tmp_path / "work", log=lambda line: None)
    assert searched == (["plain"] if equalised_kept is None else ["plain", "equalised"])
    assert quantiser.fp32_graph.parent.name == taken and recipe.equalised == (taken == "equalised")
    assert recipe.kept == recipes[taken].kept and recipe.trials == (7 if equalised_kept is None else 15)


def test_an_int8_graph_of_the_equalised_graph_is_close_to_the_plain_fp32(
    tiny_model: dict[str, Path], tmp_path: Path
) -> None:
    """Its error from the plain fp32 graph is the rounding's, of the plain int8 graph's order (every convolution int8
    in a random network), not a wrong rescaling's (of the size of the output itself). Each graph its own Quantiser and
    work folder (ONNX Runtime reuses a calibration cache it finds there)."""
    rng = np.random.default_rng(1)
    batches = [rng.random((2, 1, 40, 56), dtype=np.float32) for _ in range(3)]
    variant = tmp_path / "equalised" / "fp32.onnx"
    variant.parent.mkdir()
    onnx.save(equalised(onnx.load(str(tiny_model["onnx"])), batches, 0.5), str(variant))
    (tmp_path / "plain").mkdir()
    errors = []
    for fp32_graph in (tiny_model["onnx"], variant):
        work = tmp_path / ("plain" if fp32_graph == tiny_model["onnx"] else "equalised")
        int8 = quantize.Quantiser(fp32_graph, batches, work)("MinMax", [])
        with OnnxRuntimeBackend(tiny_model["onnx"]) as fp32, OnnxRuntimeBackend(int8) as quantised:
            reference = fp32(batches[1])
            errors.append(float(np.abs(reference - quantised(batches[1])).mean()))
    plain, equalised_error = errors
    assert 0 < equalised_error < 3 * plain and plain < 0.1 * np.abs(reference).mean()
