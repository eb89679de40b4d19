"""Local folder trees listed a folder at a time: a plain run's listing (list_folder, the whole tree) and a streamed
run's (walk, one folder's names at a time), with the same rules: hidden names skipped, links to folders listed but
not followed, MAX_DEPTH levels of subfolders at most (a deeper folder is refused, never skipped silently)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePath

from vdsr.errors import UsageError
from vdsr.runtime.video import INPUT_SUFFIXES

MAX_DEPTH = 64  # levels of subfolders a recursive run reads; a deeper folder is refused, never skipped silently


def is_image(name: str) -> bool:
    return PurePath(name).suffix.lower() in INPUT_SUFFIXES


def walk(folder: Path, *, recursive: bool) -> Iterator[tuple[Path, list[str], list[Path]]]:
    """Each folder of the tree, `folder` first, then its subfolders depth first in name order (with `recursive`,
    MAX_DEPTH levels at most): its names that are neither folders nor hidden, sorted, and its subfolders too deep to
    read. An explicit stack, not recursion: a tree thousands of levels deep is refused in one line, not with a
    RecursionError; it holds the subfolders still to visit, never the files. Links to folders are listed, not
    followed. UsageError naming a folder that cannot be listed: a silently skipped one would look like a whole run."""
    stack = [(folder, 0)]
    while stack:
        current, depth = stack.pop()
        names, subfolders, too_deep = [], [], []
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if not entry.is_dir(follow_symlinks=False):
                        names.append(entry.name)
                    elif recursive and depth < MAX_DEPTH:
                        subfolders.append(entry.name)
                    elif recursive:
                        too_deep.append(current / entry.name)
        except OSError as error:
            raise UsageError(f"{current}: cannot list this folder ({error.strerror or error})") from error
        stack.extend((current / name, depth + 1) for name in sorted(subfolders, reverse=True))
        yield current, sorted(names), too_deep


def refuse_deep(folder: Path, too_deep: list[Path]) -> None:
    if too_deep:
        more = f" (and {len(too_deep) - 1} more)" if len(too_deep) > 1 else ""
        raise UsageError(
            f"{min(too_deep)}{more}: more than {MAX_DEPTH} levels of folders below {folder}, which a recursive run "
            "does not read; give a deeper folder as the input"
        )


def list_folder(folder: Path, *, recursive: bool) -> list[Path]:
    """Everything in `folder` but folders and hidden names (see walk); UsageError naming the first folder too deep."""
    found: list[Path] = []
    too_deep: list[Path] = []
    for current, names, deep in walk(folder, recursive=recursive):
        found.extend(current / name for name in names)
        too_deep.extend(deep)
    refuse_deep(folder, too_deep)
    return found
