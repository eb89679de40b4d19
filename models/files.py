"""Files on disk: atomic writes (a reader, or a crash, never sees a half-written file) and the clean-up of what a
killed writer left, checking a folder can be written before a long run (and whether its names ignore case), SHA-256
digests (weights, graphs and data sets are named by them), and opening an input only when it is a regular file."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from vdsr.errors import ImageError, ModelError

UMASK = os.umask(0o022)  # the process's umask, read once at import (reading it means setting it) and restored
os.umask(UMASK)


def file_type(mode: int) -> str:
    """What a file of this st_mode is, in the words messages use: "a FIFO", "a character device", ..."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def _what_is(path: Path) -> str:
    """What stands at `path`, links followed: a broken link (or a loop of links) is "a broken link"."""
    try:
        return file_type(os.stat(path).st_mode)
    except OSError:
        return "a broken link"


def unwritable_folder(folder: Path) -> str | None:
    """Why files could not be created in `folder`, found by trying before a long run (not after it): a probe file is
    created (and removed) in the folder or, before it exists, in its nearest existing parent, where it would be made.
    Permission bits alone miss read-only and pseudo file systems (/proc, /sys) and a broken link where the folder
    should be. None when results can be written there."""
    existing = folder
    try:
        while not existing.is_dir():
            if os.path.lexists(existing):  # a file, a broken link, a FIFO where a folder must go
                return f"cannot write in {folder}: {existing} is not a writable folder ({_what_is(existing)})"
            if existing.parent == existing:  # a working folder that was removed
                return f"cannot write in {folder}: no folder above it exists"
            existing = existing.parent
    except OSError as error:  # e.g. a name too long for the file system
        return f"cannot write in {folder}: {error.strerror or error}"
    try:  # unnamed where the system allows (O_TMPFILE): nothing is left behind where files cannot be removed
        with tempfile.TemporaryFile(prefix=".vdsr-probe-", suffix=".tmp", dir=existing):
            pass
    except OSError as error:
        return f"cannot write in {folder}: cannot create a file in {existing} ({error.strerror or error})"
    return None


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


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Let `write` fill a temporary file beside `path`, flush it to disk, then rename it over `path`. Streaming into
    the file (an image encoder, say) keeps no second copy of the data in memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a short temporary name (a target name near the file system's limit must still fit) that says whose it is
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:32]}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~UMASK)  # mkstemp creates 0600; give what open() would have given
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# atomic_write's temporary names: "." + the target's name (its first 32 characters) + "." + the writer's process id
# + "." + mkstemp's random part + ".tmp"
_TEMPORARY = re.compile(r"\.(?P<name>.{1,32})\.(?P<pid>[0-9]{1,10})\.[A-Za-z0-9_]{1,16}\.tmp", re.DOTALL)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: is there such a process (it may be another one by now: then keep its files)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temporaries(targets: Iterable[Path]) -> list[Path]:
    """Remove the temporary files atomic_write left beside `targets` when its process was killed: only names of its
    own pattern, for these targets, whose writing process is gone (a run still writing keeps its files). Returns the
    files removed."""
    names: dict[Path, set[str]] = {}
    for target in targets:
        names.setdefault(target.parent, set()).add(target.name[:32])
    removed = []
    for folder, own in names.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue  # not made yet: nothing left there
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry)
            if match and match["name"] in own and not _running(int(match["pid"])):
                try:
                    os.unlink(folder / entry)
                except OSError:
                    continue  # gone already, or not ours to remove: the run goes on
                removed.append(folder / entry)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path) -> str:
    """The file's SHA-256 in hex; read through open_regular (a FIFO is refused, not waited on)."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file, whatever links lead there. A FIFO, socket or device is
    refused before any read (a FIFO would block forever): opened non-blocking, then checked on the descriptor itself,
    so the file checked is the file read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # load_image says these in its own words
    except OSError as error:  # a name too long, a loop of links, ...
        raise ImageError(path, f"cannot open it ({error.strerror or error})") from error
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError(path, "is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise ImageError(path, "not a regular file (a FIFO, socket or device)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_model_file(path: Path, *, limit: int) -> bytes:
    """The bytes of a weights file or graph, opened as open_regular opens images (a FIFO swapped in after the checks
    is refused, not read forever); ModelError naming the file when it cannot be read or holds over `limit` bytes."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(min(size, limit) + 1)  # not limit + 1: read() reserves what it is asked for
    except ImageError as error:
        raise ModelError(f"{path}: {error.cause}") from None
    except OSError as error:
        raise ModelError(f"{path}: cannot read it ({error.strerror or error})") from error
    if len(data) > limit:  # also a file that grew while it was read
        raise ModelError(f"{path}: over {limit >> 20} MiB, larger than any model file this package reads")
    return data
