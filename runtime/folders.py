"""Folder runs: which files go where (planning), and the pipeline that decodes, upscales and encodes them.

Files are decoded and encoded on worker threads while the backend computes, with at most a few images in flight, so
the backend never waits on the disk and memory stays bounded. A file that cannot be read, upscaled or written is one
failure line and the others still run; a backend failure stops the run (every later file would fail the same way),
after the results already computed are written.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path, PurePath
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import BackendError, ImageError, UsageError
from vdsr.files import unwritable_folder
from vdsr.runtime.images import (
    IMAGE_SUFFIXES,
    OUTPUT_FORMATS,
    LoadedImage,
    load_image,
    output_format,
    save_image,
)
from vdsr.runtime.upscale import check_output

PathT = TypeVar("PathT", bound=PurePath)
IN_FLIGHT = 2  # decoded images waiting for the backend, and results waiting to be written
# 2**31 pixels: a 6 GiB RGB uint8 result; memory is about 3x the input as float32 plus the output (see the README)
DEFAULT_MAX_OUTPUT_PIXELS = 2**31


def scale_label(scale: float) -> str:
    """2 -> '2', 2.5 -> '2.5': the suffix of default output names (photo_x2.png, photos_x2.5/)."""
    return f"{scale:.10g}"  # enough digits that two different scales never share a folder


@dataclass(frozen=True)
class FileFailure:
    """A file that failed: the input it came from, the output it was for when that is what failed, and why (paths,
    or URIs on a store: vdsr.runtime.stores). str() is its one line."""

    path: Path | str
    cause: str
    output: Path | str | None = None

    def __str__(self) -> str:
        return f"{self.path} -> {self.output}: {self.cause}" if self.output else f"{self.path}: {self.cause}"


@dataclass
class FolderReport:
    written: list[Path | str] = field(default_factory=list)  # paths, or URIs on a store
    skipped: list[Path | str] = field(default_factory=list)  # outputs that existed (--skip-existing)
    failed: list[FileFailure] = field(default_factory=list)  # the file and the cause; str(): one line
    megapixels: float = 0.0  # output pixels written, in millions
    stopped: str | None = None  # the backend failure that stopped the run before every file was done

    def summary(self) -> str:
        """One line: what was written, skipped and failed, and whether a backend failure stopped the run."""
        line = (f"{len(self.written)} written ({self.megapixels:.1f} MP), {len(self.skipped)} skipped (existing), "
                f"{len(self.failed)} failed")  # fmt: skip
        return line + (f"; stopped: {self.stopped}" if self.stopped else "")

    def __str__(self) -> str:
        return "\n".join([self.summary(), *(f"failed: {failure}" for failure in self.failed)])


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file or folder (case-insensitive file systems and links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False  # one of them does not exist


def plan_jobs(
    source: Path, scale: float, output: Path | None = None, *, recursive: bool = False, fmt: str | None = None
) -> list[Job]:
    """Input file(s) -> output paths. A folder's images mirror its tree under `output` (default <folder>_x<S>). A
    file goes to `output` itself when that names an image file (an image suffix, not an existing folder: Real-ESRGAN's
    convention), else to `output`/<name>; by default to <stem>_x<S><suffix> beside it. Output names take `fmt`'s
    suffix if given. UsageError for a missing input, an output folder inside the input folder, one that cannot be
    written, or an output file whose suffix contradicts `fmt`."""
    label = scale_label(scale)
    named = Path(os.path.abspath(source))  # "." and ".." get a name; a link keeps its own (results go beside it)
    suffix = f".{fmt.lower().lstrip('.')}" if fmt else None

    if source.is_file():
        if output is not None and names_a_file(output):
            if suffix and output_format(output) != output_format(Path(f"x{suffix}")):
                raise UsageError(f"{output}: the output file's suffix says another format than --format {fmt}")
            target = output
        else:
            target = result_name(
                output / source.name if output else named.with_name(f"{named.stem}_x{label}{named.suffix}"), suffix
            )
        if _same_file(target, source) or Path(os.path.abspath(target)) == named:
            raise UsageError(f"{target}: the output would replace the input; give another --output")
        root = target.parent
        jobs = [Job(source, target)]
    elif source.is_dir():
        root = Path(os.path.abspath(output or named.with_name(f"{named.name}_x{label}")))
        if _same_file(root, source) or (recursive and root.resolve().is_relative_to(source.resolve())):
            raise UsageError(f"{root}: the output folder must not be the input folder or inside it")
        jobs = [Job(p, result_name(root / p.relative_to(source), suffix)) for p in folder_images(source, recursive)]
    else:
        raise UsageError(f"{source}: no such file or folder")
    problem = unwritable_folder(root)
    if problem:
        raise UsageError(problem)
    return jobs


def result_name(target: PathT, suffix: str | None) -> PathT:
    """An output's name: with --format's `suffix` if given; a GIF's result is a PNG (a local path, or a store's)."""
    return target.with_suffix(suffix) if suffix else target if writable(target) else target.with_suffix(".png")


def folder_images(folder: Path, recursive: bool) -> list[Path]:
    """The images a run of `folder` reads, sorted: image suffixes, no hidden files or folders, links to folders not
    followed; not FIFOs or folders; broken links kept (they are reported)."""
    found = sorted(list_folder(folder, recursive=recursive))
    return [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and (p.is_file() or p.is_symlink())]  # fmt: skip


def names_a_file(output: Path) -> bool:
    """Whether `output`, given for a single input file, names the result file itself: an image suffix, and not an
    existing folder (`out.png/` made by an earlier version stays a folder). UsageError for an image suffix results
    are not written in (`out.gif`), rather than a folder of that name."""
    if output.is_dir() or output.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    output_format(output)
    return True


def writable(path: PurePath) -> bool:
    """Whether results can be written in the format `path`'s suffix names (a GIF's result is written as PNG)."""
    try:
        output_format(path)
    except UsageError:
        return False
    return True


def list_folder(folder: Path, *, recursive: bool) -> list[Path]:
    """The entries of `folder` (and of its subfolders, not following links to folders, when `recursive`). UsageError
    naming the folder that cannot be listed: a silently skipped subfolder would look like a complete run."""
    if not recursive:
        try:
            return list(folder.iterdir())
        except OSError as error:
            raise UsageError(f"{folder}: cannot list this folder ({error.strerror or error})") from error
    found: list[Path] = []

    def refuse(error: OSError) -> None:
        raise UsageError(f"{error.filename}: cannot list this folder ({error.strerror or error})") from error

    for parent, folders, files in os.walk(folder, onerror=refuse):
        found += [Path(parent, name) for name in [*folders, *files]]
    return found


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def fit_format(loaded: LoadedImage, target: Path, scale: float, *, max_output_pixels: int) -> LoadedImage:
    """Check before computing that the result fits: at most `max_output_pixels`, within the format's size limit,
    and an alpha channel the format can hold (one opaque everywhere is dropped for JPEG/BMP/PPM; any other is an
    ImageError naming `target`, transparency would be lost)."""
    fmt = output_format(target)
    height, width = check_output(loaded.pixels.shape, scale, max_output_pixels=max_output_pixels, name=target)
    limit = {"JPEG": 65_500, "WEBP": 16_383}.get(fmt)
    if limit is not None and max(height, width) > limit:
        raise ImageError(target, f"{width}x{height} is over {fmt}'s limit of {limit} pixels a side; use --format png")
    if not OUTPUT_FORMATS[fmt][0] and loaded.has_alpha:
        if loaded.alpha is not None and not bool(np.all(loaded.alpha == 1)):
            raise ImageError(target, f"{fmt} cannot hold its transparency; use --format png (or webp, tif)")
        loaded = replace(loaded, pixels=loaded.color, has_alpha=False)
    return loaded


def claim_outputs(
    jobs: list[Job], report: FolderReport, *, skip_existing: bool, on_image: Callable[[Path, int], None]
) -> list[Job]:
    """The jobs to run: those whose output exists are skipped (with skip_existing); one whose output is an input of
    the run, or another job's output, is a failure. Inputs are compared by file identity; outputs by name, case-folded
    where the file system ignores case (Photo.png is photo.png there), which is probed, not guessed."""
    todo = []
    claimed: dict[str, Path] = {}  # output (case-folded where case is ignored) -> its input
    ignores_case: dict[Path, bool] = {}
    inputs = {(s.st_dev, s.st_ino) for s in (_stat(job.source) for job in jobs) if s is not None}
    for job in jobs:
        target = _stat(job.target)
        if skip_existing and target is not None:
            report.skipped.append(job.target)
        elif target is not None and (target.st_dev, target.st_ino) in inputs:  # this or another input
            report.failed.append(FileFailure(job.source, f"its output {job.target} is an input; give another --output"))
        elif (key := _name_key(job.target, ignores_case)) in claimed:  # photo.jpg and photo.png with --format png
            report.failed.append(FileFailure(job.source, f"its output {job.target} is also {claimed[key]}'s output"))
        else:
            claimed[key] = job.source
            todo.append(job)
            continue
        on_image(job.source, 0)
    return todo


def _name_key(target: Path, ignores_case: dict[Path, bool]) -> str:
    """The name two outputs collide by: case-folded when the target's folder ignores case (probed once a folder)."""
    folder = target.parent
    if folder not in ignores_case:
        ignores_case[folder] = case_insensitive(folder)
    return str(target).casefold() if ignores_case[folder] else str(target)


