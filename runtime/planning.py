"""Which files a run reads and where each result goes (one planner, for local paths and URIs alike), which of those
jobs run (one claim rule), and the one report every way of running fills.

A folder's images mirror its tree under the output folder (default <folder>_x<S> beside it). A file goes to the
output itself when that names an image file (an image suffix, not an existing folder: Real-ESRGAN's convention),
else into it; by default to <stem>_x<S><suffix> beside it. Results take --format's suffix if given; a GIF's result
is a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import TypeVar

from vdsr.errors import UsageError
from vdsr.runtime.images import output_format
from vdsr.runtime.listing import MAX_DEPTH, is_image
from vdsr.runtime.places import LocalFiles, Place
from vdsr.runtime.video import INPUT_SUFFIXES, is_video
from vdsr.scale import scale_label

PathT = TypeVar("PathT", bound=PurePath)


@dataclass(frozen=True)
class Job:
    source: Place
    target: Place


@dataclass(frozen=True)
class FileFailure:
    """A file that failed: the input it came from, the output it was for when that is what failed, and why (paths,
    or URIs). str() is its one line."""

    path: Path | str
    cause: str
    output: Path | str | None = None

    def __str__(self) -> str:
        return f"{self.path} -> {self.output}: {self.cause}" if self.output else f"{self.path}: {self.cause}"


@dataclass
class FolderReport:
    written: list[Path | str] = field(default_factory=list)  # paths, or URIs
    skipped: list[Path | str] = field(default_factory=list)  # outputs that existed (--skip-existing)
    failed: list[FileFailure] = field(default_factory=list)  # the file and the cause; str(): one line
    megapixels: float = 0.0  # output pixels written, in millions
    stopped: str | None = None  # the backend failure that stopped the run before every file was done
    warnings: list[str] = field(default_factory=list)  # files written with something left out: one line each

    def summary(self) -> str:
        """One line: what was written, skipped and failed, and whether a backend failure stopped the run."""
        line = (
            f"{len(self.written)} written ({self.megapixels:.1f} MP), {len(self.skipped)} skipped (existing), "
            f"{len(self.failed)} failed"
        )
        return line + (f"; stopped: {self.stopped}" if self.stopped else "")

    def __str__(self) -> str:
        lines = [*(f"warning: {line}" for line in self.warnings), *(f"failed: {failure}" for failure in self.failed)]
        return "\n".join([self.summary(), *lines])

    def counts(self) -> tuple[int, int, int]:
        """Written, skipped (existing), failed."""
        return len(self.written), len(self.skipped), len(self.failed)


@dataclass
class RunCounts:
    """A streamed run's report (Ray): counts, not lists (its failures are told one line each as they come), so it
    stays the same size for any number of files. The summary line and counts() are a FolderReport's."""

    written: int = 0
    skipped: int = 0
    failed: int = 0
    megapixels: float = 0.0
    stopped: str | None = None
    planned: int = 0  # files listed so far (each becomes written, skipped or failed)
    listed: bool = False  # whether every file is listed: `planned` is then the total

    def counts(self) -> tuple[int, int, int]:
        return self.written, self.skipped, self.failed

    def summary(self) -> str:
        written, skipped, failed = self.counts()
        line = f"{written} written ({self.megapixels:.1f} MP), {skipped} skipped (existing), {failed} failed"
        return line + (f"; stopped: {self.stopped}" if self.stopped else "")


def _absolute(place: Place) -> PurePath:
    """A local path made absolute ("." and ".." get a name; a link keeps its own: results go beside it)."""
    return Path(os.path.abspath(place.path)) if isinstance(place.files, LocalFiles) else place.path


def _same(a: Place, b: Place) -> bool:
    """Whether two places name one file or folder (links and case-insensitive file systems included), or would."""
    identity = a.files.identity(a.path)
    same_file = identity is not None and identity == b.files.identity(b.path)
    return same_file or (a.files.system == b.files.system and _absolute(a) == _absolute(b))


def _resolved(place: Place) -> PurePath:
    return Path(place.path).resolve() if isinstance(place.files, LocalFiles) else place.path


def beside(path: PathT, label: str, *, folder: bool) -> PathT:
    """The default output of the input at `path` (absolute: "." and ".." already resolved): <stem>_x<S><suffix> for a
    file, <name>_x<S> for a folder, beside it. UsageError for a path without a name (a root: /, C:\\, file:///),
    which has no place beside it."""
    if path.name in ("", ".", ".."):
        raise UsageError(f"{path}: a root folder has no name for its output, nor a folder beside it; give --output")
    return path.with_name(f"{path.name}_x{label}" if folder else f"{path.stem}_x{label}{path.suffix}")


