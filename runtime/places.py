"""Where images are read from and results written: one file-system layer for local paths and URIs.

`Place` is a file or folder on a file system (`Files`): local paths (`LocalFiles`: os and pathlib, links and FIFOs
handled as a plain run always has), or a URI (`StoreFiles`: s3://bucket/photos, gs://, hdfs://, file:///, any file
system pyarrow.fs opens, or fsspec's where pyarrow has none; pyarrow is imported only when a URI is used). The
planner and the pipeline ask a Place the same questions for both: its kind, its images, whether it can be written,
the image it holds, and a result written whole (a temporary name, then renamed: no reader sees half a file).
"""

from __future__ import annotations

import io
import os
import re
import secrets
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import ImageError, UsageError, first_line
from vdsr.files import case_insensitive, file_type, remove_stale_temporaries, unwritable_folder
from vdsr.runtime.images import (
    LoadedImage,
    decode_image,
    encode_image,
    load_image,
    max_file_bytes,
    output_format,
    padded,
)
from vdsr.runtime.images import save_image as save_local
from vdsr.runtime.listing import MAX_DEPTH as MAX_DEPTH  # a plain run's limit, asked for here
from vdsr.runtime.listing import is_image, list_folder, refuse_deep, walk
from vdsr.runtime.video import INPUT_SUFFIXES

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
OBJECT_STORES = ("S3FileSystem", "GcsFileSystem", "AzureFileSystem")  # folders are name prefixes: none to create


def is_uri(text: str | os.PathLike[str] | None) -> bool:
    """Whether `text` names a location by URI (scheme://...), not a local path."""
    return text is not None and bool(_SCHEME.match(os.fspath(text)))


def as_uri(text: str | os.PathLike[str]) -> str:
    """A URI stays as it is; a local path becomes an absolute file:// URI (every worker of one machine sees it), a
    trailing "/" kept (a folder, whatever its suffix)."""
    slash = "/" if os.fspath(text).endswith(("/", os.sep)) else ""
    return os.fspath(text) if is_uri(text) else Path(os.path.abspath(text)).as_uri() + slash


class Files(ABC):
    """A file system, as the planner and the pipeline use it. Paths are PurePaths of its own flavour."""

    system: str  # which kind of file system: two places name one file only on the same kind

    @abstractmethod
    def kind(self, path: PurePath) -> str:
        """'file', 'folder', 'missing' or 'other'; UsageError if it cannot be asked."""

    def what(self, path: PurePath) -> str:
        """What a path of kind 'other' is, for messages: "a FIFO", "a character device", ..."""
        return "neither a file nor a folder"

    @abstractmethod
    def images(self, folder: PurePath, *, recursive: bool) -> list[PurePath]:
        """The images a run of `folder` reads, relative to it, sorted: image suffixes, no hidden files or folders,
        MAX_DEPTH levels of subfolders at most (UsageError for a deeper one)."""

    def folders(self, folder: PurePath, *, recursive: bool) -> Iterator[list[PurePath]]:
        """The images of `images`, a folder at a time (each folder once, its images sorted): a streamed run holds one
        folder's names, not the tree's. This default lists the whole tree first; local trees and stores walk."""
        grouped: dict[PurePath, list[PurePath]] = {}
        for image in self.images(folder, recursive=recursive):
            grouped.setdefault(image.parent, []).append(image)
        yield from grouped.values()

    def check_tree(self, folder: PurePath, *, recursive: bool) -> set[Hashable]:
        """Before a streamed run: UsageError where `images` would raise one (nothing done), and the identities of the
        inputs that are links or have other names (hard links), which an output could be under another name."""
        return set()

    @abstractmethod
    def identity(self, path: PurePath) -> Hashable | None:
        """What tells two names of one file apart from two files (None: nothing there)."""

    def ignores_case(self, folder: PurePath) -> bool:
        """Whether names in `folder` ignore case (Photo.png is photo.png there)."""
        return False

    @abstractmethod
    def check_writable(self, folder: PurePath) -> None:
        """UsageError, before any work, for a folder results cannot be written in."""

    @abstractmethod
    def load(self, path: PurePath, *, max_pixels: int, shown: Path | str) -> LoadedImage:
        """The image at `path`; ImageError naming `shown` when it cannot be read."""

    @abstractmethod
    def save(self, path: PurePath, pixels: NDArray[Any], *, shown: Path | str, **metadata: bytes | None) -> None:
        """Write the result whole; ImageError naming `shown` when it cannot be."""

    def remove_stale(self, targets: list[PurePath]) -> list[PurePath]:
        """Temporary files a killed run left beside `targets`, removed (local file systems)."""
        return []


