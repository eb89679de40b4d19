"""An int8 graph for CPUs: the fp32 ONNX graph quantised by ONNX Runtime (static, QDQ), its recipe chosen by
measurement for the weights at hand, its cost checked against a bar.

- Weights int8 per output channel in a 7-bit range (ONNX Runtime's reduce_range). x86 CPUs without VNNI multiply
  u8 x s8 with VPMADDUBSW, which adds pairs of products in 16 bits: full 8-bit weights can saturate there
  (2 x 255 x 128 > 32767), 7-bit ones cannot (2 x 255 x 64 < 32767). So the arithmetic is exact integer arithmetic on
  every x86-64 CPU, and the cost measured here, on whatever CPU exports, is the cost on AVX2 CPUs too.
- Activations uint8 per tensor, asymmetric ranges (ONNX Runtime's Percentile calibration is symmetric by default,
  which for ReLU outputs, all >= 0, would leave half the codes unused), calibrated on crops of the training images
  (T91, never a test set): every trained scale, the flattest and the most textured crop of each image, each clean and
  with Gaussian noise.
- Chosen by measurement on crops of held-out training images (BSD200; never a test set), clean and noisy, at every
  trained scale, by a conservative cost (see selection_cost): the calibration method (MinMax, Percentile, Entropy)
  with the smallest cost with every convolution quantised, if that is under half the bar; otherwise each convolution's
  sensitivity (the cost with that one alone quantised), and for each method the most sensitive kept in fp32 one by one
  until the cost is under half the bar; the method keeping fewest wins (see choose_recipe). Where that keeps any
  convolution in fp32, the same search on the graph with its channels equalised across each ReLU
  (vdsr.export.equalise: the same function in fp32), and the recipe that keeps fewer in fp32 is taken (on vdsr_real's
  quantisation-aware weights: 2 instead of 3). The residual Add always stays fp32
  and reads the ILR unrounded (exact_residual_input), even where the first convolution is int8.
- Checked on Set5 and Set14 at every trained scale, clean and noisy (Gaussian sigma 15 on the 8-bit LR): the table is
  recorded in the graph's metadata with `int8_within_bar`; runtimes run an int8 graph by default only when it is true.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

from vdsr.bench.calibration import (
    CALIBRATION_EVERY,
    CALIBRATION_SET,
    CANDIDATES,
    CROP,
    NOISY,
    calibration_batches,
    conditions,
)
from vdsr.bench.datasets import resolve_dataset
from vdsr.bench.harness import backend_runner, run_bench
from vdsr.bench.protocol import BICUBIC, border, degrade
from vdsr.errors import DatasetError, ModelError, first_line
from vdsr.export.equalise import ALPHA, equalised
from vdsr.export.onnx import quiet_logger, set_metadata
from vdsr.files import atomic_write_bytes
from vdsr.metadata import int8_metadata
from vdsr.model import Model
from vdsr.onnx_file import read_onnx
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend
from vdsr.runtime.images import load_image

SELECTION_SET = "BSD200"  # the other training images: the recipe's choices
VALIDATION_SETS = ("Set5", "Set14")  # the bar
BAR_DB = {str(BICUBIC): 0.02, str(NOISY): 0.05}  # largest PSNR cost allowed in any cell, by input kind
METHODS = ("MinMax", "Percentile", "Entropy")
PROBE = 96  # selection crops (HR pixels; a multiple of 12, so every integer scale up to 4 divides it)
SELECTION_EVERY = 10  # every 10th BSD200 image: 20 images


@dataclass(frozen=True)
class Probe:
    """Selection crops at one scale through one input kind: the network's inputs, stacked, and their ground truth."""

    cell: str  # "x2 bicubic", "x3 noise:15"
    inputs: NDArray[np.float32]  # (N, 1, PROBE, PROBE) ILR
    truth: list[NDArray[np.float64]]
    scale: float


def selection_probes(data_dir: Path | None, scales: list[float]) -> list[Probe]:
    """Centre crops of every SELECTION_EVERY-th BSD200 image, at every scale, clean and noisy."""
    colors = []
    for path in resolve_dataset(SELECTION_SET, data_dir).files[::SELECTION_EVERY]:
        color = load_image(path).color
        top, left = (color.shape[0] - PROBE) // 2, (color.shape[1] - PROBE) // 2
        if min(top, left) >= 0:
            colors.append(color[top : top + PROBE, left : left + PROBE])
    probes = []
    for scale in scales:
        for kind in conditions():
            degraded = [degrade(color, scale, kind, seed=i) for i, color in enumerate(colors)]
            inputs = np.stack([d.ilr().astype(np.float32) for d in degraded])[:, None]
            probes.append(Probe(f"x{scale} {kind}", inputs, [d.hr_y for d in degraded], scale))
    return probes


