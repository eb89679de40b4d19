"""The one pipeline every run of files goes through: jobs planned by vdsr.runtime.planning, their inputs decoded from
where they are (vdsr.runtime.places: local files, URIs), upscaled in groups (tiles batched across the images of a
group, vdsr.runtime.batching), encoded and written whole where they go. Plain runs, store runs and Ray actors run
their jobs through `run_jobs`; the API's lists of images and arrays go through the same upscaling step
(vdsr.runtime.upscaler.Upscaler.upscale_group).

Files are decoded and encoded on worker threads while the backend computes, with at most a few images in flight, so
the backend never waits on the disk and memory stays bounded. A file that cannot be read, upscaled or written is one
failure line and the others still run; a backend failure stops the run (every later file would fail the same way),
after the results already computed are written.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import BackendError, ImageError
from vdsr.runtime.exif import JPEG_MAX_EXIF
from vdsr.runtime.images import OUTPUT_FORMATS, LoadedImage, output_format
from vdsr.runtime.picture import check_output
from vdsr.runtime.places import Place
from vdsr.runtime.planning import FileFailure, FolderReport, Job

IN_FLIGHT = 2  # decoded images waiting for the backend, and results waiting to be written
GROUP_PIXELS = 16_000_000  # output pixels of the images upscaled together at most (their windows are held)
# 2**31 pixels: a 6 GiB RGB uint8 result; memory is about 3x the input as float32 plus the output (see the README)
DEFAULT_MAX_OUTPUT_PIXELS = 2**31

# The upscaling step: a group of decoded images -> for each, its result's pixels or the ImageError it failed with
UpscaleGroup = Callable[[list[LoadedImage]], list[Any]]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: still a KeyboardInterrupt, carrying the report of the files finished before it (results
    already computed when it came were written whole and are in it; nothing else was started)."""

    def __init__(self, report: FolderReport) -> None:
        super().__init__()
        self.report = report


def fit_format(
    loaded: LoadedImage, target: Place, scale: float, *, max_output_pixels: int, warn: Callable[[str], None]
) -> LoadedImage:
    """Check before computing that the result fits: at most `max_output_pixels`, within the format's size limit,
    an EXIF block JPEG can hold (64 KiB), and an alpha channel the format can hold (one opaque everywhere is dropped
    for JPEG/BMP/PPM; any other is an ImageError naming `target`, transparency would be lost); PGM takes gray only
    (RGB with R = G = B becomes gray). An ICC profile the format cannot hold (TGA, BMP, PPM) is dropped and `warn`
    told why (the pixels are right, their colour space is not said)."""
    fmt = output_format(target.path)
    height, width = check_output(loaded.pixels.shape, scale, max_output_pixels=max_output_pixels, name=target.shown)
    limit = {"JPEG": 65_500, "WEBP": 16_383}.get(fmt)
    if limit is not None and max(height, width) > limit:
        raise ImageError(target.shown, f"{width}x{height} is over {fmt}'s limit of {limit} pixels a side; write PNG")
    exif_bytes = len(loaded.exif or b"")
    if fmt == "JPEG" and exif_bytes > JPEG_MAX_EXIF:  # Pillow's writer would fail, after the work
        raise ImageError(
            target.shown, f"JPEG cannot hold its EXIF block of {exif_bytes} bytes; write PNG, WebP or TIFF"
        )
    if not OUTPUT_FORMATS[fmt][0] and loaded.has_alpha:
        if loaded.alpha is not None and not bool(np.all(loaded.alpha == 1)):
            raise ImageError(target.shown, f"{fmt} cannot hold its transparency; write PNG, WebP or TIFF")
        loaded = replace(loaded, pixels=loaded.color, has_alpha=False)
    if target.path.suffix.lower() == ".pgm" and loaded.pixels.shape[-1] == 3:  # PIL would write colour as P6 in it
        if not loaded.is_gray:
            raise ImageError(target.shown, "PGM holds gray only; write PPM or PNG for colour")
        loaded = replace(loaded, pixels=loaded.pixels[..., :1])
    if loaded.icc_profile and not OUTPUT_FORMATS[fmt][2]:
        warn(f"its ICC colour profile is not kept ({fmt} holds none; write PNG, TIFF, WebP or JPEG)")
        loaded = replace(loaded, icc_profile=None)
    return loaded


