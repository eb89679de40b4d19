"""The PSNR/SSIM cost of fp16 arithmetic: the same network as an fp32 and an fp16 ONNX graph, Set5 and Set14 x 3
scales through the bench protocol, side by side (bar: at most 0.005 dB per cell).

Run: python -m vdsr.bench.scripts.fp16_cost --fp32 models/vdsr.onnx --fp16 models/vdsr_fp16.onnx \
     --data-dir ../shared/datasets --json bench/results/fp16_cost_cpu.json --markdown bench/results/fp16_cost_cpu.md
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from vdsr.bench.datasets import resolve_dataset
from vdsr.bench.harness import backend_runner, run_bench
from vdsr.bench.report import environment
from vdsr.errors import VdsrError
from vdsr.files import atomic_write_text
from vdsr.model import Model
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend
from vdsr.runtime.console import error_console, exit_on_errors
from vdsr.scale import parse_scales

BAR_DB = 0.005
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    fp32: Annotated[Path, typer.Option("--fp32", help="The fp32 graph.")],
    fp16: Annotated[Path, typer.Option("--fp16", help="The fp16 graph of the same weights.")],
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
    dataset: Annotated[list[str], typer.Option("--dataset", "-d")] = ["Set5", "Set14"],
    scale: Annotated[list[str], typer.Option("--scale", "-s", help="Repeatable or comma list.")] = ["2,3,4"],
    json_path: Annotated[Path | None, typer.Option("--json")] = None,
    markdown_path: Annotated[Path | None, typer.Option("--markdown")] = None,
) -> None:
    with exit_on_errors(error_console()):
        scales = parse_scales(scale)  # bad usage: exit 2
    try:
        datasets = [resolve_dataset(name, data_dir) for name in dataset]
        backends = {"fp32": OnnxRuntimeBackend(fp32), "fp16": OnnxRuntimeBackend(fp16)}
    except VdsrError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    graphs = {
        precision: next(iter(Model.load(path).graphs.values())) for precision, path in (("fp32", fp32), ("fp16", fp16))
    }
    for precision, graph in graphs.items():
        if graph.precision != precision:
            typer.echo(
                f"error: {graph.path} is not an {precision} graph of this package (its precision: {graph.precision})",
                err=True,
            )
            raise typer.Exit(1)
    if graphs["fp32"].weights_sha256 != graphs["fp16"].weights_sha256:
        typer.echo(f"error: {fp32} and {fp16} were exported from different weights", err=True)
        raise typer.Exit(1)
    run = run_bench(datasets, scales, [backend_runner(b, name) for name, b in backends.items()])
    cells = {(c.dataset, c.scale, c.method): c for c in run.cells}
    for note in dict.fromkeys(run.left_out):
        typer.echo(f"left out: {note}", err=True)
    rows = []
    for d in datasets:
        for s in scales:
            if (d.name, s, "fp32") not in cells:
                continue
            full, half = cells[(d.name, s, "fp32")], cells[(d.name, s, "fp16")]
            rows.append(
                {
                    "dataset": d.name,
                    "scale": s,
                    "psnr_fp32": full.psnr,
                    "psnr_fp16": half.psnr,
                    "cost_db": full.psnr - half.psnr,
                    "ssim_fp32": full.ssim,
                    "ssim_fp16": half.ssim,
                    "within_bar": abs(full.psnr - half.psnr) <= BAR_DB,
                }
            )
    lines = [
        "| set | scale | PSNR fp32 | PSNR fp16 | cost dB | SSIM fp32 | SSIM fp16 |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dataset']} | x{r['scale']} | {r['psnr_fp32']:.4f} | {r['psnr_fp16']:.4f} | {r['cost_db']:+.4f} | "
        f"{r['ssim_fp32']:.5f} | {r['ssim_fp16']:.5f} |"
        for r in rows
    ]
    for line in lines:
        typer.echo(line)
    env = environment(shlex.join(["python", "-m", "vdsr.bench.scripts.fp16_cost", *sys.argv[1:]]))
    if json_path:
        atomic_write_text(
            json_path, json.dumps({"results": rows, "bar_db": BAR_DB, "environment": env}, indent=1) + "\n"
        )
    if markdown_path:
        atomic_write_text(markdown_path, "\n".join([*lines, "", f"Command: `{env['command']}`", ""]))
    for failure in run.failures:
        typer.echo(f"failed: {failure.error}", err=True)
    if run.failures or not rows:
        typer.echo("error: " + ("some images failed" if run.failures else "no cell was scored"), err=True)
        raise typer.Exit(1)
    if not all(r["within_bar"] for r in rows):
        typer.echo(f"fp16 costs more than {BAR_DB} dB in some cell", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