def probe_outputs(graph: Path, probes: list[Probe]) -> list[NDArray[np.float64]]:
    """`graph`'s outputs on each probe's crops, clipped and on 0..255 as the protocol scores them."""
    with OnnxRuntimeBackend(graph) as backend:
        return [np.clip(backend(p.inputs)[:, 0].astype(np.float64), 0.0, 1.0) * 255.0 for p in probes]


def shaved_mse(a: NDArray[np.float64], b: NDArray[np.floating], scale: float) -> float:
    """Mean squared difference of two (N, H, W) stacks without the protocol's border."""
    edge, (rows, cols) = border(scale), a.shape[-2:]
    inner = (..., slice(edge, rows - edge), slice(edge, cols - edge))
    return float(np.mean((a[inner] - b[inner]) ** 2))


def over_bar(cost: dict[str, float], *, share: float = 1.0) -> float:
    """The largest cost as a fraction of `share` x its cell's bar (cells are named '... <input kind>'): <= 1 passes."""
    return max(value / (share * bar_for(cell)) for cell, value in cost.items())


def bar_for(cell: str) -> float:
    """The bar of a cell named '... <input kind>' ('Set5 x2 bicubic', 'x3 noise:15')."""
    return BAR_DB[cell.rsplit(" ", 1)[1]]


@contextlib.contextmanager
def as_model_error(graph: Path) -> Iterator[None]:
    """ONNX Runtime's quantiser fails with plain exceptions: one line naming the graph instead."""
    try:
        yield
    except (ValueError, TypeError, RuntimeError, KeyError) as error:
        raise ModelError(f"{graph}: ONNX Runtime's quantiser failed ({first_line(error)})") from error


class Quantiser:
    """Quantises one fp32 graph with a given calibration method and set of convolutions kept in fp32; each method's
    activation ranges are calibrated once (ONNX Runtime's calibration cache, in `workdir`) and reused: one Quantiser
    per work folder, or a second graph would be quantised over the first one's ranges."""

    def __init__(self, fp32_graph: Path, batches: list[NDArray[np.float32]], workdir: Path) -> None:
        self.fp32_graph, self.batches, self.workdir = fp32_graph, batches, workdir
        model = onnx.load(str(fp32_graph))
        self.input_name = model.graph.input[0].name
        self.convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
        self.adds = [n.name for n in model.graph.node if n.op_type == "Add"]

    def _reader(self) -> Any:
        from onnxruntime.quantization import CalibrationDataReader

        batches, name = self.batches, self.input_name

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            """Batches one range at a time (ONNX Runtime's strided calibration), so memory is one batch's outputs."""

            def __init__(self) -> None:
                self.pending: Iterator[NDArray[np.float32]] = iter(())

            def __len__(self) -> int:
                return len(batches)

            def set_range(self, start_index: int, end_index: int) -> None:
                self.pending = iter(batches[start_index:end_index])

            def get_next(self) -> dict[str, NDArray[np.float32]] | None:
                batch = next(self.pending, None)
                return None if batch is None else {name: batch}

        return Reader()

    def __call__(self, method: str, kept: list[str]) -> Path:
        """An int8 graph (in the work folder, replacing the last one): `method`'s ranges, `kept` convolutions fp32."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        output = self.workdir / "int8.onnx"  # each call replaces the last
        with quiet_logger(), contextlib.redirect_stdout(io.StringIO()), as_model_error(self.fp32_graph):
            quantize_static(
                str(self.fp32_graph),
                str(output),
                self._reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod[method],
                nodes_to_exclude=sorted({*kept, *self.adds}),
                extra_options={"CalibStridedMinMax": 1, "CalibTensorRangeSymmetric": False},
                calibration_cache_path=self.workdir / f"ranges_{method}.json",
            )
        model = onnx.load(str(output))  # it keeps the fp32 graph's metadata: say what it now is
        exact_residual_input(model)
        set_metadata(model, {p.key: p.value for p in model.metadata_props} | {"precision": "int8"})
        onnx.save(model, str(output))
        return output


def exact_residual_input(model: onnx.ModelProto) -> None:
    """With the first convolution int8, ONNX Runtime rounds the ILR for every reader, the residual Add too: give the
    Add the graph's own input back, so that the skip path stays exact whatever the recipe."""
    produced_by = {out: node for node in model.graph.node for out in node.output}
    inputs = {i.name for i in model.graph.input}
    for add in (n for n in model.graph.node if n.op_type == "Add"):
        for index, name in enumerate(add.input):
            dq = produced_by.get(name)
            q = produced_by.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inputs:
                add.input[index] = q.input[0]


@dataclass(frozen=True)
class Int8Recipe:
    method: str
    kept: list[str]  # convolutions left in fp32, by node name
    selection_cost: dict[str, float]  # on the selection crops
    trials: int  # int8 graphs measured to choose it
    equalised: bool = False  # made from the channel-equalised fp32 graph (vdsr.export.equalise)