def result_name(target: PathT, suffix: str | None) -> PathT:
    """An output's name: with --format's `suffix` if given (images); a GIF's result is a PNG; a video's keeps its
    container."""
    if is_video(target):
        return target
    return target.with_suffix(suffix) if suffix else target if writable(target) else target.with_suffix(".png")


def writable(path: PurePath) -> bool:
    """Whether results can be written in the format `path`'s suffix names (a GIF's result is written as PNG)."""
    try:
        output_format(path)
    except UsageError:
        return False
    return True


def names_a_file(output: Place) -> bool:
    """Whether `output`, given for a single input file, names the result file itself: an image suffix, and neither an
    existing folder (`out.png/` made by an earlier version stays a folder) nor given ending in "/". UsageError for an
    image suffix results are not written in (`out.gif`), rather than a folder of that name."""
    if (
        output.path.suffix.lower() not in INPUT_SUFFIXES
        or output.folder_named
        or output.files.kind(output.path) == "folder"
    ):
        return False
    if not is_video(output.path):
        output_format(output.path)
    return True


def plan(
    source: Place, scale: float, output: Place | None = None, *, recursive: bool = False, fmt: str | None = None
) -> list[Job]:
    """Input file(s) -> output places (see the module docstring). UsageError for a missing input or one that is not
    a regular file or folder, a root folder without --output, an output folder inside the input folder, one that
    cannot be written (probed before any work), or an output file whose suffix contradicts `fmt`."""
    label = scale_label(scale)
    named = source.at(_absolute(source))
    suffix = f".{fmt.lower().lstrip('.')}" if fmt else None
    kind = source.files.kind(source.path)
    if kind == "file" and suffix and is_video(source.path):  # a folder's videos keep their containers, as documented
        raise UsageError(f"{source}: --format {fmt} is for images; a video's result is a video (give -o name.mkv)")
    if kind == "file":
        if output is not None and names_a_file(output):
            if is_video(output.path) != is_video(source.path):
                raise UsageError(f"{output}: a video's result is a video, an image's an image")
            if (
                suffix
                and not is_video(output.path)
                and output_format(output.path) != output_format(PurePosixPath(f"x{suffix}"))
            ):
                raise UsageError(f"{output}: the output file's suffix says another format than --format {fmt}")
            target = output
        elif output is not None:
            target = output.at(result_name(output.path / source.path.name, suffix))
        else:
            target = named.at(beside(result_name(named.path, suffix), label, folder=False))  # "scan" -> scan_x2.5.png
        if _same(target, source):
            raise UsageError(f"{target}: the output would replace the input; give another --output")
        root = target.at(target.path.parent)
        jobs = [Job(source, target)]
    elif kind == "folder":
        root = _folder_root(source, label, output, recursive=recursive)
        images = source.files.images(source.path, recursive=recursive)
        jobs = [Job(source.at(source.path / rel), root.at(result_name(root.path / rel, suffix))) for rel in images]
    elif kind == "other":  # a FIFO, a device, a socket: never opened (a FIFO would block the run)
        raise UsageError(f"{source}: not a regular file ({source.files.what(source.path)})")
    else:
        raise UsageError(f"{source}: no such file or folder")
    for folder in dict.fromkeys([root.path, *(job.target.path.parent for job in jobs)]):
        root.files.check_writable(folder)
    return jobs


def _folder_root(source: Place, label: str, output: Place | None, *, recursive: bool) -> Place:
    """Where a folder's results go; UsageError for the input folder itself or a folder inside it."""
    named = source.at(_absolute(source))
    root = output.at(_absolute(output)) if output is not None else named.at(beside(named.path, label, folder=True))
    if _same(root, source) or (recursive and _resolved(root).is_relative_to(_resolved(source))):
        raise UsageError(f"{root}: the output folder must not be the input folder or inside it")
    return root


def nothing_found(source: object, *, recursive: bool) -> str:
    """The warning for a run that found no images."""
    return f"warning: no images in {source}" + ("" if recursive else " (--recursive includes subfolders)")