@dataclass(frozen=True)
class Place:
    """A file or folder on a file system; str() is how messages and reports name it (a path, or scheme://path)."""

    files: Files
    path: PurePath
    scheme: str = ""  # a URI's ("s3", "file"); "" for a local path
    folder_named: bool = False  # given ending in "/": a folder, whatever its suffix ("out.png/")

    @property
    def shown(self) -> Path | str:
        """The name reports use: the local Path, or the URI."""
        return Path(self.path) if not self.scheme else f"{self.scheme}://{self.path}"

    def __str__(self) -> str:
        return str(self.shown)

    def at(self, path: PurePath) -> Place:
        """Another place on the same file system."""
        return Place(self.files, path, self.scheme)


def local(path: str | os.PathLike[str]) -> Place:
    """A local path; an empty one is refused (Path("") is the current folder: an unset variable must not mean it)."""
    if not os.fspath(path):
        raise UsageError('an empty path: give a file or folder (".", the current folder)')
    return Place(LOCAL, Path(path), folder_named=os.fspath(path).endswith(("/", os.sep)))


class LocalFiles(Files):
    """Local paths: links to folders not followed while listing (no loop of links is walked), broken links kept
    (they are reported), FIFOs, sockets and devices reported as what they are and never opened (a FIFO would block
    the run)."""

    system = "local"

    def kind(self, path: PurePath) -> str:
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError, ValueError):  # nothing there, a broken link, a NUL in the name
            return "missing"
        except OSError:  # there, but not to be asked (no permission, a loop of links): `what` says why
            return "other"
        return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"

    def what(self, path: PurePath) -> str:
        try:
            return file_type(os.stat(path).st_mode)
        except OSError as error:
            return f"cannot be read: {error.strerror or error}"

    def images(self, folder: PurePath, *, recursive: bool) -> list[PurePath]:
        folder = Path(folder)
        found = list_folder(folder, recursive=recursive)
        return sorted(p.relative_to(folder) for p in found if p.suffix.lower() in INPUT_SUFFIXES)

    def folders(self, folder: PurePath, *, recursive: bool) -> Iterator[list[PurePath]]:
        for current, names, _ in walk(Path(folder), recursive=recursive):
            found: list[PurePath] = [current.relative_to(folder) / name for name in names if is_image(name)]
            if found:
                yield found

    def check_tree(self, folder: PurePath, *, recursive: bool) -> set[Hashable]:
        linked: set[Hashable] = set()
        for current, names, too_deep in walk(Path(folder), recursive=recursive):
            refuse_deep(Path(folder), too_deep)
            for name in filter(is_image, names):
                try:
                    if (info := os.lstat(current / name)).st_nlink > 1 or stat.S_ISLNK(info.st_mode):
                        linked.add(self.identity(current / name))
                except OSError:  # gone since it was listed: its job fails with the cause
                    continue
        return linked - {None}

    def identity(self, path: PurePath) -> Hashable | None:
        try:
            stat = Path(path).stat()
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino)

    def ignores_case(self, folder: PurePath) -> bool:
        return case_insensitive(Path(folder))

    def check_writable(self, folder: PurePath) -> None:
        problem = unwritable_folder(Path(folder))
        if problem:
            raise UsageError(problem)

    def load(self, path: PurePath, *, max_pixels: int, shown: Path | str) -> LoadedImage:
        if self.kind(path) == "other":  # not opened at all (vdsr.files.open_regular would refuse it, non-blocking)
            what = self.what(path)
            raise ImageError(shown, what if what.startswith("cannot") else f"not a regular file ({what})")
        return load_image(Path(path), max_pixels)

    def save(self, path: PurePath, pixels: NDArray[Any], *, shown: Path | str, **metadata: bytes | None) -> None:
        save_local(Path(path), pixels, **metadata)

    def remove_stale(self, targets: list[PurePath]) -> list[PurePath]:
        return list(remove_stale_temporaries(Path(t) for t in targets))