Cost = Callable[[str, list[str]], dict[str, float]]  # (method, convolutions kept in fp32) -> cost per cell


def choose_recipe(
    cost: Cost, convs: list[str], log: Callable[[str], None], *, at_most: int | None = None
) -> Int8Recipe:
    """The calibration method with the smallest cost with every convolution int8, if that is under half the bar.
    Otherwise, for each method, each convolution's sensitivity (the cost with it alone int8, that method's ranges) and
    the most sensitive kept in fp32 one by one until the cost is under half the bar (at least one stays int8); the
    method keeping fewest wins, then the lower cost; none keeps more than `at_most` (a search that cannot win beyond).
    Each method its own order: quantisation-aware weights, trained on min/max ranges, are cheapest all-int8 with
    Percentile, but with MinMax once their first and last convolutions are kept, which Percentile does not rank
    first."""
    trials = 0

    def measured(method: str, kept: list[str]) -> dict[str, float]:
        nonlocal trials
        trials += 1
        return cost(method, kept)

    by_method = {method: measured(method, []) for method in METHODS}
    methods = sorted(METHODS, key=lambda m: over_bar(by_method[m]))
    log(
        "selection cost, every convolution int8: "
        + ", ".join(f"{m} {max(c.values()):.4f} dB" for m, c in by_method.items())
    )
    if over_bar(by_method[methods[0]], share=0.5) <= 1:
        return Int8Recipe(methods[0], [], by_method[methods[0]], trials)
    found: list[tuple[int, float, str, list[str], dict[str, float]]] = []
    most = len(convs) - 1 if at_most is None else min(at_most, len(convs) - 1)
    for method in methods:
        alone = {conv: over_bar(measured(method, [c for c in convs if c != conv])) for conv in convs}
        order = sorted(convs, key=lambda conv: -alone[conv])
        kept: list[str] = []
        current = by_method[method]
        fewest = min((f[0] for f in found), default=most)  # a method that needs more cannot win
        while over_bar(current, share=0.5) > 1 and len(kept) < fewest:
            kept = order[: len(kept) + 1]
            current = measured(method, kept)
            log(f"selection cost, {method}, {len(kept)} convolution(s) in fp32: {max(current.values()):.4f} dB")
        found.append((len(kept), over_bar(current), method, kept, current))
    _, _, method, kept, current = min(found, key=lambda f: (f[0], f[1]))
    return Int8Recipe(method, kept, current, trials)


def best_recipe(
    fp32_graph: Path,
    batches: list[NDArray[np.float32]],
    probes: list[Probe],
    *,
    workdir: Path,
    log: Callable[[str], None],
) -> tuple[Quantiser, Int8Recipe]:
    """The recipe for the graph as it is; where that keeps convolutions in fp32, also the recipe for its
    channel-equalised copy (the same function in fp32), and of the two the one that keeps fewer, then costs less."""
    (workdir / "plain").mkdir()
    plain = Quantiser(fp32_graph, batches, workdir / "plain")
    recipe = choose_recipe(selection_cost(plain, probes), plain.convs, log)
    if not recipe.kept:
        return plain, recipe
    log(f"{len(recipe.kept)} convolution(s) in fp32: the channel-equalised graph (alpha {ALPHA}) next")
    (workdir / "equalised").mkdir()
    variant = workdir / "equalised" / "fp32.onnx"
    onnx.save(equalised(onnx.load(str(fp32_graph)), batches, ALPHA), str(variant))
    other = Quantiser(variant, batches, workdir / "equalised")
    found = choose_recipe(
        selection_cost(other, probes), other.convs, lambda line: log(f"equalised: {line}"), at_most=len(recipe.kept)
    )
    trials = recipe.trials + found.trials
    if (len(found.kept), over_bar(found.selection_cost)) < (len(recipe.kept), over_bar(recipe.selection_cost)):
        log(f"the channel-equalised graph taken: {len(found.kept)} convolution(s) in fp32")
        return other, replace(found, trials=trials, equalised=True)
    log(f"the plain graph taken: {len(recipe.kept)} convolution(s) in fp32")
    return plain, replace(recipe, trials=trials)


