"""Fetch a known set from a public copy into a data directory: `vdsr-bench --dataset Urban100 --download`.

Nothing is trusted until it is checked, and nothing half-done is left: the archive is streamed to a temporary file
beside the target (size-capped), its own hash checked where one is recorded, then only regular files named in the
set's manifest are taken out of it (an archive with a member outside itself, an absolute path or a link under a
manifest name is refused whole), each read no further than an image of the manifest's size can take (a zip bomb stops
there), hashed as it is written and checked against the manifest's SHA-256. Only a complete, verified set moves into
place, in one rename; anything else is a DatasetError listing what was wrong, and the temporary folder goes.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from gzip import GzipFile
from pathlib import Path, PurePosixPath
from typing import IO

from vdsr._version import __version__
from vdsr.bench.datasets import CONVERTED_SETS, KNOWN_SETS, ImageSize, read_manifest, read_sizes
from vdsr.errors import DatasetError, UsageError


@dataclass(frozen=True)
class Source:
    """A public archive of a set's HR images, named as in the set's manifest."""

    url: str
    folder: str | None = None  # the archive folder that holds the files (the end of their path); None: anywhere
    archive_hash: str | None = None  # "md5:HEX" or "sha256:HEX" of the archive where recorded; else only its files


# The one place the download sources are recorded: the Hugging Face mirror (eugenesiow) of the HR images that the
# SelfExSR release (Huang et al., CVPR 2015, github.com/jbhuang0604/SelfExSR) made the common copy of these sets. Their
# files are checked one by one against our manifests; bytes that differ (another PNG encoder, a cropped image) are
# refused, listed. The Urban100 archive's MD5 is the one deepinv's Urban100 loader checks. T91 and BSD200 here are
# PNGs converted from other formats (../shared/datasets/README.md): no public archive holds those bytes.
MIRROR = "https://huggingface.co/datasets/eugenesiow/{0}/resolve/main/data/{0}_HR.tar.gz"
SOURCES = {
    "Set5": Source(MIRROR.format("Set5"), folder="Set5_HR"),
    "Set14": Source(MIRROR.format("Set14"), folder="Set14_HR"),
    "B100": Source(MIRROR.format("BSD100"), folder="BSD100_HR"),
    "Urban100": Source(
        MIRROR.format("Urban100"), folder="Urban100_HR", archive_hash="md5:65d9d84a34b72c6f7ca1e26a12df1e4c"
    ),
}
assert set(SOURCES) == set(KNOWN_SETS) - set(CONVERTED_SETS), "every known set has a source, or is converted"
URL_ENV = "VDSR_DATASET_URL_{}"  # e.g. VDSR_DATASET_URL_URBAN100: another copy (a mirror, a local server)
TIMEOUT_SECONDS = 60  # for each network read: a stalled server is an error, not a hang
CHUNK = 1 << 20


@dataclass(frozen=True)
class SetManifest:
    """What a set must hold: each file's SHA-256 and the most bytes its file may have (from its image size), and
    the most bytes an archive of it may have or unpack to."""

    name: str
    sha256: dict[str, str]
    max_bytes: dict[str, int]
    max_total: int


def png_max_bytes(size: ImageSize) -> int:
    """The most bytes a PNG of this size holds in practice: its rows (a filter byte each) stored uncompressed grow by
    deflate's 5 bytes per 64 KiB block and the chunks' 12 bytes; 1% and 1 MiB leave room for metadata (an ICC
    profile, text). A bound against archives that unpack to far more than they say, not a format check."""
    channels = {"1": 1, "L": 1, "P": 1, "LA": 2, "I;16": 2, "RGB": 3, "RGBA": 4, "I": 4}.get(size.mode, 8)
    raw = size.height * (size.width * channels + 1)
    return raw + raw // 100 + (1 << 20)


def set_manifest(name: str) -> SetManifest:
    """A known set's manifest as shipped: SHA-256 and image size of every file. An archive may be the set's own
    bytes at most twice over (it may also hold the small images) and 64 MiB of headers and other files."""
    sha256, sizes = read_manifest(name), read_sizes(name)
    max_bytes = {f: png_max_bytes(sizes[f]) for f in sha256}
    return SetManifest(name, sha256, max_bytes, max_total=2 * sum(max_bytes.values()) + (64 << 20))


def source_for(name: str) -> Source:
    """Where `name` is fetched from: $VDSR_DATASET_URL_<NAME> (only its files are checked then), else SOURCES."""
    override = os.environ.get(URL_ENV.format(name.upper()))
    if override:
        return Source(override)
    if name not in SOURCES:
        raise UsageError(
            f"--download: no public archive is recorded for {name} (its manifest lists files converted for this "
            f"project); put the set in <data dir>/{name}/, or give a copy as {URL_ENV.format(name.upper())}=URL"
        )
    return SOURCES[name]


def download_set(
    manifest: SetManifest,
    data_dir: Path,
    source: Source,
    *,
    on_bytes: Callable[[int], None] = lambda count: None,
) -> Path:
    """Fetch `source`, take the manifest's files out of it, check every one and install them as
    `data_dir/<name>/` in one rename; returns that folder. `on_bytes` gets each downloaded chunk's length."""
    name, target = manifest.name, data_dir / manifest.name
    if urllib.parse.urlsplit(source.url).scheme not in ("http", "https"):
        raise UsageError(f"{name}: cannot download {source.url!r}: an http:// or https:// URL is needed")
    if target.exists():
        raise DatasetError(f"{name}: {target} already exists; remove it to download the set again")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.download.", dir=data_dir))
    except OSError as error:
        raise DatasetError(f"{name}: cannot write in {data_dir} ({error.strerror or error})") from error
    try:
        archive, unpacked = work / "archive", work / name
        fetch(source, archive, manifest, on_bytes=on_bytes)
        unpacked.mkdir()
        digests = extract(archive, unpacked, manifest, folder=source.folder)
        problems = [f"{f}: not in the archive" for f in sorted(set(manifest.sha256) - set(digests))]
        problems += [
            f"{f}: sha256 {digests[f][:16]}... does not match the manifest's {expected[:16]}..."
            for f, expected in sorted(manifest.sha256.items())
            if f in digests and digests[f] != expected
        ]
        if problems:
            raise DatasetError(
                f"{name}: {len(problems)} of {len(manifest.sha256)} files from {source.url} fail verification; "
                "nothing installed",
                problems,
            )
        try:
            os.rename(unpacked, target)  # one step: the set is there whole, or not at all
        except OSError as error:
            raise DatasetError(f"{name}: cannot move the set into {target} ({error.strerror or error})") from error
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the archive and whatever was not installed
    return target


