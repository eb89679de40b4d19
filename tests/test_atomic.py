"""Atomic writes: whole file or none, the mode a plain open() would give, and long target names."""

from __future__ import annotations

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
    assert (
        unwritable_folder(tmp_path / "file" / "out") == f"cannot write in {tmp_path / 'file' / 'out'}: "
        f"{tmp_path / 'file'} is not a writable folder"
    )
