"""Atomic writes: whole file or none, the mode a plain open() would give, and long target names."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from vdsr import files
from vdsr.files import atomic_write, atomic_write_bytes, unwritable_folder


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_mode_follows_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int) -> None:
    monkeypatch.setattr(files, "UMASK", umask)
    atomic_write_bytes(tmp_path / "a.png", b"data")
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~umask  # private photos stay private


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"old")

    def fail(f: object) -> None:
        f.write(b"half")  # type: ignore[attr-defined]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "a.png", fail)
    assert (tmp_path / "a.png").read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_name_at_the_file_system_limit_still_fits(tmp_path: Path) -> None:
    name = "n" * 251 + ".png"  # 255 bytes: the temporary file beside it must be shorter
    atomic_write_bytes(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data"


def test_unwritable_folder_names_the_blocker(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert unwritable_folder(tmp_path / "new" / "deeper") is None  # can be created
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no probe left
    assert (
        unwritable_folder(tmp_path / "file" / "out") == f"cannot write in {tmp_path / 'file' / 'out'}: "
        f"{tmp_path / 'file'} is not a writable folder (a regular file)"
    )


def test_unwritable_folder_is_found_by_trying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by issue 37: a broken link where the folder goes, and folders whose permissions look writable where
    nothing can be created (/proc), passed the check; every file then failed after it was computed."""
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert unwritable_folder(tmp_path / "link" / "out") == (
        f"cannot write in {tmp_path / 'link' / 'out'}: {tmp_path / 'link'} is not a writable folder (a broken link)"
    )
    assert not (tmp_path / "nowhere").exists()
    real = tempfile.TemporaryFile

    def refused(*args: object, **kwargs: object) -> object:  # a read-only or pseudo file system, whatever its bits
        if kwargs.get("dir") == tmp_path:
            raise OSError(30, "Read-only file system")
        return real(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    assert unwritable_folder(tmp_path / "out") == (
        f"cannot write in {tmp_path / 'out'}: cannot create a file in {tmp_path} (Read-only file system)"
    )


def test_an_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    """Ctrl-C while a result is written: the temporary file is removed, the old file kept."""
    (tmp_path / "a.png").write_bytes(b"old")

    def interrupted(f: object) -> None:
        f.write(b"half")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "a.png", interrupted)
    assert (tmp_path / "a.png").read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
