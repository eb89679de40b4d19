"""How far the shipped ONNX graphs are from their PyTorch weights: max |ONNX Runtime CPU - PyTorch fp32| per shape.

Run: python -m vdsr.bench.scripts.parity --json bench/results/parity_cpu.json
Inputs are uniform random luminance in [0, 1], in the shapes of the export issue (odd, portrait, landscape, batch > 1,
one pixel). Every graph of a model is compared with the fp32 PyTorch model: fp32 should be at float rounding
(<= 1e-5), fp16 and int8 show their precision's error (their PSNR cost is measured on images by fp16_cost and the
int8 export).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from vdsr.bench.report import environment
from vdsr.catalogue import MODELS
from vdsr.files import atomic_write_text, sha256_file
from vdsr.model import Model
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend
from vdsr.weights import load_weights

app = typer.Typer(add_completion=False, help=__doc__)

SHAPES = ((1, 1, 17, 33), (3, 1, 64, 48), (1, 1, 48, 64), (1, 1, 1, 1), (2, 1, 101, 77))


@app.command()
def main(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the results.")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    rng = np.random.default_rng(seed)
    inputs = [rng.random(shape, dtype=np.float32) for shape in SHAPES]
    rows = []
    hashes: dict[str, str] = {}  # the shipped graphs measured
    for name in MODELS:
        shipped = Model.load(name)
        if shipped.weights is None:
            typer.echo(f"{name}: not shipped, skipped", err=True)
            continue
        model, _ = load_weights(shipped.weights)
        for precision, file in shipped.graphs.items():
            graph = file.path
            backend = OnnxRuntimeBackend(shipped, precision)
            hashes[graph.name] = sha256_file(graph)
            for x in inputs:
                with torch.inference_mode():
                    expected = model(torch.from_numpy(x)).numpy()
                diff = float(np.abs(backend(x).astype(np.float32) - expected).max())
                shape = "x".join(map(str, x.shape))
                rows.append(
                    {"model": name, "graph": graph.name, "precision": precision, "shape": shape, "max_abs": diff}
                )
                typer.echo(f"{graph.name:16} {shape:12} max |ORT - torch fp32| = {diff:.2e}")
    document = {"results": rows, "settings": {"seed": seed, "graphs_sha256": hashes}}
    document["environment"] = environment(shlex.join(["python", "-m", "vdsr.bench.scripts.parity", *sys.argv[1:]]))
    atomic_write_text(json_path, json.dumps(document, indent=1) + "\n")
    typer.echo(f"wrote {json_path}")


if __name__ == "__main__":
    app()
