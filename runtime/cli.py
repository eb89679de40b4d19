"""`vdsr-run`: super-resolve an image file or a folder of images with the shipped VDSR (or another model)."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vdsr.catalogue import MODELS
from vdsr.errors import EXIT_BACKEND, EXIT_FAILED, EXIT_INTERRUPTED, UsageError
from vdsr.model import Model
from vdsr.runtime.backends.specs import BackendChoice, PrecisionChoice, Request
from vdsr.runtime.console import (
    Command,
    WorkProgress,
    error_console,
    exit_on_errors,
    figure,
    make_app,
    print_error,
    printable,
    require_modules,
    safe,
    version_option,
)
from vdsr.runtime.images import DEFAULT_MAX_PIXELS, OutputFormat
from vdsr.runtime.machine import GIB, checked_memory_budget
from vdsr.runtime.model_choice import is_auto
from vdsr.runtime.pipeline import DEFAULT_MAX_OUTPUT_PIXELS, Interrupted
from vdsr.runtime.places import MAX_DEPTH, is_uri, local
from vdsr.runtime.planning import FileFailure, FolderReport, Job, RunCounts, nothing_found, plan
from vdsr.runtime.ray_data import RayOptions, upscale_folder_on_ray
from vdsr.runtime.upscaler import Upscaler
from vdsr.runtime.video import VideoSettings, is_video
from vdsr.runtime.video_planes import DEFAULT_CRF
from vdsr.scale import check_scale

app = make_app(__doc__)
MEASURED_SECONDS = 0.5  # a speed is shown once the run has taken this long (before, it would be mostly noise)


@app.command(cls=Command)
def main(
    source: Annotated[
        str,
        typer.Argument(
            help="An image or video file, or a folder of them (with --ray, also a URI: s3://bucket/photos).",
            show_default=False,
            metavar="INPUT",
        ),
    ],
    scale: Annotated[float, typer.Option("--scale", "-s", help="Upscaling factor, 1 < S <= 8 (e.g. 2, 2.5, 3, 4).")],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            show_default="<folder>_x<S>, or <name>_x<S>.<ext> beside a file",
            help="Output folder; for a single input file, a file name (out.png, out.mkv) names the result itself. "
            "With --ray, also a URI.",
        ),
    ] = None,
    backend: Annotated[
        BackendChoice, typer.Option(case_sensitive=False, help="auto: the fastest that runs here.")
    ] = BackendChoice.auto,
    precision: Annotated[
        PrecisionChoice,
        typer.Option(
            case_sensitive=False, help="auto: fp16 on GPUs; int8 on CPUs with AVX2/VNNI/dotprod if within its bar."
        ),
    ] = PrecisionChoice.auto,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda or cuda:N: where to run (backends of other devices are not tried).")
    ] = "auto",
    model: Annotated[
        str,
        typer.Option(
            help=f"auto: vdsr for lossless images, vdsr_real for JPEGs, videos and scales under 2 (measured best "
            f"for each); or a shipped model ({', '.join(MODELS)}; srcnn is x2), or an .onnx / .safetensors file."
        ),
    ] = "auto",
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="The geometric self-ensemble: the mean over 8 flips and rotations (Set5 x2: +0.23 dB, 9.8x the time).",
        ),
    ] = False,
    tile: Annotated[
        int | None,
        typer.Option(
            help="Tile side in output pixels.",
            min=1,
            show_default="ONNX Runtime CPU: fitted to --memory-budget; else 512",
        ),
    ] = None,
    memory_budget: Annotated[
        float | None,
        typer.Option(
            "--memory-budget",
            help="GiB of working memory for the network on CPUs: whole images when they fit.",
            min=0.001,
            show_default="a quarter of memory, 0.25 to 4 GiB",
        ),
    ] = None,
    batch: Annotated[
        int | None, typer.Option(help="Tiles per call.", min=1, show_default="the backend's: 1 on CPUs, 4 on GPUs")
    ] = None,
    recursive: Annotated[
        bool,
        typer.Option(
            "--recursive",
            "-r",
            help=f"Include subfolders (mirrored), {MAX_DEPTH} levels deep at most (a deeper folder is refused, "
            "nothing done); links to folders are not followed.",
        ),
    ] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Leave existing outputs alone.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first file that fails.")] = False,
    fmt: Annotated[
        OutputFormat | None,
        typer.Option(
            "--format", case_sensitive=False, help="Output format.", show_default="the input's, png for a GIF"
        ),
    ] = None,
    codec: Annotated[
        str | None,
        typer.Option(
            help="Videos: FFmpeg's encoder of the upscaled stream (libx264, libx265, ffv1, libvpx-vp9, ...).",
            show_default="libx264 for .mp4/.mov/.ts/.flv, ffv1 (lossless) for .mkv/.avi, libvpx-vp9 for .webm",
        ),
    ] = None,
    crf: Annotated[
        int | None,
        typer.Option(
            help="Videos: the constant-rate quality of libx264/libx265/VP9/SVT-AV1 (lower is better).",
            min=0,
            max=63,
            show_default=str(DEFAULT_CRF),
        ),
    ] = None,
    pix_fmt: Annotated[
        str | None,
        typer.Option(
            "--pix-fmt",
            help="Videos: the encoder's pixel format (yuv420p, yuv420p10le, ...).",
            show_default="the source's (10-bit stays 10-bit where the encoder allows)",
        ),
    ] = None,
    max_pixels: Annotated[
        int,
        typer.Option(
            help="Refuse inputs with more pixels than this (decompression bombs; Pillow refuses over twice "
            "its own limit whatever this says).",
            min=1,
        ),
    ] = DEFAULT_MAX_PIXELS,
    max_output_pixels: Annotated[
        int, typer.Option(help="Refuse results with more pixels than this, before computing them.", min=1)
    ] = DEFAULT_MAX_OUTPUT_PIXELS,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run on Ray Data: local (a cluster here), auto (this machine's), ray://host:port.",
            show_default="no Ray",
            metavar="ADDRESS",
        ),
    ] = None,
    ray_actors: Annotated[int, typer.Option("--ray-actors", help="--ray: actors, one backend each.", min=1)] = 2,
    ray_cpus: Annotated[float, typer.Option("--ray-cpus", help="--ray: CPUs per actor.", min=0.0)] = 1.0,
    ray_gpus: Annotated[
        float | None,
        typer.Option("--ray-gpus", help="--ray: GPUs per actor.", min=0.0, show_default="1 if the cluster has GPUs"),
    ] = None,
    version: Annotated[bool, version_option()] = False,
) -> None:
    """Super-resolve images: exit 0 when all were written, 1 when some failed, 2 for bad usage, 4 when a backend
    failure stopped the run."""
    err = error_console()
    # Pillow warns of what it skips in a file it still decodes (corrupt EXIF): its source lines mid-run, no file name
    warnings.filterwarnings("ignore", module=r"PIL\.")
    with exit_on_errors(err):
        scale = check_scale(scale)
        suffix = fmt.value if fmt else None
        budget = None if memory_budget is None else checked_memory_budget(memory_budget * GIB)
        if ray is None and (is_uri(source) or is_uri(output)):
            raise UsageError(
                f"{source if is_uri(source) else output}: URIs are read and written on Ray runs; add "
                "--ray local (or a cluster's address), or give a local path"
            )
        args: dict[str, object] = {"model": model, "backend": backend.value, "tile": tile, "batch": batch}
        args |= {"precision": precision.value, "device": device, "memory_budget": budget, "tta": tta}
        if ray is None:
            jobs = plan(
                local(source), scale, None if output is None else local(output), recursive=recursive, fmt=suffix
            )
        else:
            if fail_fast:
                raise UsageError("--fail-fast is for a plain run; --ray runs every file")
            if codec or crf is not None or pix_fmt:
                raise UsageError("--codec, --crf and --pix-fmt are for a plain run; --ray writes videos as by default")
            _on_ray(
                source,
                scale,
                output,
                address=ray,
                actors=ray_actors,
                cpus=ray_cpus,
                gpus=ray_gpus,
                args=args,
                recursive=recursive,
                skip_existing=skip_existing,
                fmt=suffix,
                max_pixels=max_pixels,
                max_output_pixels=max_output_pixels,
                err=err,
            )
            return
        upscaler = Upscaler(**args, log=lambda line: err.print(safe(line)))  # type: ignore[arg-type]
        if not jobs:
            err.print(safe(nothing_found(source, recursive=recursive)))
    start = time.perf_counter()
    try:
        with (
            exit_on_errors(err),
            upscaler,
            WorkProgress(err, "upscaling", total=len(jobs), unit="files", last_line=False) as progress,
        ):
            shown = _Shown(progress, jobs, start)
            report = upscaler.upscale_jobs(
                jobs,
                scale,
                skip_existing=skip_existing,
                fail_fast=fail_fast,
                max_pixels=max_pixels,
                max_output_pixels=max_output_pixels,
                on_image=shown.on_image,
                on_band=shown.on_band,
                on_frame=shown.on_frame,
                video=VideoSettings(codec, crf, pix_fmt),
            )
    except KeyboardInterrupt as stop:  # Ctrl-C: what was done, and how to do the rest
        _summarize(err, stop.report if isinstance(stop, Interrupted) else FolderReport(), time.perf_counter() - start)
        print_error(
            err,
            "stopped (Ctrl-C, SIGTERM or SIGHUP); the files written are whole: rerun with --skip-existing for the rest",
            "interrupted",
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    _finish(err, report, time.perf_counter() - start)


class _Shown:
    """What a plain run's progress line shows: images finished (written, skipped or failed) and the fraction of the
    one being upscaled, its name, and the output pixels per second once some are written."""

    def __init__(self, progress: WorkProgress, jobs: list[Job], start: float) -> None:
        self.progress, self.start = progress, start
        self.images, self.upscaled, self.pixels = 0, 0, 0  # finished; through the network; written
        self.waiting = dict.fromkeys(job.source.shown for job in jobs)  # neither, in the order they run
        self.frames = ""  # the video being upscaled: frames done (of how many) and their rate
        self.video_start = 0.0

    def on_image(self, path: Path | str, pixels: int) -> None:  # once the image is written, a little later
        self.images += 1
        self.pixels += pixels
        self.waiting.pop(path, None)
        self.progress.update(completed=max(self.images, self.upscaled), info=self.info())

    def on_band(self, fraction: float) -> None:  # the image being upscaled now
        if fraction >= 1.0:
            self.upscaled += 1
            if self.waiting:  # images go through the network in order: the first waiting is this one
                self.waiting.pop(next(iter(self.waiting)))
        current = self.upscaled + (fraction if fraction < 1.0 else 0.0)
        self.progress.update(completed=max(self.images, current), info=self.info())

    def on_frame(self, done: int, total: int | None) -> None:  # a video's frame through the network
        now = time.perf_counter()
        if done == 1:
            self.video_start = now
        rate = (done - 1) / (now - self.video_start) if done > 1 and now > self.video_start else 0.0
        self.frames = f"frame {done}" + (f"/{total}" if total else "") + (f", {figure(rate)} fps" if rate else "")
        self.progress.update(info=self.info())

    def info(self) -> str:
        name = printable(os.path.basename(str(next(iter(self.waiting), ""))))
        frames = self.frames if is_video(name) else ""
        return ", ".join(filter(None, [name, frames, _speed(self.pixels / 1e6, time.perf_counter() - self.start)]))


def _speed(megapixels: float, seconds: float) -> str:
    """Output megapixels a second, or "" before that can be measured (nothing written yet, or in too short a time
    for a meaningful figure): a run never shows 0.00 MP/s."""
    return f"{figure(megapixels / seconds)} MP/s" if megapixels > 0 and seconds >= MEASURED_SECONDS else ""


def _on_ray(
    source: str,
    scale: float,
    output: str | None,
    *,
    address: str,
    actors: int,
    cpus: float,
    gpus: float | None,
    args: dict[str, object],
    recursive: bool,
    skip_existing: bool,
    fmt: str | None,
    max_pixels: int,
    max_output_pixels: int,
    err: Console,
) -> None:
    """The run on Ray (vdsr.runtime.ray_data), once what the driver can check is checked: failures one line each as
    they come, progress while it runs (the total once every folder is listed), then a plain run's summary and exit."""
    require_modules(("ray",), needs="--ray", extra="ray")
    Request(str(args["backend"]), str(args["precision"]), str(args["device"]))  # a request that cannot exist
    if not is_auto(args["model"]):
        Model.load(args["model"])  # type: ignore[arg-type]  # a model that is not there: refused here, not in each actor
    if address == "local":  # the actors run on this machine: what they open can be checked, and said, here
        with Upscaler(**args, log=lambda line: err.print(safe(line))) as upscaler:  # type: ignore[arg-type]
            upscaler.check_scale(scale)  # and said here: a scale the model was not trained for
    gpu = "a GPU each if the cluster has GPUs" if gpus is None else f"{gpus:g} GPU each"
    err.print(f"Ray at {safe(address)}: {actors} actors, {cpus:g} CPU each, {gpu}")
    report, start = RunCounts(), time.perf_counter()

    def progress_of(report: RunCounts) -> None:
        done = sum(report.counts())
        speed = _speed(report.megapixels, time.perf_counter() - start)
        progress.update(completed=done, total=report.planned if report.listed else None, info=speed)

    def failed(failure: FileFailure) -> None:
        print_error(err, str(failure), "failed")

    try:
        with WorkProgress(err, "upscaling", total=None, unit="files", last_line=False) as progress:
            upscale_folder_on_ray(
                source,
                scale,
                output,
                ray=RayOptions(address, actors, cpus, gpus),
                upscaler=args,
                recursive=recursive,
                skip_existing=skip_existing,
                fmt=fmt,
                max_pixels=max_pixels,
                max_output_pixels=max_output_pixels,
                report=report,
                on_failure=failed,
                on_progress=progress_of,
                on_warning=lambda line: print_error(err, line, "warning"),
            )
    except KeyboardInterrupt:  # Ctrl-C: what was done, and how to do the rest
        _summarize(err, report, time.perf_counter() - start)
        print_error(
            err,
            "stopped (Ctrl-C, SIGTERM or SIGHUP); the files written are whole: rerun with --skip-existing for the rest",
            "interrupted",
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if report.listed and not report.planned:
        err.print(safe(nothing_found(source, recursive=recursive)))
    _finish(err, report, time.perf_counter() - start)


def _summarize(err: Console, report: FolderReport | RunCounts, seconds: float) -> None:
    """The failures one line each (a Ray run's were told as they came), then the one closing line: what was
    written, skipped and failed, and how fast."""
    if isinstance(report, FolderReport):
        for line in report.warnings:
            print_error(err, line, "warning")
        for failure in report.failed:
            print_error(err, str(failure), "failed")
    written, skipped, failed = report.counts()
    summary = f"{written} written, {skipped} skipped (existing), {failed} failed"
    if report.megapixels > 0:
        speed = _speed(report.megapixels, seconds)
        summary += f"; {figure(report.megapixels)} MP out in {seconds:.1f} s" + (f" ({speed})" if speed else "")
    err.print(summary)


def _finish(err: Console, report: FolderReport | RunCounts, seconds: float) -> None:
    """The summary and the exit code (the same for a plain run and a Ray run)."""
    _summarize(err, report, seconds)
    if report.stopped:
        print_error(err, f"{report.stopped}; the run stopped, the files written before are complete", "stopped")
        raise typer.Exit(EXIT_BACKEND)
    if report.counts()[2]:
        raise typer.Exit(EXIT_FAILED)
