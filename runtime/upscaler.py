"""The Python API, `from vdsr import Upscaler`: one backend, images and folders in, super-resolved images out.

    upscaler = Upscaler()                       # the shipped VDSR, the fastest backend this machine has
    big = upscaler.upscale(Image.open("a.png"), 2)
    report = upscaler.upscale_folder("photos/", 2)   # -> photos_x2/, same tree, same formats

Folders run as a pipeline: files are decoded and encoded on worker threads while the backend computes, with at most
a few images in flight, so the backend never waits on the disk and memory stays bounded.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from vdsr.runtime.atomic import unwritable_folder
from vdsr.runtime.backends import Backend, TensorRTBackend, TorchBackend, open_backend
from vdsr.runtime.images import (
    DEFAULT_MAX_PIXELS,
    OUTPUT_FORMATS,
    ImageError,
    LoadedImage,
    icc_profile_of,
    load_image,
    output_format,
    pixels_of,
    save_image,
    to_pil_image,
)
from vdsr.runtime.resize import output_shape_for
from vdsr.runtime.upscale import check_scale, upscale_pixels

# What a folder run picks up (by suffix, any case); a single file given by name is read whatever its suffix.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm", ".tga")
IN_FLIGHT = 2  # decoded images waiting for the backend, and results waiting to be written
# 2**31 pixels: a 6 GiB RGB uint8 result; memory is about 3x the input as float32 plus the output (see the README)
DEFAULT_MAX_OUTPUT_PIXELS = 2**31


def scale_label(scale: float) -> str:
    """2 -> '2', 2.5 -> '2.5': the suffix of default output names (photo_x2.png, photos_x2.5/)."""
    return f"{scale:.10g}"  # enough digits that two different scales never share a folder


@dataclass
class FolderReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # outputs that existed (--skip-existing)
    failed: list[str] = field(default_factory=list)  # one line each: the file and the cause
    megapixels: float = 0.0  # output pixels written, in millions


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file or folder (case-insensitive file systems and links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False  # one of them does not exist


def plan_jobs(
    source: Path, scale: float, output: Path | None = None, recursive: bool = False, fmt: str | None = None
) -> list[Job]:
    """Input file(s) -> output paths. A folder's images mirror its tree under `output` (default <folder>_x<S>); a
    file goes to `output`/<name> (default <stem>_x<S><suffix> beside it). Output names take `fmt`'s suffix if given.
    ValueError for a missing input, an output folder inside the input folder, or one that cannot be written."""
    label = scale_label(scale)
    named = Path(os.path.abspath(source))  # "." and ".." get a name; a link keeps its own (results go beside it)
    if source.is_file():
        target = output / source.name if output else named.with_name(f"{named.stem}_x{label}{named.suffix}")
        pairs = [(source, target)]
        root = target.parent
    elif source.is_dir():
        root = Path(os.path.abspath(output or named.with_name(f"{named.name}_x{label}")))
        if _same_file(root, source) or (recursive and root.resolve().is_relative_to(source.resolve())):
            raise ValueError(f"{root}: the output folder must not be the input folder or inside it")
        found = sorted(list_folder(source, recursive))
        images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(source).parts)  # hidden files, folders
                  and (p.is_file() or p.is_symlink())]  # fmt: skip  # not FIFOs or folders; broken links: reported
        pairs = [(p, root / p.relative_to(source)) for p in images]
    else:
        raise ValueError(f"{source}: no such file or folder")
    problem = unwritable_folder(root)
    if problem:
        raise ValueError(problem)
    suffix = f".{fmt.lower().lstrip('.')}" if fmt else None
    return [Job(s, t.with_suffix(suffix) if suffix else t if writable(t) else t.with_suffix(".png")) for s, t in pairs]


def writable(path: Path) -> bool:
    """Whether results can be written in the format `path`'s suffix names (a GIF's result is written as PNG)."""
    try:
        output_format(path)
    except ValueError:
        return False
    return True


class Upscaler:
    """Super-resolution with one model on one backend.

    model: 'vdsr' (default) or 'srcnn' for the shipped models, or the path of an .onnx graph or .safetensors weights.
    backend: 'auto' (the fastest available; `log` says which and why not the others) or one of vdsr.runtime.backends
    BACKENDS. tile: output pixels per tile side; batch: tiles per backend call (default 1 on CPUs, where larger
    batches only cost memory, and 4 on GPUs). precision: which of a shipped model's graphs to run: fp32, fp16, int8,
    or auto (fp16 on GPUs; on CPUs with int8 dot products the int8 graph if its recorded cost is <= 0.05 dB; else fp32).
    """

    def __init__(
        self, model: str | Path | None = None, backend: str = "auto", tile: int = 512, batch: int | None = None,
        log: Callable[[str], None] = lambda line: None, precision: str = "auto",
    ) -> None:  # fmt: skip
        if tile < 1 or (batch is not None and batch < 1):
            raise ValueError(f"Expected tile >= 1 and batch >= 1, got tile={tile}, batch={batch}")
        self.log = log
        self.backend: Backend = open_backend(backend, model, log, precision)
        batch = batch or (1 if self.backend.name.endswith("-cpu") else 4)
        limit = self.backend.max_input
        if limit is not None:  # an engine's profile bounds the windows: tile + 2 * halo and the batch must fit
            tile = min(tile, min(limit[1:]) - 2 * self.backend.halo)
            batch = min(batch, limit[0])
        self.tile, self.batch = tile, batch
        self._warned: set[float] = set()

    def _check(self, scale: float) -> float:
        scale = check_scale(scale)
        trained = self.backend.scales
        if trained and not min(trained) <= scale <= max(trained) and scale not in self._warned:
            self._warned.add(scale)
            self.log(f"warning: x{scale:g} is outside the scales the model was trained for ({trained}); "
                     "expect results closer to bicubic")  # fmt: skip
        return scale

    def upscale_pixels(self, pixels: NDArray[np.floating], scale: float, dtype: Any = np.float32) -> NDArray[Any]:
        """(H, W, C) floats in [0, 1] (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) -> the upscaled image in `dtype`.
        Torch and TensorRT backends run the whole colour pipeline on their device; the others get numpy's."""
        scale = self._check(scale)
        if isinstance(self.backend, TorchBackend | TensorRTBackend):
            from vdsr.runtime.upscale_torch import upscale_pixels_torch

            return upscale_pixels_torch(pixels, scale, self.backend.run_device, self.backend.halo, self.backend.device,
                                        self.tile, self.batch, dtype)  # fmt: skip
        return upscale_pixels(pixels, scale, self.backend, self.backend.halo, self.tile, self.batch, dtype)

    def upscale(self, image: Image.Image | NDArray[Any], scale: float) -> Any:
        """A PIL image (returned as a PIL image in the same mode family, ICC profile kept) or an (H, W) / (H, W, C)
        array: uint8 or uint16 (returned in the same type) or float in [0, 1] (returned as float32)."""
        if isinstance(image, Image.Image):
            loaded = load_image_object(image)
            result = to_pil_image(self.upscale_file(loaded, scale))
            if loaded.icc_profile:
                result.info["icc_profile"] = loaded.icc_profile
            return result
        array = np.asarray(image)
        if array.ndim == 2:
            return self.upscale(array[..., None], scale)[..., 0]  # (H, W) in, (H, W) out
        if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
            raise ValueError(f"Expected an (H, W) or (H, W, C) image with C in 1..4, got shape {np.shape(image)}")
        if array.dtype in (np.uint8, np.uint16):
            peak = np.iinfo(array.dtype).max
            return self.upscale_pixels(array.astype(np.float32) / np.float32(peak), scale, array.dtype)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"Expected uint8, uint16 or float pixels, got {array.dtype}")
        return self.upscale_pixels(array, scale)

    def upscale_file(self, loaded: LoadedImage, scale: float) -> NDArray[Any]:
        return self.upscale_pixels(loaded.pixels, scale, np.uint16 if loaded.bit_depth == 16 else np.uint8)

    def upscale_folder(
        self, source: str | Path, scale: float, output: str | Path | None = None, recursive: bool = False,
        skip_existing: bool = False, fail_fast: bool = False, fmt: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS, on_image: Callable[[Path, int], None] = lambda path, pixels: None,
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
    ) -> FolderReport:  # fmt: skip
        """Upscale a file or every image in a folder (see plan_jobs for where results go). Each file that cannot be
        read, upscaled or written is reported with its cause and the others still run (all stop at the first failure
        with fail_fast). `on_image(path, output pixels)` is called as each file finishes (0 when skipped or failed)."""
        scale = self._check(scale)
        if fmt:
            output_format(Path(f"x.{fmt.lstrip('.')}"))  # an unknown format is bad usage: fail before any work
        jobs = plan_jobs(Path(source), scale, Path(output) if output else None, recursive, fmt)
        if not jobs:
            self.log(f"warning: no images in {source}" + ("" if recursive else " (--recursive includes subfolders)"))
        report = FolderReport()
        todo = []
        claimed: dict[str, Path] = {}  # output (case-folded: Photo.png is photo.png on some disks) -> its input
        inputs = {(s.st_dev, s.st_ino) for s in (_stat(job.source) for job in jobs) if s is not None}
        for job in jobs:
            target = _stat(job.target)
            if skip_existing and target is not None:
                report.skipped.append(job.target)
            elif target is not None and (target.st_dev, target.st_ino) in inputs:  # this or another input
                report.failed.append(f"{job.source}: its output {job.target} is an input; give another --output")
            elif (key := str(job.target).casefold()) in claimed:  # photo.jpg and photo.png with --format png
                report.failed.append(f"{job.source}: its output {job.target} is also {claimed[key]}'s output")
            else:
                claimed[key] = job.source
                todo.append(job)
                continue
            on_image(job.source, 0)
        if fail_fast and report.failed:
            return report
        stop = threading.Event()
        with ThreadPoolExecutor(max(2, min(4, (os.cpu_count() or 2) // 2)), "vdsr-io") as io:
            writes: deque[tuple[Job, Future[int]]] = deque()

            def finish(job: Job, pixels: int = 0, error: str | None = None) -> None:
                if error is not None:
                    report.failed.append(error)
                    if fail_fast:
                        stop.set()
                else:
                    report.written.append(job.target)
                    report.megapixels += pixels / 1e6
                on_image(job.source, pixels)

            def finish_write(job: Job, write: Future[int]) -> None:
                try:
                    finish(job, write.result())
                except ValueError as error:  # save_image names the file
                    finish(job, error=str(error))
                except Exception as error:  # noqa: BLE001  (an encoder's own failure: this file only)
                    finish(job, error=f"{job.target}: cannot write ({type(error).__name__}: {error})")

            for job, decoded in _prefetch(io, todo, max_pixels, stop):
                try:
                    loaded = decoded.result()
                except ImageError as error:
                    finish(job, error=str(error))
                    continue
                try:
                    loaded = fit_format(loaded, job.target, scale, max_output_pixels)
                except ValueError as error:
                    finish(job, error=f"{job.source} -> {job.target}: {error}")
                    continue
                try:
                    pixels = self.upscale_file(loaded, scale)
                except Exception as error:  # noqa: BLE001  (the backend failed on this image only)
                    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    finish(job, error=f"{job.source}: cannot upscale ({cause})")  # one line per failure
                    continue
                metadata = (loaded.icc_profile, loaded.exif)
                del loaded, decoded  # the decoded pixels are not needed while the result is encoded
                writes.append((job, io.submit(_write, job.target, pixels, *metadata)))
                while len(writes) > IN_FLIGHT or (writes and writes[0][1].done()):
                    finish_write(*writes.popleft())
            while writes:
                finish_write(*writes.popleft())
        return report


def list_folder(folder: Path, recursive: bool) -> list[Path]:
    """The entries of `folder` (and of its subfolders, not following links to folders, when `recursive`). ValueError
    naming the folder that cannot be listed: a silently skipped subfolder would look like a complete run."""
    if not recursive:
        try:
            return list(folder.iterdir())
        except OSError as error:
            raise ValueError(f"{folder}: cannot list this folder ({error.strerror or error})") from error
    found: list[Path] = []

    def refuse(error: OSError) -> None:
        raise ValueError(f"{error.filename}: cannot list this folder ({error.strerror or error})") from error

    for parent, folders, files in os.walk(folder, onerror=refuse):
        found += [Path(parent, name) for name in [*folders, *files]]
    return found


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def fit_format(loaded: LoadedImage, target: Path, scale: float, max_output_pixels: int) -> LoadedImage:
    """Check before computing that the result fits: at most `max_output_pixels`, within the format's size limit,
    and an alpha channel the format can hold (one opaque everywhere is dropped for JPEG/BMP/PPM; any other is an
    error, transparency would be lost)."""
    fmt = output_format(target)
    height, width = output_shape_for((loaded.pixels.shape[0], loaded.pixels.shape[1]), scale)
    if height * width > max_output_pixels:
        raise ValueError(f"the {width}x{height} result is over the limit of {max_output_pixels} output pixels")
    limit = {"JPEG": 65_500, "WEBP": 16_383}.get(fmt)
    if limit is not None and max(height, width) > limit:
        raise ValueError(f"{width}x{height} is over {fmt}'s limit of {limit} pixels a side; use --format png")
    if not OUTPUT_FORMATS[fmt][0] and loaded.has_alpha:
        if loaded.alpha is not None and not bool(np.all(loaded.alpha == 1)):
            raise ValueError(f"{fmt} cannot hold its transparency; use --format png (or webp, tif)")
        loaded = replace(loaded, pixels=loaded.color, has_alpha=False)
    return loaded


def _prefetch(
    io: ThreadPoolExecutor, jobs: list[Job], max_pixels: int, stop: threading.Event
) -> Iterator[tuple[Job, Future[LoadedImage]]]:
    """Jobs in order with their decoding already under way, at most IN_FLIGHT ahead of the consumer."""
    pending: deque[tuple[Job, Future[LoadedImage]]] = deque()
    queue = iter(jobs)
    while not stop.is_set():
        while len(pending) < IN_FLIGHT and (job := next(queue, None)) is not None:
            pending.append((job, io.submit(load_image, job.source, max_pixels)))
        if not pending:
            return
        yield pending.popleft()
    for _, future in pending:
        future.cancel()


def _write(target: Path, pixels: NDArray[Any], icc_profile: bytes | None, exif: bytes | None) -> int:
    save_image(target, pixels, icc_profile, exif)
    return int(pixels.shape[0] * pixels.shape[1])


def load_image_object(image: Image.Image) -> LoadedImage:
    """A PIL image already in memory, normalised as load_image normalises files."""
    image = ImageOps.exif_transpose(image)  # a copy, turned upright as files are
    pixels, depth = pixels_of(image, Path("<image>"))
    return LoadedImage(Path("<image>"), pixels, depth, pixels.shape[-1] in (2, 4), icc_profile_of(image))