def case_insensitive(folder: Path) -> bool:
    """Whether file names in `folder` (or, before it exists, its nearest existing parent) ignore case: a probe file
    is created and looked up with its case swapped. True when the probe cannot be made (the safe answer)."""
    existing = folder
    while not existing.is_dir() and existing.parent != existing:
        existing = existing.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".vdsr-Case-Probe-", suffix=".tmp", dir=existing)
    except OSError:
        return True
    os.close(fd)
    probe = Path(name)
    try:
        return (probe.parent / probe.name.swapcase()).exists()
    finally:
        probe.unlink(missing_ok=True)


def run_jobs(
    jobs: list[Job],
    upscale: Callable[[LoadedImage], NDArray[Any]],
    report: FolderReport,
    *,
    scale: float,
    fail_fast: bool,
    max_pixels: int,
    max_output_pixels: int,
    on_image: Callable[[Path, int], None],
) -> FolderReport:
    """Decode, upscale and write every job: decoding and encoding on worker threads, `upscale` here. Failures go into
    `report` one line each; a BackendError stops the run (report.stopped) once the results already made are written."""
    stop = threading.Event()
    with ThreadPoolExecutor(max(2, min(4, (os.cpu_count() or 2) // 2)), "vdsr-io") as io:
        writes: deque[tuple[Job, Future[int]]] = deque()

        def finish(job: Job, pixels: int = 0, error: FileFailure | None = None) -> None:
            if error is not None:
                report.failed.append(error)
                if fail_fast:
                    stop.set()
            else:
                report.written.append(job.target)
                report.megapixels += pixels / 1e6
            on_image(job.source, pixels)

        def finish_write(job: Job, write: Future[int]) -> None:
            try:
                finish(job, write.result())
            except ImageError as error:  # save_image names the output file
                finish(job, error=FileFailure(job.source, error.cause, output=error.path))

        for job, decoded in _prefetch(io, jobs, max_pixels=max_pixels, stop=stop):
            try:
                loaded = fit_format(decoded.result(), job.target, scale, max_output_pixels=max_output_pixels)
                pixels = upscale(loaded)
            except ImageError as error:  # unreadable, or its result cannot be written as asked
                output = None if error.path == job.source else error.path
                finish(job, error=FileFailure(job.source, error.cause, output=output))
                continue
            except MemoryError:
                finish(job, error=FileFailure(job.source, "not enough memory to upscale it"))
                continue
            except BackendError as error:
                report.stopped = f"{job.source}: {error}"
                stop.set()
                break
            encode = partial(_write, job.target, pixels, icc_profile=loaded.icc_profile, exif=loaded.exif)
            del loaded, decoded  # the decoded pixels are not needed while the result is encoded
            writes.append((job, io.submit(encode)))
            while len(writes) > IN_FLIGHT or (writes and writes[0][1].done()):
                finish_write(*writes.popleft())
        while writes:
            finish_write(*writes.popleft())
    return report


def _prefetch(
    io: ThreadPoolExecutor, jobs: list[Job], *, max_pixels: int, stop: threading.Event
) -> Iterator[tuple[Job, Future[LoadedImage]]]:
    """Jobs in order with their decoding already under way, at most IN_FLIGHT ahead of the consumer."""
    pending: deque[tuple[Job, Future[LoadedImage]]] = deque()
    queue = iter(jobs)
    try:
        while not stop.is_set():
            while len(pending) < IN_FLIGHT and (job := next(queue, None)) is not None:
                pending.append((job, io.submit(load_image, job.source, max_pixels)))
            if not pending:
                return
            yield pending.popleft()
    finally:  # stopped, or the consumer left the loop: decodes not yet started are not needed
        for _, future in pending:
            future.cancel()


def _write(target: Path, pixels: NDArray[Any], *, icc_profile: bytes | None, exif: bytes | None) -> int:
    save_image(target, pixels, icc_profile=icc_profile, exif=exif)
    return int(pixels.shape[0] * pixels.shape[1])