def fetch(source: Source, archive: Path, manifest: SetManifest, *, on_bytes: Callable[[int], None]) -> None:
    """Stream the archive into `archive`, at most manifest.max_total bytes, checking its hash where recorded."""
    name, limit = manifest.name, manifest.max_total
    algorithm, _, expected = (source.archive_hash or "sha256:").partition(":")
    digest = hashlib.new(algorithm)
    request = urllib.request.Request(source.url, headers={"User-Agent": f"vdsr/{__version__}"})
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response, archive.open("wb") as out:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise DatasetError(f"{name}: {source.url} is {int(length)} bytes, more than the set's {limit}")
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if received > limit:
                    raise DatasetError(f"{name}: {source.url} sends more than the set's {limit} bytes: stopped")
                out.write(chunk)
                digest.update(chunk)
                on_bytes(len(chunk))
    except urllib.error.HTTPError as error:
        raise DatasetError(f"{name}: cannot download {source.url} (HTTP {error.code} {error.reason})") from error
    except urllib.error.URLError as error:
        raise DatasetError(f"{name}: cannot download {source.url} ({error.reason})") from error
    except (OSError, http.client.HTTPException) as error:  # a reset, a timeout or a cut mid-way; a full disk
        cause = getattr(error, "strerror", None) or error
        raise DatasetError(f"{name}: cannot download {source.url} ({cause})") from error
    if expected and digest.hexdigest() != expected.lower():
        raise DatasetError(
            f"{name}: the archive from {source.url} has {algorithm} {digest.hexdigest()}, not the recorded {expected}"
        )


