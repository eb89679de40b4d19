"""`vdsr-run`: super-resolve an image file or a folder of images with the shipped VDSR (or another model)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vdsr.catalogue import MODELS
from vdsr.console import error_console, exit_on_errors, print_error, safe
from vdsr.errors import EXIT_BACKEND, EXIT_FAILED
from vdsr.runtime.backends.selection import BACKENDS
from vdsr.runtime.folders import DEFAULT_MAX_OUTPUT_PIXELS, plan_jobs
from vdsr.runtime.images import DEFAULT_MAX_PIXELS, output_format
from vdsr.runtime.upscale import check_scale
from vdsr.runtime.upscaler import Upscaler

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    source: Annotated[Path, typer.Argument(help="An image file, or a folder of images.", show_default=False)],
    scale: Annotated[float, typer.Option("--scale", "-s", help="Upscaling factor, 1 < S <= 8 (e.g. 2, 2.5, 3, 4).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output folder; default <folder>_x<S>, or <name>_x<S>.<ext> for a file."),
    ] = None,
    backend: Annotated[str, typer.Option(help=f"auto, or one of: {', '.join(BACKENDS)}.")] = "auto",
    precision: Annotated[
        str,
        typer.Option(help="auto (GPU: fp16; CPU: int8 where the CPU has VNNI, else fp32), fp32, fp16, int8."),
    ] = "auto",
    model: Annotated[
        str | None,
        typer.Option(
            help=f"{', '.join(MODELS)} (shipped; srcnn is x2), or an .onnx / .safetensors file. Default: vdsr.",
            show_default=False,
        ),
    ] = None,
    tile: Annotated[
        int | None,
        typer.Option(
            help="Tile side in output pixels (memory vs batching); default: the backend's, 512.",
            min=1,
            show_default=False,
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(help="Tiles per call; default 1 on CPUs, 4 on GPUs.", min=1, show_default=False),
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include subfolders (mirrored).")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Leave existing outputs alone.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first file that fails.")] = False,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="Output format (png, jpg, webp, tif); default: the input's."),
    ] = None,
    max_pixels: Annotated[
        int,
        typer.Option(
            help="Refuse inputs with more pixels than this (decompression bombs; Pillow refuses over "
            "twice its own limit whatever this says).",
            min=1,
        ),
    ] = DEFAULT_MAX_PIXELS,
    max_output_pixels: Annotated[
        int, typer.Option(help="Refuse results with more pixels than this, before computing them.", min=1)
    ] = DEFAULT_MAX_OUTPUT_PIXELS,
) -> None:
    """Super-resolve images: exit 0 when all were written, 1 when some failed, 2 for bad usage, 4 when a backend
    failure stopped the run."""
    err = error_console()
    with exit_on_errors(err):
        scale = check_scale(scale)
        if fmt:
            output_format(Path(f"x.{fmt.lstrip('.')}"))
        jobs = plan_jobs(source, scale, output, recursive=recursive, fmt=fmt)
        upscaler = Upscaler(model, backend, tile=tile, batch=batch, log=lambda line: err.print(safe(line)),
                            precision=precision)  # fmt: skip
    columns = (
        TextColumn("upscaling"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    start = time.perf_counter()
    with exit_on_errors(err), upscaler, Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("run", total=len(jobs), rate="")
        done = {"pixels": 0}

        def on_image(path: Path, pixels: int) -> None:
            done["pixels"] += pixels
            rate = done["pixels"] / 1e6 / max(time.perf_counter() - start, 1e-9)
            progress.update(task, advance=1, rate=f"{rate:.2f} MP/s")

        report = upscaler.upscale_folder(
            source, scale, output, recursive=recursive, skip_existing=skip_existing, fail_fast=fail_fast, fmt=fmt,
            max_pixels=max_pixels, max_output_pixels=max_output_pixels, on_image=on_image,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    for line in report.failed:
        print_error(err, line, "failed")
    summary = f"{len(report.written)} written, {len(report.skipped)} skipped (existing), {len(report.failed)} failed"
    rate = f"{report.megapixels:.1f} MP out in {seconds:.1f} s ({report.megapixels / max(seconds, 1e-9):.2f} MP/s)"
    err.print(f"{summary}; {rate}")
    if report.stopped:
        print_error(err, f"{report.stopped}; the run stopped, the files written before are complete", "stopped")
        raise typer.Exit(EXIT_BACKEND)
    if report.failed:
        raise typer.Exit(EXIT_FAILED)
