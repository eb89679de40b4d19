"""Folders named by URI for runs on Ray: object stores (s3://bucket/photos, gs://...), HDFS, file:///..., any file
system pyarrow.fs opens (Ray Data's own dependency), or fsspec's where pyarrow has none. The `ray` extra; never
imported without it.

Planning lists a store as a plain run lists a folder (vdsr.runtime.folders: the same image suffixes, hidden names
skipped, the same output names). Each worker stages its files in a local temporary folder, runs them the plain way
(decode, upscale, encode, one-line failures) and uploads each result. An object store makes an object visible only once
its upload completes; on other file systems the result is uploaded under a temporary name beside the target and moved
over it. So no reader sees half a file. Credentials come from each worker's environment, as pyarrow.fs reads them.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from vdsr.errors import UsageError, first_line
from vdsr.runtime.folders import FileFailure, FolderReport, Job, result_name, run_jobs, scale_label
from vdsr.runtime.images import IMAGE_SUFFIXES, LoadedImage, output_format

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
BYTES_PER_PIXEL = 16  # the most an image file of the allowed pixels may hold (32-bit float RGBA, uncompressed)
OBJECT_STORES = ("S3FileSystem", "GcsFileSystem", "AzureFileSystem")  # an object appears when its upload completes


def _pafs() -> Any:
    """pyarrow.fs, imported when a store is used: vdsr-run imports this module without the `ray` extra too."""
    from pyarrow import fs

    return fs


def _errors() -> tuple[type[BaseException], ...]:
    """What pyarrow.fs raises for a store that fails (its own exceptions, and OSError, ValueError subclasses)."""
    from pyarrow import ArrowException

    return ArrowException, OSError, ValueError, UsageError


def is_uri(text: str | os.PathLike[str] | None) -> bool:
    """Whether `text` names a location by URI (scheme://...), not a local path."""
    return text is not None and bool(_SCHEME.match(os.fspath(text)))


def as_uri(text: str | os.PathLike[str]) -> str:
    """A URI stays as it is; a local path becomes an absolute file:// URI (every worker of one machine sees it)."""
    return os.fspath(text) if is_uri(text) else Path(os.path.abspath(text)).as_uri()


def open_store(uri: str) -> tuple[Any, str]:
    """The file system of `uri` and the path within it. UsageError naming the URI if it cannot be opened."""
    pafs = _pafs()
    try:
        return pafs.FileSystem.from_uri(uri)  # type: ignore[no-any-return]
    except _errors() as error:
        if "nrecognized filesystem" not in str(error):
            raise UsageError(f"{uri}: cannot open it ({first_line(error)})") from error
    try:  # a scheme pyarrow does not know: fsspec's file systems (memory, http, ...), if installed
        from fsspec.core import url_to_fs

        store, path = url_to_fs(uri)
    except (ImportError, ValueError, OSError) as error:
        raise UsageError(f"{uri}: no file system for this scheme ({first_line(error)})") from error
    return pafs.PyFileSystem(pafs.FSSpecHandler(store)), str(path)


def _join(uri: str, relative: str) -> str:
    return f"{uri.rstrip('/')}/{relative}" if relative else uri


def plan_store_jobs(
    source: str, scale: float, output: str | None = None, *, recursive: bool = False, fmt: str | None = None
) -> list[tuple[str, str]]:
    """(input URI, output URI) pairs, by the plain run's rules (vdsr.runtime.folders.plan_jobs): a folder's images
    mirror its tree under `output` (default <folder>_x<S> beside it); a file goes to `output` when that names an image
    file, else into it, by default to <stem>_x<S><suffix> beside it. UsageError for a missing input, or an output
    inside the input folder."""
    label = scale_label(scale)
    suffix = f".{fmt.lower().lstrip('.')}" if fmt else None
    source = source.rstrip("/")
    store, root = open_store(source)
    pafs = _pafs()
    kind = _info(store, root, source).type
    if kind == pafs.FileType.File:
        name = PurePosixPath(root).name
        if output is not None and _names_a_file(output):
            if suffix and output_format(PurePosixPath(output)) != output_format(PurePosixPath(f"x{suffix}")):
                raise UsageError(f"{output}: the output file's suffix says another format than --format {fmt}")
            target = output
        elif output is not None:
            target = _join(output, str(result_name(PurePosixPath(name), suffix)))
        else:
            stem, ext = os.path.splitext(name)
            target = source[: len(source) - len(name)] + str(
                result_name(PurePosixPath(f"{stem}_x{label}{ext}"), suffix)
            )
        if target == source:
            raise UsageError(f"{target}: the output would replace the input; give another --output")
        return [(source, target)]
    if kind != pafs.FileType.Directory:
        raise UsageError(f"{source}: no such file or folder")
    out = (output or f"{source}_x{label}").rstrip("/")
    if out == source or (recursive and out.startswith(f"{source}/")):
        raise UsageError(f"{out}: the output folder must not be the input folder or inside it")
    try:
        found = store.get_file_info(pafs.FileSelector(root, recursive=recursive))
    except _errors() as error:
        raise UsageError(f"{source}: cannot list this folder ({first_line(error)})") from error
    jobs = []
    for info in sorted(found, key=lambda i: i.path):
        relative = PurePosixPath(info.path).relative_to(PurePosixPath(root))
        hidden = any(part.startswith(".") for part in relative.parts)
        if info.type == pafs.FileType.File and relative.suffix.lower() in IMAGE_SUFFIXES and not hidden:
            jobs.append((_join(source, str(relative)), _join(out, str(result_name(relative, suffix)))))
    return jobs


def _info(store: Any, path: str, uri: str) -> Any:
    try:
        return store.get_file_info(path)
    except _errors() as error:
        raise UsageError(f"{uri}: cannot read it ({first_line(error)})") from error


def _names_a_file(output: str) -> bool:
    """As vdsr.runtime.folders.names_a_file: an image suffix, and not an existing folder."""
    if PurePosixPath(output).suffix.lower() not in IMAGE_SUFFIXES:
        return False
    store, path = open_store(output)
    if _info(store, path, output).type == _pafs().FileType.Directory:
        return False
    output_format(PurePosixPath(output))  # UsageError for a suffix results are not written in
    return True


def claim_store_outputs(
    jobs: Sequence[tuple[str, str]], report: FolderReport, *, skip_existing: bool
) -> list[tuple[str, str]]:
    """As vdsr.runtime.folders.claim_outputs: existing outputs skipped (skip_existing); an output that is an input of
    the run or another job's output is a failure."""
    inputs = {source for source, _ in jobs}
    existing = set()
    if skip_existing:
        for _, target in jobs:
            store, path = open_store(target)
            if _info(store, path, target).type == _pafs().FileType.File:
                existing.add(target)
    todo: list[tuple[str, str]] = []
    claimed: dict[str, str] = {}
    for source, target in jobs:
        if target in existing:
            report.skipped.append(target)
        elif target in inputs:
            report.failed.append(FileFailure(source, f"its output {target} is an input; give another --output"))
        elif target in claimed:
            report.failed.append(FileFailure(source, f"its output {target} is also {claimed[target]}'s output"))
        else:
            claimed[target] = source
            todo.append((source, target))
    return todo


@dataclass(frozen=True)
class _Staged:
    source: str
    target: str
    local: Job  # where the worker decodes it and writes its result


def run_store_jobs(
    jobs: Sequence[tuple[str, str]],
    upscale: Callable[[LoadedImage], Any],
    *,
    scale: float,
    max_pixels: int,
    max_output_pixels: int,
    on_image: Callable[[str, int], None] = lambda uri, pixels: None,
) -> FolderReport:
    """Download, run the plain way (vdsr.runtime.folders.run_jobs), upload: a report that names the URIs."""
    report = FolderReport()
    with tempfile.TemporaryDirectory(prefix="vdsr-store-") as folder:
        staged: list[_Staged] = []
        for n, (source, target) in enumerate(jobs):
            local = Job(Path(folder, "in", f"{n}{PurePosixPath(source).suffix}"),
                        Path(folder, "out", f"{n}{PurePosixPath(target).suffix}"))  # fmt: skip
            try:
                _download(source, local.source, limit=max_pixels * BYTES_PER_PIXEL)
            except _errors() as error:
                report.failed.append(FileFailure(source, f"cannot read it ({first_line(error)})"))
                continue
            staged.append(_Staged(source, target, local))
        by_local = {str(s.local.source): s for s in staged}
        pixels: dict[str, int] = {}
        local_report = run_jobs([s.local for s in staged], upscale, FolderReport(), scale=scale, fail_fast=False,
                                max_pixels=max_pixels, max_output_pixels=max_output_pixels,
                                on_image=lambda path, count: pixels.__setitem__(str(path), count))  # fmt: skip
        report.stopped = local_report.stopped and _named(local_report.stopped, staged)
        for failure in local_report.failed:
            job = by_local[str(failure.path)]
            report.failed.append(FileFailure(job.source, failure.cause, output=job.target if failure.output else None))
        written = {str(p) for p in local_report.written}
        for job in staged:
            if str(job.local.target) not in written:
                continue
            try:
                _upload(job.local.target, job.target)
            except _errors() as error:
                report.failed.append(FileFailure(job.source, f"cannot write it ({first_line(error)})", job.target))
                continue
            report.written.append(job.target)
            report.megapixels += pixels.get(str(job.local.source), 0) / 1e6
            on_image(job.source, pixels.get(str(job.local.source), 0))
    return report


def _named(message: str, staged: Sequence[_Staged]) -> str:
    """A message about local staged files, naming their URIs instead."""
    for job in staged:
        message = message.replace(str(job.local.source), job.source).replace(str(job.local.target), job.target)
    return message


def _download(uri: str, local: Path, *, limit: int) -> None:
    """Copy the object to `local`, refusing one over `limit` bytes (no image of the allowed size is larger)."""
    store, path = open_store(uri)
    info = _info(store, path, uri)
    if info.type != _pafs().FileType.File:
        raise UsageError("not a file")
    if info.size is not None and info.size > limit:
        raise UsageError(f"{info.size} bytes is more than an image of the allowed size holds")
    local.parent.mkdir(parents=True, exist_ok=True)
    copied = 0
    with store.open_input_stream(path) as stream, local.open("wb") as f:
        while chunk := stream.read(1 << 20):
            copied += len(chunk)
            if copied > limit:  # a size the store misreported, or a file still growing
                raise UsageError(f"more than {limit} bytes, more than an image of the allowed size holds")
            f.write(chunk)


def _upload(local: Path, uri: str) -> None:
    """Put `local` at `uri` so that no reader sees part of it (see the module docstring)."""
    store, path = open_store(uri)
    parent = str(PurePosixPath(path).parent)
    whole = type(store).__name__ in OBJECT_STORES
    if not whole:
        store.create_dir(parent, recursive=True)
    staging = path if whole else f"{parent}/.{PurePosixPath(path).name[:32]}.{os.getpid()}.tmp"
    try:
        with local.open("rb") as f, store.open_output_stream(staging) as stream:
            while chunk := f.read(1 << 20):
                stream.write(chunk)
        if not whole:
            store.move(staging, path)
    except BaseException:
        if not whole:
            try:
                store.delete_file(staging)
            except _errors():
                pass  # the upload's own error is the one to report
        raise