def run_jobs(
    jobs: list[Job],
    upscale: UpscaleGroup,
    report: FolderReport,
    *,
    scale: float,
    fail_fast: bool,
    max_pixels: int,
    max_output_pixels: int,
    on_image: Callable[[Path | str, int], None],
    group: int = 1,
) -> FolderReport:
    """Decode, upscale and write every job: decoding and encoding on worker threads, `upscale` here, on groups of up
    to `group` images (and GROUP_PIXELS output pixels). Failures go into `report` one line each; a BackendError stops
    the run (report.stopped) once the results already made are written; Ctrl-C raises Interrupted with the report."""
    stop = threading.Event()
    with ThreadPoolExecutor(max(2, min(4, (os.cpu_count() or 2) // 2)), "vdsr-io") as io:
        writes: deque[tuple[Job, Future[int]]] = deque()

        def finish(job: Job, pixels: int = 0, error: FileFailure | None = None) -> None:
            if error is not None:
                report.failed.append(error)
                if fail_fast:
                    stop.set()
            else:
                report.written.append(job.target.shown)
                report.megapixels += pixels / 1e6
            on_image(job.source.shown, pixels)

        def failed(job: Job, error: ImageError) -> None:  # unreadable, or its result cannot be written as asked
            output = None if error.path == job.source.shown else error.path
            finish(job, error=FileFailure(job.source.shown, error.cause, output=output))

        def finish_write(job: Job, write: Future[int]) -> None:
            try:
                finish(job, write.result())
            except ImageError as error:  # the save names the output
                failed(job, error)

        def run(batch: list[tuple[Job, LoadedImage]]) -> None:
            try:
                outcomes = upscale([loaded for _, loaded in batch])
            except BackendError as error:
                report.stopped = f"{batch[0][0].source}: {error}"
                stop.set()
                return
            except MemoryError:  # while the group's windows were joined: each of its images fails, the run goes on
                outcomes = [ImageError(job.source.shown, "not enough memory to upscale it") for job, _ in batch]
            for (job, loaded), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, ImageError):
                    failed(job, outcome)
                    continue
                encode = partial(_write, job.target, outcome, icc_profile=loaded.icc_profile, exif=loaded.exif)
                writes.append((job, io.submit(encode)))
            batch.clear()  # the decoded pixels are not needed while the results are encoded
            while len(writes) > IN_FLIGHT or (writes and writes[0][1].done()):
                finish_write(*writes.popleft())

        waiting: list[tuple[Job, LoadedImage]] = []
        size = 0
        decoded_jobs = _prefetch(io, jobs, max_pixels=max_pixels, stop=stop, ahead=max(IN_FLIGHT, group))
        try:
            for job, decoded in decoded_jobs:
                try:
                    loaded = fit_format(
                        decoded.result(),
                        job.target,
                        scale,
                        max_output_pixels=max_output_pixels,
                        warn=partial(_warn, report, job),
                    )
                except ImageError as error:
                    failed(job, error)
                    continue
                except MemoryError:
                    finish(job, error=FileFailure(job.source.shown, "not enough memory to upscale it"))
                    continue
                del decoded
                waiting.append((job, loaded))
                size += loaded.pixels.shape[0] * loaded.pixels.shape[1] * scale**2
                if len(waiting) >= group or size >= GROUP_PIXELS:
                    run(waiting)
                    size = 0
            if waiting and not stop.is_set():
                run(waiting)
            while writes:
                finish_write(*writes.popleft())
        except KeyboardInterrupt:  # Ctrl-C: the results computed are written (whole), nothing else is started
            stop.set()
            decoded_jobs.close()  # decodes not started are cancelled
            while writes:
                finish_write(*writes.popleft())
            raise Interrupted(report) from None
    return report


def _prefetch(
    io: ThreadPoolExecutor, jobs: list[Job], *, max_pixels: int, stop: threading.Event, ahead: int
) -> Generator[tuple[Job, Future[LoadedImage]], None, None]:
    """Jobs in order with their decoding already under way, at most `ahead` ahead of the consumer."""
    pending: deque[tuple[Job, Future[LoadedImage]]] = deque()
    queue = iter(jobs)
    try:
        while not stop.is_set():
            while len(pending) < ahead and (job := next(queue, None)) is not None:
                load = partial(job.source.files.load, job.source.path, max_pixels=max_pixels, shown=job.source.shown)
                pending.append((job, io.submit(load)))
            if not pending:
                return
            yield pending.popleft()
    finally:  # stopped, or the consumer left the loop: decodes not yet started are not needed
        for _, future in pending:
            future.cancel()


def _warn(report: FolderReport, job: Job, cause: str) -> None:
    report.warnings.append(f"{job.source.shown}: {cause}")


def _write(target: Place, pixels: NDArray[Any], *, icc_profile: bytes | None, exif: bytes | None) -> int:
    target.files.save(target.path, pixels, shown=target.shown, icc_profile=icc_profile, exif=exif)
    return int(pixels.shape[0] * pixels.shape[1])
