"""Benchmark and training image sets: where they are, and proof that they are the right files.

A known set (Set5, Set14, B100, Urban100, T91, BSD200) is read from `<data dir>/<name>/` and every file is checked
against the SHA-256 list shipped in vdsr/bench/manifests (hashes only: the images are research data and never ship).
Any other `--dataset` value is taken as a plain folder of images, unverified, named after the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from vdsr.errors import DatasetError, UsageError
from vdsr.files import sha256_file
from vdsr.runtime.images import IMAGE_SUFFIXES

KNOWN_SETS = ("Set5", "Set14", "B100", "Urban100", "T91", "BSD200")
DATA_DIR_ENV = "VDSR_DATA_DIR"


@dataclass(frozen=True)
class Dataset:
    name: str
    files: tuple[Path, ...]
    verified: bool  # True when every file matched the shipped SHA-256 manifest


def resolve_data_dir(option: Path | None) -> Path:
    """The data directory: the option if given, else $VDSR_DATA_DIR; it must exist (UsageError, saying where the
    sets are expected and how to point to them)."""
    if option is None:
        env = os.environ.get(DATA_DIR_ENV)
        if not env:
            raise UsageError(
                f"No data directory: the known sets ({', '.join(KNOWN_SETS)}) are read from "
                f"<data dir>/<name>/; pass --data-dir DIR or set {DATA_DIR_ENV}=DIR"
            )
        option = Path(env)
    if not option.is_dir():
        raise UsageError(f"Data directory {option} does not exist or is not a folder (--data-dir, {DATA_DIR_ENV})")
    return option


def read_manifest(name: str) -> dict[str, str]:
    """File name -> SHA-256 for a known set, from the `sha256sum` format list shipped with the package."""
    text = files("vdsr.bench").joinpath("manifests", f"{name}.SHA256SUMS").read_text(encoding="utf-8")
    manifest = {}
    for line in text.splitlines():
        if line.strip():
            digest, filename = line.split(maxsplit=1)
            manifest[filename.lstrip("*")] = digest
    return manifest


def verify_folder(folder: Path, manifest: dict[str, str]) -> list[str]:
    """One line per file of the manifest that is missing or has another hash; empty when all match."""
    problems = []
    for filename, expected in sorted(manifest.items()):
        path = folder / filename
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        if not path.is_file():  # a folder, or a FIFO that reading would wait on forever
            problems.append(f"{path}: cannot read (not a regular file)")
            continue
        try:
            actual = sha256_file(path)
        except OSError as error:
            problems.append(f"{path}: cannot read ({error.strerror or error})")
            continue
        if actual != expected:
            problems.append(f"{path}: sha256 {actual[:16]}... does not match the manifest's {expected[:16]}...")
    return problems


def known_set_name(spec: str) -> str | None:
    """The canonical name of a known set for `spec` (case-insensitive), or None."""
    return next((name for name in KNOWN_SETS if name.lower() == spec.lower()), None)


def image_files(folder: Path) -> tuple[Path, ...]:
    """Image files directly in `folder` by suffix, sorted by name."""
    return tuple(sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))


def resolve_dataset(spec: str, data_dir: Path | None) -> Dataset:
    """A known set by name (verified, from the data directory) or a plain folder of images (unverified)."""
    name = known_set_name(spec)
    if name is not None:
        folder = resolve_data_dir(data_dir) / name
        if not folder.is_dir():
            raise DatasetError(f"{name}: folder {folder} not found in the data directory")
        manifest = read_manifest(name)
        problems = verify_folder(folder, manifest)
        if problems:
            raise DatasetError(f"{name}: {len(problems)} of {len(manifest)} files fail verification", problems)
        return Dataset(name=name, files=tuple(folder / f for f in sorted(manifest)), verified=True)
    folder = Path(spec)
    if not folder.is_dir():
        raise UsageError(f"{spec!r} is neither a known set ({', '.join(KNOWN_SETS)}) nor a folder")
    try:
        found = image_files(folder)
    except OSError as error:
        raise DatasetError(f"{folder}: cannot list the folder ({error.strerror or error})") from error
    if not found:
        raise DatasetError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return Dataset(name=folder.resolve().name, files=found, verified=False)
