"""Does channel equalisation (vdsr.export.equalise) make a VDSR easier to quantise with every convolution int8?
A results file:

    python -m vdsr.bench.scripts.int8_equalise models/vdsr_real.onnx --json bench/results/int8_equalise_cpu.json

Measured: the cost with every convolution int8 on the export's selection crops (`vdsr.export.quantize.selection_cost`),
plain and equalised, per calibration method. (The export itself tries the equalised graph when the plain one keeps
convolutions in fp32.)
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

from vdsr.bench.calibration import calibration_batches
from vdsr.bench.report import environment
from vdsr.export.equalise import equalised
from vdsr.export.quantize import METHODS, Quantiser, selection_cost, selection_probes
from vdsr.files import atomic_write_text
from vdsr.model import Model

app = typer.Typer(add_completion=False, help=__doc__)


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