LOCAL = LocalFiles()


def _pafs() -> Any:
    """pyarrow.fs, imported when a URI is used: vdsr-run imports this module without the `ray` extra too."""
    from pyarrow import fs

    return fs


class StoreFiles(Files):
    """A file system opened from a URI. Credentials come from the environment, as pyarrow.fs reads them."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, path = _open(uri)
        self.root = PurePosixPath(path.rstrip("/") or "/")
        self.system = type(self.fs).__name__

    def info(self, path: PurePath) -> Any:
        try:
            return self.fs.get_file_info(str(path))
        except Exception as error:  # noqa: BLE001  (pyarrow's, and an fsspec file system's own, for any cause)
            raise UsageError(f"{self._shown(path)}: cannot read it ({first_line(error)})") from error

    def _shown(self, path: PurePath) -> str:
        return f"{self.uri.split('://', 1)[0]}://{path}"

    def kind(self, path: PurePath) -> str:
        found = self.info(path).type
        types = _pafs().FileType
        return {types.File: "file", types.Directory: "folder", types.NotFound: "missing"}.get(found, "other")

    def images(self, folder: PurePath, *, recursive: bool) -> list[PurePath]:
        if type(self.fs).__name__ == "LocalFileSystem":  # the plain listing: links, broken links as a plain run
            return LOCAL.images(folder, recursive=recursive)
        found = (image for images in self.folders(folder, recursive=recursive) for image in images)
        return sorted(found, key=lambda p: p.parts)

    def folders(self, folder: PurePath, *, recursive: bool) -> Iterator[list[PurePath]]:
        """A folder's listing at a time (a prefix and delimiter on object stores: their API pages it)."""
        if type(self.fs).__name__ == "LocalFileSystem":
            yield from LOCAL.folders(folder, recursive=recursive)
            return
        stack, types = [PurePosixPath(folder)], _pafs().FileType
        while stack:
            current = stack.pop()
            try:
                found = self.fs.get_file_info(_pafs().FileSelector(str(current)))
            except Exception as error:  # noqa: BLE001
                raise UsageError(f"{self._shown(current)}: cannot list this folder ({first_line(error)})") from error
            names = {PurePosixPath(info.path).name: info.type for info in found}
            visible = sorted(name for name in names if not name.startswith("."))
            stack.extend(current / n for n in reversed(visible) if recursive and names[n] == types.Directory)
            images: list[PurePath] = [
                current.relative_to(folder) / n for n in visible if names[n] == types.File and is_image(n)
            ]
            if images:
                yield images

    def check_tree(self, folder: PurePath, *, recursive: bool) -> set[Hashable]:
        is_local = type(self.fs).__name__ == "LocalFileSystem"
        return LOCAL.check_tree(folder, recursive=recursive) if is_local else set()

    def identity(self, path: PurePath) -> Hashable | None:
        """A store's file is its path: nothing to ask it (links and case folding are the local file system's)."""
        return (self.system, str(path))

    def check_writable(self, folder: PurePath) -> None:
        """A local folder probed as a plain run probes it (a file created and removed); other file systems make the
        folder; an object store's bucket must exist. An object store is not probed with a test object: its folders
        are name prefixes, so that would be a billed write and delete for each folder of the tree, and a write it
        refuses fails that file alone, the others still run."""
        name = type(self.fs).__name__
        if name == "LocalFileSystem":
            LOCAL.check_writable(folder)
        elif name in OBJECT_STORES:
            bucket = PurePosixPath(str(folder).split("/", 1)[0])
            if self.kind(bucket) != "folder":
                raise UsageError(f"{self._shown(bucket)}: no such bucket, or no access to it")
        else:
            try:
                self.fs.create_dir(str(folder), recursive=True)
            except Exception as error:  # noqa: BLE001
                raise UsageError(f"{self._shown(folder)}: cannot make this folder ({first_line(error)})") from error

    def load(self, path: PurePath, *, max_pixels: int, shown: Path | str) -> LoadedImage:
        """Downloaded into an anonymous temporary file (refused past the most an image of `max_pixels` can hold),
        then decoded from it as a local file is; any failure is this file's ImageError."""
        limit = max_file_bytes(max_pixels)
        try:
            info = self.fs.get_file_info(str(path))
        except Exception as error:  # noqa: BLE001  (pyarrow's, and an fsspec file system's own, for any cause)
            raise ImageError(shown, f"cannot read it ({first_line(error)})") from error
        types = _pafs().FileType
        if info.type == types.NotFound:
            raise ImageError(shown, "file not found")
        if info.type != types.File:
            raise ImageError(shown, "not a file")
        if info.size is not None and info.size > limit:
            raise ImageError(shown, padded(info.size, f"an image of at most {max_pixels} pixels"))
        with tempfile.TemporaryFile() as spool:
            try:
                with self.fs.open_input_stream(str(path)) as stream:
                    while chunk := stream.read(1 << 20):
                        spool.write(chunk)
                        if spool.tell() > limit:  # a size the store misreported, or a file still growing
                            raise ImageError(shown, padded(spool.tell(), f"an image of at most {max_pixels} pixels"))
            except ImageError:
                raise
            except Exception as error:  # noqa: BLE001  (any store's failure is this file's; the others go on)
                raise ImageError(shown, f"cannot read it ({first_line(error)})") from error
            spool.seek(0)
            return decode_image(spool, shown, max_pixels)

    def save(self, path: PurePath, pixels: NDArray[Any], *, shown: Path | str, **metadata: bytes | None) -> None:
        """Encoded in memory, uploaded under a temporary name beside the target (the plain run's pattern, so a killed
        run's leftovers are found), its size checked, then moved over it; the temporary removed on any failure."""
        buffer = io.BytesIO()
        try:
            encode_image(np.asarray(pixels), output_format(path), buffer, **metadata)
        except ValueError as error:
            raise ImageError(shown, f"cannot encode as {output_format(path)} ({error})") from error
        except Exception as error:  # noqa: BLE001  (an encoder's own failure on metadata copied from the input)
            raise ImageError(shown, f"cannot write ({type(error).__name__}: {error})") from error
        parent, name = str(path.parent), path.name
        staging = f"{parent.rstrip('/')}/.{name[:32]}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        data = buffer.getvalue()
        try:
            if type(self.fs).__name__ not in OBJECT_STORES:
                self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(staging) as stream:
                stream.write(data)
            held = self.fs.get_file_info(staging).size
            if held != len(data):
                raise OSError(f"the store holds {held} of its {len(data)} bytes")
            self.fs.move(staging, str(path))
        except Exception as error:  # noqa: BLE001
            try:
                self.fs.delete_file(staging)
            except Exception:  # noqa: BLE001, S110  (the upload's own error is the one to report)
                pass
            raise ImageError(shown, f"cannot write it ({first_line(error)})") from error

    def remove_stale(self, targets: list[PurePath]) -> list[PurePath]:
        if type(self.fs).__name__ != "LocalFileSystem":
            return []
        return LOCAL.remove_stale(targets)


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


class Stores:
    """File systems opened from URIs, each once (an S3 one asks for its bucket's region when made)."""

    def __init__(self) -> None:
        self._opened: dict[str, StoreFiles] = {}

    def place(self, uri: str) -> Place:
        """The place a URI names."""
        if uri not in self._opened:
            self._opened[uri] = StoreFiles(uri)
        files = self._opened[uri]
        return Place(files, files.root, uri.split("://", 1)[0], folder_named=uri.endswith("/"))


def place_of(text: str | os.PathLike[str], stores: Stores) -> Place:
    """A local path or a URI as a Place."""
    return stores.place(os.fspath(text)) if is_uri(text) else local(text)
