"""Does quantisation-aware training (vdsr-train --qat) make a VDSR cheaper to quantise? A results file, not a test:

    python -m vdsr.bench.scripts.int8_qat 'shipped=models/vdsr_real.safetensors' \
        'qat inner, step 250=runs/qat/checkpoint.safetensors' --json bench/results/int8_qat_cpu.json

For each weights file or training checkpoint: its fp32 graph, and the export's selection cost of its int8 graph
(`vdsr.export.quantize.selection_cost`: BSD200 crops, never a test set; per cell the larger of the measured and the
expected PSNR cost) with every convolution int8 and with the first and last in fp32, for each calibration method
asked. With --validate, also the cost the export holds against the bar (`vdsr.export.quantize.measure_cost`: Set5 and
Set14 at every trained scale, clean and noisy) of the graph with the first and last in fp32; with --speed, that
graph's rate and the fp32 graph's on this CPU (ONNX Runtime, the network alone on one 552x552 window: the runtime's
512 tile and its halo; the median of 5 runs). Rows of an existing --json file are kept, and a label measured again
keeps its other measurements: a curve over a run's checkpoints builds up across runs of this script. With --equalise,
the int8 graphs are made from the channel-equalised fp32 graph (as the export tries where the plain one keeps
convolutions in fp32).
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import onnx
import typer

from vdsr.bench.calibration import calibration_batches
from vdsr.bench.report import environment
from vdsr.export.equalise import ALPHA, equalised
from vdsr.export.onnx import export_onnx, save_onnx
from vdsr.export.quantize import (
    METHODS,
    Quantiser,
    measure_cost,
    over_bar,
    selection_cost,
    selection_probes,
)
from vdsr.files import atomic_write_text, sha256_file
from vdsr.networks import build_model
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend
from vdsr.runtime.machine import cpu_features
from vdsr.train.checkpoint import load_checkpoint
from vdsr.train.config import config_from_json
from vdsr.weights import load_weights

app = typer.Typer(add_completion=False, help=__doc__)


def fp32_graph(path: Path, out: Path) -> dict[str, Any]:
    """`path` (a weights file, or a training checkpoint: its current weights) as an fp32 graph at `out`; what it is."""
    if path.name == "checkpoint.safetensors" or path.name.endswith("_checkpoint.safetensors"):
        saved = load_checkpoint(path)
        config = config_from_json(saved.info["config"])  # type: ignore[arg-type]
        model = build_model(config.architecture, config.network)
        model.load_state_dict(saved.model)
        scales, facts = list(config.scales), {"step": saved.info["step"], "qat": config.qat, "lr": config.lr}
    else:
        model, scales = load_weights(path)
        facts = {}
    save_onnx(export_onnx(model, scales, sha256_file(path)), out)
    return {"file": str(path), "scales": scales, **facts}


def megapixels_per_second(graph: Path, *, side: int = 552, runs: int = 5) -> float:
    """The network alone on one side x side window: output megapixels per second, the median of `runs` after one."""
    window = np.random.default_rng(0).random((1, 1, side, side), dtype=np.float32)
    times = []
    with OnnxRuntimeBackend(graph) as backend:
        backend(window)
        for _ in range(runs):
            start = time.perf_counter()
            backend(window)
            times.append(time.perf_counter() - start)
    return round(side * side / 1e6 / statistics.median(times), 4)


@app.command()
def main(
    graphs: Annotated[list[str], typer.Argument(help="LABEL=PATH: weights (.safetensors) or a checkpoint.")],
    json_path: Annotated[Path, typer.Option("--json", help="Results file (rows of other labels are kept).")],
    data_dir: Annotated[
        Path | None, typer.Option(envvar="VDSR_DATA_DIR", help="Holds T91, BSD200 (and Set5, Set14: --validate).")
    ] = None,
    method: Annotated[list[str] | None, typer.Option(help="Calibration methods (default: all).")] = None,
    validate: Annotated[
        bool, typer.Option(help="Also the first/last-fp32 graph's cost on Set5 and Set14 (the export's bar).")
    ] = False,
    speed: Annotated[bool, typer.Option(help="Also the first/last-fp32 graph's rate and fp32's on this CPU.")] = False,
    equalise: Annotated[
        bool, typer.Option(help="Quantise the channel-equalised graph (vdsr.export.equalise) instead; rows say so.")
    ] = False,
) -> None:
    rows: dict[str, Any] = json.loads(json_path.read_text())["rows"] if json_path.is_file() else {}
    command = shlex.join(["python", "-m", "vdsr.bench.scripts.int8_qat", *sys.argv[1:]])
    for item in graphs:
        label, _, path = item.partition("=")
        with tempfile.TemporaryDirectory() as tmp:
            graph = Path(tmp) / "fp32.onnx"
            row = fp32_graph(Path(path), graph)
            batches, source, tag = calibration_batches(data_dir, row["scales"]), graph, ""
            if equalise:  # the same function in fp32; costs stay measured against the plain fp32 graph's outputs
                source, tag = Path(tmp) / "equalised.onnx", " equalised"
                onnx.save(equalised(onnx.load(str(graph)), batches, ALPHA), str(source))
            quantise = Quantiser(source, batches, Path(tmp))
            cost = selection_cost(quantise, selection_probes(data_dir, row["scales"]))
            ends = [quantise.convs[0], quantise.convs[-1]]
            for name in method or METHODS:
                for kept, key in (([], f"every_int8{tag}"), (ends, f"first_last_fp32{tag}")):
                    cells = cost(name, kept)
                    ratio = over_bar(cells, share=0.5)  # the export keeps convolutions fp32 while this is > 1
                    row[f"{name} {key}"] = {
                        "max_db": max(cells.values()),
                        "over_half_bar": round(ratio, 3),
                        "cells": cells,
                    }
                    typer.echo(f"{label}: {name} {key}: max {max(cells.values()):.4f} dB, {ratio:.2f}x half the bar")
                if validate:  # the first/last-fp32 graph, the last one quantised
                    cells = measure_cost(graph, quantise(name, ends), data_dir)
                    row[f"{name} first_last_fp32{tag} Set5/Set14"] = {"max_db": max(cells.values()), "cells": cells}
                    typer.echo(f"{label}: {name} first_last_fp32{tag} on Set5/Set14: max {max(cells.values()):.4f} dB")
                if speed:
                    rates = {"fp32": megapixels_per_second(graph), "int8": megapixels_per_second(quantise(name, ends))}
                    row[f"{name} first_last_fp32{tag} speed"] = rates | {"cpu_features": sorted(cpu_features())}
                    typer.echo(f"{label}: {name} first_last_fp32 MP/s: {rates}")
        rows[label] = rows.get(label, {}) | row  # a label's other measurements kept; written after each label
        atomic_write_text(json_path, json.dumps({"rows": rows, "environment": environment(command)}, indent=1) + "\n")


if __name__ == "__main__":
    app()