def claim(
    jobs: list[Job],
    report: FolderReport,
    *,
    skip_existing: bool,
    on_image: Callable[[Path | str, int], None],
    is_input: Callable[[Job, Hashable | None], bool] | None = None,
) -> list[Job]:
    """The jobs to run: those whose output file exists are skipped (with skip_existing); one whose output is an input of
    the run, or another job's output, is a failure. Inputs are compared by file identity; outputs by name, case-folded
    where the file system ignores case (Photo.png is photo.png there), which is probed, not guessed. `is_input(job,
    its output's identity)`: whether that output is an input of the run, when `jobs` are not all of them."""
    todo = []
    claimed: dict[str, Path | str] = {}  # output (case-folded where case is ignored) -> its input
    ignores_case: dict[PurePath, bool] = {}
    if is_input is None:
        inputs = {i for i in (job.source.files.identity(job.source.path) for job in jobs) if i is not None}
        inputs |= {str(job.source) for job in jobs}  # by name too: an input gone since the plan is still one

        def is_input(job: Job, target: Hashable | None) -> bool:
            return (target is not None and target in inputs) or str(job.target) in inputs

    for job in jobs:
        target = job.target.files.identity(job.target.path)
        folder = job.target.path.parent
        if folder not in ignores_case:
            ignores_case[folder] = job.target.files.ignores_case(folder)
        key = str(job.target).casefold() if ignores_case[folder] else str(job.target)
        if is_input(job, target):  # this or another input
            report.failed.append(
                FileFailure(job.source.shown, f"its output {job.target} is an input; give another --output")
            )
        elif key in claimed:  # photo.jpg and photo.png with --format png (said again when rerun with --skip-existing)
            report.failed.append(
                FileFailure(job.source.shown, f"its output {job.target} is also {claimed[key]}'s output")
            )
        elif skip_existing and target is not None and job.target.files.kind(job.target.path) == "file":
            claimed[key] = job.source.shown
            report.skipped.append(job.target.shown)
        else:
            claimed[key] = job.source.shown
            todo.append(job)
            continue
        on_image(job.source.shown, 0)
    return todo


class LazyPlan:
    """A run's plan made a folder at a time, for runs of any number of files (Ray): the same jobs as plan() and the
    same claim rules, holding one folder's jobs, never the tree's. Checked when made, as plan() checks (UsageError
    before any work): the input, the output folder (probed), every folder of the tree listable and not too deep.
    Outputs can only collide within one output folder (a folder's results go to its mirror), so claiming a folder at
    a time is claiming the run; an output that is an input is found by where it is (or where its links lead) and
    among the inputs with links or other names, which check_tree gathers."""

    def __init__(
        self,
        source: Place,
        scale: float,
        output: Place | None = None,
        *,
        recursive: bool = False,
        fmt: str | None = None,
    ) -> None:
        self.source, self.recursive = source, recursive
        self.suffix = f".{fmt.lower().lstrip('.')}" if fmt else None
        self.single: list[Job] | None = None
        if source.files.kind(source.path) != "folder":  # a file, or what plan() refuses
            self.single = plan(source, scale, output, recursive=recursive, fmt=fmt)
            return
        self.root = _folder_root(source, scale_label(scale), output, recursive=recursive)
        self.root.files.check_writable(self.root.path)
        self.linked = source.files.check_tree(source.path, recursive=recursive)
        self.bases = {_absolute(source), _resolved(source)}

    def folders(self) -> Iterator[list[Job]]:
        """Each folder's jobs, listed as they are asked for."""
        if self.single is not None:
            yield self.single
            return
        source, root = self.source, self.root
        for images in source.files.folders(source.path, recursive=self.recursive):
            yield [
                Job(source.at(source.path / rel), root.at(result_name(root.path / rel, self.suffix))) for rel in images
            ]

    def claim(self, jobs: list[Job], report: FolderReport, *, skip_existing: bool) -> list[Job]:
        """One folder's jobs claimed (see claim); a subfolder of the output that cannot be written fails its files."""
        if self.single is not None:
            return claim(jobs, report, skip_existing=skip_existing, on_image=lambda path, pixels: None)
        folder = jobs[0].target.path.parent
        try:
            if folder != self.root.path:
                self.root.files.check_writable(folder)
        except UsageError as error:
            report.failed.extend(FileFailure(job.source.shown, str(error)) for job in jobs)
            return []
        return claim(
            jobs, report, skip_existing=skip_existing, on_image=lambda path, pixels: None, is_input=self._is_input
        )

    def _is_input(self, job: Job, target: Hashable | None) -> bool:
        paths = [_absolute(job.target)] + ([_resolved(job.target)] if target is not None else [])
        return (target is not None and target in self.linked) or any(self._listed(path) for path in paths)

    def _listed(self, path: PurePath) -> bool:
        """Whether the run lists `path` as an input: an image, not hidden, in the input folder (or its subfolders)."""
        for base in self.bases:
            if path.is_relative_to(base) and (parts := path.relative_to(base).parts):
                deep = len(parts) == 1 or (self.recursive and len(parts) <= MAX_DEPTH + 1)
                return deep and is_image(parts[-1]) and not any(part.startswith(".") for part in parts)
        return False