def selection_cost(quantise: Quantiser, probes: list[Probe]) -> Cost:
    """The PSNR cost on the selection crops of the int8 graph `quantise` makes, per cell, taken conservatively: the
    larger of the measured cost, 10 log10(q / r) dB (q, r: int8's and fp32's mean squared error from the truth over
    the cell's crops), and the expected cost of adding the quantisation's error to fp32's, 10 log10(1 + e / r) dB (e:
    int8's mean squared difference from fp32). On a few crops the measured cost is partly luck (negative when the
    error happens to correct fp32's), the expected one misses an error that follows fp32's own (a bias): each
    catches what the other misses."""
    reference = probe_outputs(quantise.fp32_graph, probes)
    truths = [np.stack(p.truth) for p in probes]
    fp32_error = [shaved_mse(out, t, p.scale) for out, t, p in zip(reference, truths, probes, strict=True)]

    def cost(method: str, kept: list[str]) -> dict[str, float]:
        outputs = probe_outputs(quantise(method, kept), probes)
        result = {}
        for p, out, ref, truth, r in zip(probes, outputs, reference, truths, fp32_error, strict=True):
            measured = 10 * math.log10(shaved_mse(out, truth, p.scale) / r)
            expected = 10 * math.log10(1 + shaved_mse(out, ref, p.scale) / r)
            result[p.cell] = round(max(measured, expected), 4)
        return result

    return cost


def quantize_int8(
    fp32_graph: Path, output: Path, data_dir: Path | None, *, force: bool = False, log: Callable[[str], None] = print
) -> dict[str, str]:
    """Write the int8 graph of `fp32_graph` to `output`; returns what was recorded in its metadata. A graph whose cost
    on Set5/Set14 exceeds BAR_DB in any cell is not written (ModelError) unless `force`."""
    given = Model.load(fp32_graph)
    precision = next(iter(given.graphs))
    if precision != "fp32":
        raise ModelError(f"{fp32_graph}: quantise the fp32 graph, not a {precision} one")
    scales = list(given.scales)  # 1.5 stays 1.5
    with tempfile.TemporaryDirectory() as tmp:
        batches = calibration_batches(data_dir, scales)
        probes = selection_probes(data_dir, scales)
        quantise, recipe = best_recipe(fp32_graph, batches, probes, workdir=Path(tmp), log=log)
        quantized = quantise(recipe.method, recipe.kept)
        cost = measure_cost(fp32_graph, quantized, data_dir)
        model = onnx.load(str(quantized))
    within = over_bar(cost) <= 1
    recorded = int8_metadata(
        calibration=f"{recipe.method} on {CALIBRATION_SET} ILR crops ({CROP}x{CROP}, one image in "
        f"{CALIBRATION_EVERY}, flattest and most textured of {CANDIDATES}, clean and {NOISY}, scales {scales}); "
        "7-bit per-channel weights"
        + (f"; channels equalised across each ReLU first (SmoothQuant, alpha {ALPHA})" if recipe.equalised else ""),
        kept=recipe.kept,
        selection=f"{recipe.trials} graphs measured on {SELECTION_SET} crops; cost there "
        + json.dumps(recipe.selection_cost),
        cost=cost,
        bar=BAR_DB,
        within=within,
    )
    for line in cost_table(cost):
        log(line)
    if not within and not force:
        worst = max(cost, key=lambda cell: cost[cell] / bar_for(cell))
        raise ModelError(
            f"{output}: not written: the int8 graph costs {cost[worst]:.4f} dB in {worst} (bar "
            f"{bar_for(worst)} dB); --force writes it anyway"
        )
    set_metadata(model, read_onnx(fp32_graph).metadata | recorded)  # the fp32 graph's, with the int8 facts
    onnx.checker.check_model(model, full_check=True)
    atomic_write_bytes(output, model.SerializeToString())
    return recorded


def cost_table(cost: dict[str, float]) -> list[str]:
    """The measured costs, one line per cell, each against its bar."""
    lines = ["int8 PSNR cost vs fp32 (dB), bar per cell:"]
    for cell, value in cost.items():
        bar = bar_for(cell)
        lines.append(f"  {cell:<24} {value:+.4f}  (bar {bar}){'  OVER' if value > bar else ''}")
    return lines


def measure_cost(fp32_graph: Path, int8_graph: Path, data_dir: Path | None) -> dict[str, float]:
    """PSNR(fp32) - PSNR(int8) per 'Set5 x2 bicubic' cell: Set5 and Set14 at the trained scales (validation sets
    only), clean and noisy."""
    datasets = [resolve_dataset(name, data_dir) for name in VALIDATION_SETS]
    cost = {}
    with OnnxRuntimeBackend(fp32_graph) as reference, OnnxRuntimeBackend(int8_graph) as quantized:
        scales = reference.scales
        runners = [backend_runner(reference, "fp32"), backend_runner(quantized, "int8")]
        for kind in conditions():
            run = run_bench(datasets, scales, runners, degradation=kind)
            if run.failures:
                raise DatasetError("; ".join(f.error for f in run.failures))
            psnr_of = {(c.dataset, c.scale, c.method): c.psnr for c in run.cells}
            for d in datasets:
                for s in scales:
                    difference = psnr_of[(d.name, s, "fp32")] - psnr_of[(d.name, s, "int8")]
                    cost[f"{d.name} x{s:g} {kind}"] = round(difference, 4)
    return cost
