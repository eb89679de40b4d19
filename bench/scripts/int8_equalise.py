"""Would channel equalisation make a VDSR easier to quantise? An experiment, not part of the export (a results file):

    python -m vdsr.bench.scripts.int8_equalise models/vdsr_real.onnx --json bench/results/int8_equalise_cpu.json

Across each Conv-ReLU-Conv pair, output channel c of the first convolution is divided by s_c and input channel c of
the second multiplied by it (exact in fp32: ReLU(x / s) = ReLU(x) / s for s > 0), with s_c = a_c^alpha / w_c^(1 -
alpha) (SmoothQuant, Xiao et al. 2023; a_c: the channel's largest activation on the calibration crops, w_c: the
largest weight reading it), normalised to a geometric mean of 1. The per-tensor activation ranges then waste fewer
codes, at the price of wider per-channel weight ranges. Measured: the cost with every convolution int8 on the
export's selection crops (`vdsr.export.quantize.selection_cost`), plain and equalised, per calibration method.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import onnx
import onnxruntime as ort
import typer
from numpy.typing import NDArray
from onnx import numpy_helper

from vdsr.bench.calibration import calibration_batches
from vdsr.bench.report import environment
from vdsr.export.quantize import METHODS, Quantiser, selection_cost, selection_probes
from vdsr.files import atomic_write_text
from vdsr.model import Model

app = typer.Typer(add_completion=False, help=__doc__)


def equalised(model: onnx.ModelProto, batches: list[NDArray[np.float32]], alpha: float) -> onnx.ModelProto:
    """A copy of a Conv-ReLU-...-Conv graph with each ReLU's channels rescaled as the module says."""
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    relus = [n for n in model.graph.node if n.op_type == "Relu"]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for relu in relus:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(relu.output[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [relu.output[0] for relu in relus]
    largest = [np.zeros(1, np.float32) for _ in names]
    for batch in batches:
        outputs = session.run(names, {model.graph.input[0].name: batch})
        largest = [np.maximum(m, o.max(axis=(0, 2, 3))) for m, o in zip(largest, outputs, strict=True)]
    result = onnx.ModelProto()
    result.CopyFrom(model)
    tensors = {t.name: t for t in result.graph.initializer}

    def value(name: str) -> NDArray[np.float32]:
        return numpy_helper.to_array(tensors[name]).astype(np.float32)

    def store(name: str, array: NDArray[np.float32]) -> None:
        tensors[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))

    for first, second, active in zip(convs, convs[1:], largest, strict=False):
        reader = np.abs(value(second.input[1])).max(axis=(0, 2, 3))
        s = np.maximum(active, 1e-5) ** alpha / np.maximum(reader, 1e-8) ** (1 - alpha)
        s = np.where(active < 1e-5, 1.0, s / np.exp(np.mean(np.log(s)))).astype(np.float32)  # dead channels: 1
        store(first.input[1], value(first.input[1]) / s[:, None, None, None])
        if len(first.input) > 2:  # the exporter leaves out all-zero biases
            store(first.input[2], value(first.input[2]) / s)
        store(second.input[1], value(second.input[1]) * s[None, :, None, None])
    return result


@app.command()
def main(
    graph: Annotated[Path, typer.Argument(help="A VDSR's fp32 ONNX graph.")],
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the results.")],
    data_dir: Annotated[
        Path | None, typer.Option(help="Holds T91 and BSD200.", show_default="($VDSR_DATA_DIR)")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Migration strength (SmoothQuant's alpha).")] = 0.5,
    method: Annotated[list[str], typer.Option(help="Calibration methods to measure.")] = ["Percentile"],  # noqa: B006
) -> None:
    if unknown := set(method) - set(METHODS):
        raise typer.BadParameter(f"{sorted(unknown)}: calibration methods are {', '.join(METHODS)}")
    model = onnx.load(str(graph))
    scales = list(Model.load(graph).scales)
    batches = calibration_batches(data_dir, scales)
    probes = selection_probes(data_dir, scales)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        variant = Path(tmp) / "equalised.onnx"
        onnx.save(equalised(model, batches, alpha), str(variant))
        ilr = batches[0]
        difference = float(
            np.abs(
                ort.InferenceSession(str(graph)).run(None, {model.graph.input[0].name: ilr})[0]
                - ort.InferenceSession(str(variant)).run(None, {model.graph.input[0].name: ilr})[0]
            ).max()
        )
        for name, fp32 in (("plain", graph), (f"equalised alpha {alpha:g}", variant)):
            (Path(tmp) / name).mkdir()
            cost = selection_cost(Quantiser(fp32, batches, Path(tmp) / name), probes)
            results[name] = {m: cost(m, []) for m in method}
            for m, cells in results[name].items():
                typer.echo(f"{name:24} {m:11} every convolution int8: {max(cells.values()):.4f} dB (largest cell)")
    command = shlex.join(["python", "-m", "vdsr.bench.scripts.int8_equalise", *sys.argv[1:]])
    atomic_write_text(
        json_path,
        json.dumps(
            {
                "graph": str(graph),
                "fp32_max_difference": difference,
                "selection_cost_db": results,
                "environment": environment(command),
            },
            indent=1,
        )
        + "\n",
    )
    typer.echo(f"fp32 outputs, plain against equalised: largest difference {difference:.2e}")


if __name__ == "__main__":
    app()
