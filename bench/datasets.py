"""Benchmark and training image sets: where they are, and proof that they are the right files.

A known set (Set5, Set14, B100, Urban100, T91, BSD200) is read from `<data dir>/<name>/` and every file is checked
against the SHA-256 list shipped in vdsr/bench/manifests (hashes and image sizes only: the images are research data
and never ship). Where the data directories are is one rule, `data_places`, for every command (vdsr-bench, vdsr-train,
vdsr-export): --data-dir (or, without it, $VDSR_DATA_DIR), then the per-user data folder, where `--download` puts a
set (vdsr.bench.download). Any other `--dataset` value is taken as a plain folder of images, unverified, named after
the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from platformdirs import user_data_dir

from vdsr.errors import DatasetError, ImageError, UsageError
from vdsr.files import sha256_file
from vdsr.runtime.images import IMAGE_SUFFIXES

KNOWN_SETS = ("Set5", "Set14", "B100", "Urban100", "T91", "BSD200")
CONVERTED_SETS = ("T91", "BSD200")  # PNGs converted for this project: no public archive holds their bytes
DATA_DIR_ENV = "VDSR_DATA_DIR"


@dataclass(frozen=True)
class Dataset:
    name: str
    files: tuple[Path, ...]
    verified: bool  # True when every file matched the shipped SHA-256 manifest


@dataclass(frozen=True)
class DataPlace:
    """A folder the known sets are looked for in, and what named it (for messages)."""

    path: Path
    named_by: str  # "--data-dir", "$VDSR_DATA_DIR" or "the per-user data folder"


def user_datasets_dir() -> Path:
    """The per-user data folder (~/.local/share/vdsr/datasets on Linux): where `--download` puts a set by default."""
    return Path(user_data_dir("vdsr")) / "datasets"


def given_place(option: Path | None) -> DataPlace | None:
    """The data directory the user gave: --data-dir, or without it $VDSR_DATA_DIR; None if neither."""
    env = os.environ.get(DATA_DIR_ENV)
    if option is not None:
        return DataPlace(option, "--data-dir")
    return DataPlace(Path(env), f"${DATA_DIR_ENV}") if env else None


def data_places(option: Path | None) -> list[DataPlace]:
    """Where the known sets are looked for, in order: the data directory the user gave (given_place), then the
    per-user data folder. A data directory that was given must exist (UsageError); the per-user folder need not."""
    places = []
    given = given_place(option)
    if given is not None:
        if not given.path.is_dir():
            raise UsageError(f"Data directory {given.path} does not exist or is not a folder ({given.named_by})")
        places.append(given)
    user = user_datasets_dir()
    if given is None or given.path.resolve() != user.resolve():
        places.append(DataPlace(user, "the per-user data folder"))
    return places


def download_dir(option: Path | None) -> Path:
    """Where `--download` puts a set: the data directory the user gave (given_place), else the per-user data folder;
    the first place data_places looks in."""
    given = given_place(option)
    return given.path if given is not None else user_datasets_dir()


def locate_set(name: str, places: list[DataPlace]) -> Path | None:
    """`<place>/<name>` in the first of `places` that has it, or None."""
    return next((place.path / name for place in places if (place.path / name).is_dir()), None)


def find_set(name: str, option: Path | None) -> Path:
    """The folder of known set `name` (see data_places). Not found: a UsageError when no data directory exists at
    all, else a DatasetError; both name each place tried and how to fetch the set."""
    places = data_places(option)
    folder = locate_set(name, places)
    if folder is not None:
        return folder
    tried = ", ".join(f"{place.path / name} ({place.named_by})" for place in places)
    fetch = (
        f"or fetch it: vdsr-bench --dataset {name} --download"
        if name not in CONVERTED_SETS
        else "(no public archive holds this project's copy of it: see bench/README.md)"
    )
    hint = f"pass --data-dir DIR or set {DATA_DIR_ENV}=DIR to a folder that holds {name}/, {fetch}"
    if not any(place.path.is_dir() for place in places):
        raise UsageError(
            f"No data directory: the known sets are read from <data dir>/<name>/; looked for {tried}; {hint}"
        )
    raise DatasetError(f"{name}: folder not found; looked for {tried}; {hint}")


def read_manifest(name: str) -> dict[str, str]:
    """File name -> SHA-256 for a known set, from the `sha256sum` format list shipped with the package."""
    text = files("vdsr.bench").joinpath("manifests", f"{name}.SHA256SUMS").read_text(encoding="utf-8")
    manifest = {}
    for line in text.splitlines():
        if line.strip():
            digest, filename = line.split(maxsplit=1)
            manifest[filename.lstrip("*")] = digest
    return manifest


@dataclass(frozen=True)
class ImageSize:
    width: int
    height: int
    mode: str  # PIL's: RGB, L, ...


def read_sizes(name: str) -> dict[str, ImageSize]:
    """File name -> image size of a known set, from the `<name>.sizes.tsv` shipped with the package (columns file,
    width, height, mode, with a header line)."""
    text = files("vdsr.bench").joinpath("manifests", f"{name}.sizes.tsv").read_text(encoding="utf-8")
    sizes = {}
    for line in text.splitlines()[1:]:
        if line.strip():
            filename, width, height, mode = line.split("\t")
            sizes[filename] = ImageSize(int(width), int(height), mode)
    return sizes


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


def dataset_digest(dataset: Dataset) -> str:
    """One hash over the files' names and SHA-256s: the exact images a model was trained or a bench scored on (a
    file that cannot be read counts as such, and is reported where it is read)."""
    hashes = []
    for path in sorted(dataset.files, key=lambda p: p.name):
        try:
            hashes.append((path.name, sha256_file(path)))
        except (OSError, ImageError):
            hashes.append((path.name, "unreadable"))
    return hashlib.sha256(json.dumps(hashes).encode()).hexdigest()


def known_set_name(spec: str) -> str | None:
    """The canonical name of a known set for `spec` (case-insensitive), or None."""
    return next((name for name in KNOWN_SETS if name.lower() == spec.lower()), None)


def image_files(folder: Path) -> tuple[Path, ...]:
    """Image files directly in `folder` by suffix, sorted by name: every entry so named but a folder, so that a
    broken link or a FIFO is reported when it is read (one line each), not dropped without a word."""
    return tuple(sorted(p for p in folder.iterdir() if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES))


def resolve_dataset(spec: str, data_dir: Path | None) -> Dataset:
    """A known set by name (verified, from the data directory) or a plain folder of images (unverified)."""
    name = known_set_name(spec)
    if name is not None:
        folder = find_set(name, data_dir)
        manifest = read_manifest(name)
        problems = verify_folder(folder, manifest)
        if problems:
            raise DatasetError(f"{name}: {len(problems)} of {len(manifest)} files fail verification", problems)
        return Dataset(name=name, files=tuple(folder / f for f in sorted(manifest)), verified=True)
    folder = Path(spec)
    if not spec.strip():  # Path("") is the current folder
        raise UsageError("--dataset: an empty name; give a known set or a folder")
    if not folder.is_dir():
        raise UsageError(f"{spec!r} is neither a known set ({', '.join(KNOWN_SETS)}) nor a folder")
    try:
        found = image_files(folder)
    except OSError as error:
        raise DatasetError(f"{folder}: cannot list the folder ({error.strerror or error})") from error
    if not found:
        raise DatasetError(
            f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) directly in it (subfolders are not read)"
        )
    return Dataset(name=folder.resolve().name, files=found, verified=False)