class _Capped(io.RawIOBase):
    """A stream that refuses to give more than `limit` bytes: a tar.gz is unpacked as a stream, and even a member
    that is skipped is unpacked, so what unpacking may produce is bounded here."""

    def __init__(self, raw: io.BufferedIOBase, limit: int, what: str) -> None:
        super().__init__()
        self.raw, self.left, self.what = raw, limit, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(min(len(buffer), self.left + 1))
        self.left -= len(data)
        if self.left < 0:
            raise DatasetError(f"{self.what}: the archive unpacks to more than the set can hold: refused")
        buffer[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class _Member:
    name: str  # as in the archive
    regular: bool  # a plain file (not a link, folder, device)
    size: int  # as the archive declares it
    open: Callable[[], IO[bytes]]


def _safe_path(name: str, what: str) -> PurePosixPath:
    """A member's path, refused (the whole archive) if it points outside the archive: absolute, a drive, or `..`."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and path.parts[0].endswith(":")):
        raise DatasetError(f"{what}: archive member {name!r} points outside the archive: refused, nothing installed")
    return path


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    for info in archive.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type where the archiver recorded one; 0 if not
        regular = not info.is_dir() and kind in (0, stat.S_IFREG)

        def open_member(info: zipfile.ZipInfo = info) -> IO[bytes]:
            return archive.open(info)

        yield _Member(info.filename, regular, info.file_size, open_member)


def _tar_members(archive: tarfile.TarFile) -> Iterator[_Member]:
    for info in archive:  # a stream: each member is read before the next is looked at

        def open_member(info: tarfile.TarInfo = info) -> IO[bytes]:
            reader = archive.extractfile(info)
            if reader is None:
                raise DatasetError(f"{info.name}: not a regular file")
            return reader

        yield _Member(info.name, info.isreg(), info.size, open_member)


def extract(archive: Path, out: Path, manifest: SetManifest, *, folder: str | None) -> dict[str, str]:
    """Write the manifest's files from `archive` (zip, tar or tar.gz) into `out`; returns each one's SHA-256."""
    what = manifest.name
    digests: dict[str, str] = {}
    try:
        with archive.open("rb") as raw:
            magic = raw.read(4)
            raw.seek(0)
            if magic.startswith(b"PK"):
                with zipfile.ZipFile(raw) as opened:
                    for member in _zip_members(opened):
                        _take(member, out, manifest, folder=folder, digests=digests)
                return digests
            stream: io.BufferedIOBase = GzipFile(fileobj=raw) if magic.startswith(b"\x1f\x8b") else raw
            capped = io.BufferedReader(_Capped(stream, manifest.max_total, what), CHUNK)
            with tarfile.open(fileobj=capped, mode="r|") as opened:
                for member in _tar_members(opened):
                    _take(member, out, manifest, folder=folder, digests=digests)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, RuntimeError) as error:  # Runtime: encrypted
        raise DatasetError(f"{what}: not a readable zip, tar or tar.gz archive ({error})") from error
    except OSError as error:  # a gzip stream that is not one; a full disk
        raise DatasetError(f"{what}: cannot unpack the archive ({error.strerror or error})") from error
    return digests


def _take(member: _Member, out: Path, manifest: SetManifest, *, folder: str | None, digests: dict[str, str]) -> None:
    """One member: checked, then written to out/<file name> if the manifest names it (hashed as it is written)."""
    what = manifest.name
    path = _safe_path(member.name, what)
    filename = path.name
    if filename not in manifest.sha256 or (folder is not None and path.parent.name != folder):
        return  # the set's small images, a readme: not ours
    if not member.regular:
        raise DatasetError(f"{what}: archive member {member.name!r} is a link or special file, not an image: refused")
    if filename in digests:
        raise DatasetError(f"{what}: the archive holds {filename} twice ({member.name!r}): refused")
    limit = manifest.max_bytes[filename]
    if member.size > limit:
        raise DatasetError(f"{what}: {member.name!r} says it is {member.size} bytes, more than its image can be")
    digest, written = hashlib.sha256(), 0
    with member.open() as reader, (out / filename).open("xb") as writer:
        while chunk := reader.read(CHUNK):
            written += len(chunk)
            if written > limit:  # the declared size lied
                raise DatasetError(f"{what}: {member.name!r} unpacks to more than its image can be: refused")
            writer.write(chunk)
            digest.update(chunk)
    digests[filename] = digest.hexdigest()
