from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vdsr.bench import datasets
from vdsr.bench.datasets import DATA_DIR_ENV, KNOWN_SETS, data_places, read_manifest, read_sizes, resolve_dataset
from vdsr.errors import DatasetError, UsageError


def test_manifests_ship_for_every_known_set() -> None:
    counts = {name: len(read_manifest(name)) for name in KNOWN_SETS}
    assert counts == {"Set5": 5, "Set14": 14, "B100": 100, "Urban100": 100, "T91": 91, "BSD200": 200}
    for name in KNOWN_SETS:  # and each image's size, which bounds what a download may unpack
        assert read_sizes(name).keys() == read_manifest(name).keys(), name
    assert read_sizes("Set14")["bridge.png"] == datasets.ImageSize(512, 512, "L")


def test_known_set_is_verified(data_dir: Path) -> None:
    dataset = resolve_dataset("set5", data_dir)  # names are case-insensitive
    assert dataset.name == "Set5" and dataset.verified
    assert [p.name for p in dataset.files] == ["baby.png", "bird.png", "butterfly.png", "head.png", "woman.png"]


def test_flipped_byte_and_missing_file_are_each_listed(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data_dir / "Set5", copy / "Set5")
    bird = copy / "Set5" / "bird.png"
    data = bytearray(bird.read_bytes())
    data[len(data) // 2] ^= 0x01
    bird.write_bytes(bytes(data))
    (copy / "Set5" / "head.png").unlink()
    (copy / "Set5" / "woman.png").unlink()
    (copy / "Set5" / "woman.png").mkdir()  # unreadable as a file
    with pytest.raises(DatasetError) as raised:
        resolve_dataset("Set5", copy)
    assert "3 of 5 files fail verification" in str(raised.value)
    assert len(raised.value.problems) == 3
    assert any("woman.png" in p and "cannot read" in p for p in raised.value.problems)
    assert any("bird.png" in p and "sha256" in p for p in raised.value.problems)
    assert any("head.png" in p and "missing" in p for p in raised.value.problems)


def test_data_dir_comes_from_option_or_environment_then_the_per_user_folder(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rule for every command: --data-dir (or without it $VDSR_DATA_DIR), then the per-user data folder."""
    user = tmp_path / "user" / "datasets"
    monkeypatch.setattr(datasets, "user_datasets_dir", lambda: user)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert [(p.path, p.named_by) for p in data_places(None)] == [(user, "the per-user data folder")]
    with pytest.raises(UsageError, match="No data directory") as raised:  # nothing anywhere: say where to put it
        resolve_dataset("Set5", None)
    assert f"looked for {user / 'Set5'} (the per-user data folder)" in str(raised.value)
    assert "--data-dir DIR or set VDSR_DATA_DIR=DIR" in str(raised.value) and "--download" in str(raised.value)
    shutil.copytree(data_dir / "Set5", user / "Set5")
    assert resolve_dataset("Set5", None).files[0] == user / "Set5" / "baby.png"  # found there
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    assert [p.path for p in data_places(None)] == [data_dir, user]
    assert resolve_dataset("Set5", None).files[0] == data_dir / "Set5" / "baby.png"  # the given folder comes first
    assert [p.path for p in data_places(tmp_path)] == [tmp_path, user]  # the option beats the environment
    with pytest.raises(UsageError, match="does not exist"):
        data_places(data_dir / "nowhere")
    with pytest.raises(DatasetError) as raised:  # a data directory without the set: each place tried, in order
        resolve_dataset("Urban100", tmp_path)
    assert str(raised.value).startswith(
        f"Urban100: folder not found; looked for {tmp_path / 'Urban100'} (--data-dir), "
        f"{user / 'Urban100'} (the per-user data folder); "
    )
    assert "vdsr-bench --dataset Urban100 --download" in str(raised.value)
    with pytest.raises(DatasetError) as raised:  # found by review: --download was offered for T91, which has none
        resolve_dataset("T91", tmp_path)
    assert "--download" not in str(raised.value) and "no public archive holds" in str(raised.value)


def test_plain_folder_is_unverified_and_named_by_folder(tmp_path: Path) -> None:
    folder = tmp_path / "my_photos"
    folder.mkdir()
    for name in ("b.PNG", "a.jpg", "notes.txt"):
        (folder / name).write_bytes(b"")
    dataset = resolve_dataset(str(folder), None)
    assert dataset.name == "my_photos" and not dataset.verified
    assert [p.name for p in dataset.files] == ["a.jpg", "b.PNG"]


def test_unknown_name_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="neither a known set"):
        resolve_dataset("Set6", None)
    with pytest.raises(DatasetError, match="no image files"):
        resolve_dataset(str(tmp_path), None)
