"""Folders named by URI for runs on Ray: object stores (s3://bucket/photos, gs://...), HDFS, file:///..., any file
system pyarrow.fs opens (Ray Data's own dependency), or fsspec's where pyarrow has none. pyarrow is imported only when
a store is used (the `ray` extra).

Planning lists a store as a plain run lists a folder (vdsr.runtime.folders: the same image suffixes, hidden names
skipped, the same output names; a local folder through the plain listing itself, links to folders not followed).
Each worker stages its files in a local temporary folder, runs them the plain way (decode, upscale, encode, one-line
failures) and uploads each result under a temporary name beside the target, checks its size, then moves it over the
target: no reader sees half a file, and a failed upload leaves the old result. Credentials come from each worker's
environment, as pyarrow.fs reads them.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from vdsr.errors import UsageError, first_line
from vdsr.files import remove_stale_temporaries, unwritable_folder
from vdsr.runtime.folders import FileFailure, FolderReport, Job, folder_images, result_name, run_jobs, scale_label
from vdsr.runtime.images import IMAGE_SUFFIXES, LoadedImage, output_format

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
BYTES_PER_PIXEL = 16  # the most an image file of the allowed pixels may hold (32-bit float RGBA, uncompressed)
OBJECT_STORES = ("S3FileSystem", "GcsFileSystem", "AzureFileSystem")  # folders are name prefixes: none to create


def is_uri(text: str | os.PathLike[str] | None) -> bool:
    """Whether `text` names a location by URI (scheme://...), not a local path."""
    return text is not None and bool(_SCHEME.match(os.fspath(text)))


def as_uri(text: str | os.PathLike[str]) -> str:
    """A URI stays as it is; a local path becomes an absolute file:// URI (every worker of one machine sees it)."""
    return os.fspath(text) if is_uri(text) else Path(os.path.abspath(text)).as_uri()


@dataclass(frozen=True)
class StoreFile:
    """A file in a store: the URI its file system is opened from (scheme, bucket, options, as given) and its path in
    that file system (decoded: any characters). str(): scheme://path, for messages and reports."""

    base: str
    path: str

    def __str__(self) -> str:
        return f"{self.base.split('://', 1)[0]}://{self.path}"


@dataclass(frozen=True)
class StoreJob:
    source: StoreFile
    target: StoreFile


class Stores:
    """File systems opened from URIs, each once (an S3 one asks for its bucket's region when made)."""

    def __init__(self) -> None:
        self._opened: dict[str, tuple[Any, str]] = {}

    def open(self, uri: str) -> tuple[Any, str]:
        """The file system of `uri` and the path within it. UsageError naming the URI if it cannot be opened."""
        if uri not in self._opened:
            self._opened[uri] = _open(uri)
        return self._opened[uri]

    def fs(self, file: StoreFile) -> Any:
        return self.open(file.base)[0]

    def info(self, file: StoreFile) -> Any:
        """pyarrow.fs.FileInfo of the file. UsageError naming it if the store cannot be asked."""
        try:
            return self.fs(file).get_file_info(file.path)
        except Exception as error:  # noqa: BLE001  (pyarrow's, and an fsspec file system's own, for any cause)
            raise UsageError(f"{file}: cannot read it ({first_line(error)})") from error


def _pafs() -> Any:
    """pyarrow.fs, imported when a store is used: vdsr-run imports this module without the `ray` extra too."""
    from pyarrow import fs

    return fs


def _open(uri: str) -> tuple[Any, str]:
    pafs = _pafs()
    try:
        return pafs.FileSystem.from_uri(uri)  # type: ignore[no-any-return]
    except Exception as error:  # noqa: BLE001  (ArrowInvalid for a URI it cannot parse or a scheme it lacks, ...)
        if "nrecognized filesystem" not in str(error):
            raise UsageError(f"{uri}: cannot open it ({first_line(error)})") from error
    try:  # a scheme pyarrow does not know: fsspec's file systems (memory, http, ...), if installed
        from fsspec.core import url_to_fs

        store, path = url_to_fs(uri)
    except Exception as error:  # noqa: BLE001  (ImportError, ValueError for an unknown protocol, a driver's own)
        raise UsageError(f"{uri}: no file system for this scheme ({first_line(error)})") from error
    return pafs.PyFileSystem(pafs.FSSpecHandler(store)), str(path)


def _local(store: Any) -> bool:
    return type(store).__name__ == "LocalFileSystem"


def plan_store_jobs(
    source: str, scale: float, output: str | None = None, *, stores: Stores, recursive: bool = False,
    fmt: str | None = None,
) -> list[StoreJob]:  # fmt: skip
    """The plain run's plan (vdsr.runtime.folders.plan_jobs) for URIs: a folder's images mirror its tree under
    `output` (default <folder>_x<S> beside it); a file goes to `output` when that names an image file, else into it,
    by default to <stem>_x<S><suffix> beside it. UsageError for a missing input, an output inside the input folder or
    an output location that cannot be written."""
    pafs = _pafs()
    label = scale_label(scale)
    suffix = f".{fmt.lower().lstrip('.')}" if fmt else None
    store, root = stores.open(source)
    root = root.rstrip("/") or "/"
    kind = stores.info(StoreFile(source, root)).type
    if kind == pafs.FileType.File:
        name = PurePosixPath(root).name
        if output is not None and _names_a_file(output, stores):
            if suffix and output_format(PurePosixPath(output)) != output_format(PurePosixPath(f"x{suffix}")):
                raise UsageError(f"{output}: the output file's suffix says another format than --format {fmt}")
            target = StoreFile(output, stores.open(output)[1])
        elif output is not None:
            target = StoreFile(
                output, f"{stores.open(output)[1].rstrip('/')}/{result_name(PurePosixPath(name), suffix)}"
            )
        else:
            stem, ext = os.path.splitext(name)
            beside = PurePosixPath(root).with_name(f"{stem}_x{label}{ext}")
            target = StoreFile(source, str(result_name(beside, suffix)))
        if target.path == root and type(stores.fs(target)) is type(store):
            raise UsageError(f"{target}: the output would replace the input; give another --output")
        jobs = [StoreJob(StoreFile(source, root), target)]
    elif kind == pafs.FileType.Directory:
        out = StoreFile(source, f"{root}_x{label}") if output is None else StoreFile(output, stores.open(output)[1])
        out = StoreFile(out.base, out.path.rstrip("/") or "/")
        if type(stores.fs(out)) is type(store) and (
            out.path == root or (recursive and out.path.startswith(f"{root}/"))
        ):
            raise UsageError(f"{out}: the output folder must not be the input folder or inside it")
        jobs = [StoreJob(StoreFile(source, f"{root}/{relative}"),
                         StoreFile(out.base, f"{out.path}/{result_name(relative, suffix)}"))
                for relative in _listing(store, root, StoreFile(source, root), recursive=recursive)]  # fmt: skip
    else:
        raise UsageError(f"{StoreFile(source, root)}: no such file or folder")
    for target in {StoreFile(j.target.base, str(PurePosixPath(j.target.path).parent)) for j in jobs}:
        _check_writable(target, stores)
    if jobs and _local(stores.fs(jobs[0].target)):  # left by a run that was killed
        remove_stale_temporaries(Path(job.target.path) for job in jobs)
    return jobs


def _listing(store: Any, root: str, folder: StoreFile, *, recursive: bool) -> list[PurePosixPath]:
    """The images of a folder, relative to it, in the plain run's order."""
    if _local(store):  # the plain listing: links to folders not followed, broken links kept (then reported)
        return [PurePosixPath(p.relative_to(root).as_posix()) for p in folder_images(Path(root), recursive)]
    try:
        found = store.get_file_info(_pafs().FileSelector(root, recursive=recursive))
    except Exception as error:  # noqa: BLE001
        raise UsageError(f"{folder}: cannot list this folder ({first_line(error)})") from error
    images = []
    for info in found:
        relative = PurePosixPath(info.path).relative_to(root)
        hidden = any(part.startswith(".") for part in relative.parts)
        if info.type == _pafs().FileType.File and relative.suffix.lower() in IMAGE_SUFFIXES and not hidden:
            images.append(relative)
    return sorted(images, key=lambda p: p.parts)


def _names_a_file(output: str, stores: Stores) -> bool:
    """As vdsr.runtime.folders.names_a_file: an image suffix, and not an existing folder."""
    if PurePosixPath(output).suffix.lower() not in IMAGE_SUFFIXES:
        return False
    if stores.info(StoreFile(output, stores.open(output)[1])).type == _pafs().FileType.Directory:
        return False
    output_format(PurePosixPath(output))  # UsageError for a suffix results are not written in
    return True


def _check_writable(folder: StoreFile, stores: Stores) -> None:
    """UsageError, before any work, for an output folder that cannot be made or written: a local one probed as a plain
    run probes it; an object store's bucket must exist; other file systems make the folder."""
    store = stores.fs(folder)
    if _local(store):
        problem = unwritable_folder(Path(folder.path))
        if problem:
            raise UsageError(problem)
    elif type(store).__name__ in OBJECT_STORES:
        bucket = StoreFile(folder.base, folder.path.split("/", 1)[0])
        if stores.info(bucket).type != _pafs().FileType.Directory:
            raise UsageError(f"{bucket}: no such bucket, or no access to it")
    else:
        try:
            store.create_dir(folder.path, recursive=True)
        except Exception as error:  # noqa: BLE001
            raise UsageError(f"{folder}: cannot make this folder ({first_line(error)})") from error


def claim_store_outputs(
    jobs: Sequence[StoreJob], report: FolderReport, *, skip_existing: bool, stores: Stores
) -> list[StoreJob]:
    """As vdsr.runtime.folders.claim_outputs: existing outputs skipped (skip_existing); an output that is an input of
    the run or another job's output is a failure."""
    inputs = {str(job.source) for job in jobs}
    todo: list[StoreJob] = []
    claimed: dict[str, str] = {}
    for job in jobs:
        source, target = str(job.source), str(job.target)
        if skip_existing and stores.info(job.target).type == _pafs().FileType.File:
            report.skipped.append(target)
        elif target in inputs:
            report.failed.append(FileFailure(source, f"its output {target} is an input; give another --output"))
        elif target in claimed:
            report.failed.append(FileFailure(source, f"its output {target} is also {claimed[target]}'s output"))
        else:
            claimed[target] = source
            todo.append(job)
    return todo


def run_store_jobs(
    jobs: Sequence[StoreJob],
    upscale: Callable[[LoadedImage], Any],
    *,
    stores: Stores,
    scale: float,
    max_pixels: int,
    max_output_pixels: int,
    on_image: Callable[[str, int], None] = lambda name, pixels: None,
) -> FolderReport:
    """Download, run the plain way (vdsr.runtime.folders.run_jobs), upload: a report that names the URIs."""
    report = FolderReport()
    with tempfile.TemporaryDirectory(prefix="vdsr-store-") as folder:
        staged: dict[str, StoreJob] = {}  # local input -> its job
        locals_: list[Job] = []
        for n, job in enumerate(jobs):
            local = Job(Path(folder, "in", f"{n}{PurePosixPath(job.source.path).suffix}"),
                        Path(folder, "out", f"{n}{PurePosixPath(job.target.path).suffix}"))  # fmt: skip
            try:
                _download(job.source, local.source, stores=stores, limit=max_pixels * BYTES_PER_PIXEL)
            except Exception as error:  # noqa: BLE001  (any store's failure is this file's; the others go on)
                report.failed.append(FileFailure(str(job.source), first_line(error)))
                continue
            staged[str(local.source)] = job
            locals_.append(local)
        pixels: dict[str, int] = {}
        done = run_jobs(locals_, upscale, FolderReport(), scale=scale, fail_fast=False, max_pixels=max_pixels,
                        max_output_pixels=max_output_pixels,
                        on_image=lambda path, count: pixels.__setitem__(str(path), count))  # fmt: skip
        for failure in done.failed:
            job = staged[str(failure.path)]
            output = str(job.target) if failure.output else None
            report.failed.append(FileFailure(str(job.source), failure.cause, output=output))
        if done.stopped:
            report.stopped = done.stopped
            for name, job in staged.items():
                report.stopped = report.stopped.replace(name, str(job.source))
        written = {str(p) for p in done.written}
        for local in locals_:
            job = staged[str(local.source)]
            if str(local.target) not in written:
                continue
            try:
                _upload(local.target, job.target, stores=stores)
            except Exception as error:  # noqa: BLE001
                report.failed.append(FileFailure(str(job.source), f"cannot write it ({first_line(error)})",
                                                 str(job.target)))  # fmt: skip
                continue
            report.written.append(str(job.target))
            report.megapixels += pixels.get(str(local.source), 0) / 1e6
            on_image(str(job.source), pixels.get(str(local.source), 0))
    return report


def _download(file: StoreFile, local: Path, *, stores: Stores, limit: int) -> None:
    """Copy the file to `local`, refusing one over `limit` bytes (no image of the allowed size is larger)."""
    pafs = _pafs()
    info = stores.info(file)
    if info.type == pafs.FileType.NotFound:
        raise UsageError("file not found")
    if info.type != pafs.FileType.File:
        raise UsageError("not a file")
    if info.size is not None and info.size > limit:
        raise UsageError(f"{info.size} bytes is more than an image of the allowed size holds")
    local.parent.mkdir(parents=True, exist_ok=True)
    copied = 0
    with stores.fs(file).open_input_stream(file.path) as stream, local.open("wb") as f:
        while chunk := stream.read(1 << 20):
            copied += len(chunk)
            if copied > limit:  # a size the store misreported, or a file still growing
                raise UsageError(f"more than {limit} bytes, more than an image of the allowed size holds")
            f.write(chunk)


def _upload(local: Path, target: StoreFile, *, stores: Stores) -> None:
    """Put `local` at `target` whole: under a temporary name beside it (the plain run's pattern, so a killed run's
    leftovers are found), its size checked, then moved over it; the temporary removed on any failure."""
    store = stores.fs(target)
    parent, name = str(PurePosixPath(target.path).parent), PurePosixPath(target.path).name
    if type(store).__name__ not in OBJECT_STORES:
        store.create_dir(parent, recursive=True)
    staging = f"{parent.rstrip('/')}/.{name[:32]}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    size = local.stat().st_size
    try:
        with local.open("rb") as f, store.open_output_stream(staging) as stream:
            while chunk := f.read(1 << 20):
                stream.write(chunk)
        held = store.get_file_info(staging).size
        if held != size:
            raise OSError(f"the store holds {held} of its {size} bytes")
        store.move(staging, target.path)
    except BaseException:
        try:
            store.delete_file(staging)
        except Exception:  # noqa: BLE001, S110  (the upload's own error is the one to report)
            pass
        raise
