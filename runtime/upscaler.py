"""The Python API, `from vdsr import Upscaler`: one model on one backend, images and folders in, super-resolved out."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vdsr.catalogue import models_trained_for
from vdsr.errors import BackendError, ImageError, UsageError, first_line
from vdsr.files import remove_stale_temporaries
from vdsr.runtime.backends.base import Backend
from vdsr.runtime.backends.selection import open_backend
from vdsr.runtime.folders import DEFAULT_MAX_OUTPUT_PIXELS, FolderReport, claim_outputs, plan_jobs, run_jobs
from vdsr.runtime.images import DEFAULT_MAX_PIXELS, LoadedImage, load_image_object, output_format, to_pil_image
from vdsr.runtime.machine import physical_memory
from vdsr.runtime.tiling import BAND_BYTES_PER_PIXEL, Network, tile_for_memory, window_shape
from vdsr.runtime.upscale import check_output, check_scale, upscale_pixels

LIST_GROUP_PIXELS = 16_000_000  # output pixels of a list's images batched together (their windows are held)
GIB = 1 << 30


def default_memory_budget() -> int:
    """The network's working memory on CPUs when not given: a quarter of the memory this process may use (a
    container's limit included), between 256 MiB and 4 GiB (1 GiB where the OS does not say)."""
    total = physical_memory()
    return GIB if total is None else min(4 * GIB, max(GIB // 4, total // 4))


class Upscaler:
    """Super-resolution with one model on one backend; a context manager that closes the backend.

        with Upscaler() as upscaler:  # the shipped VDSR on the fastest backend this machine has
            big = upscaler.upscale(Image.open("a.png"), 2)
            report = upscaler.upscale_folder("photos/", 2)  # -> photos_x2/, same tree, same formats

    model: 'vdsr' (default) or another shipped model (vdsr.catalogue.MODELS), or the path of an .onnx graph or
    .safetensors weights. backend: 'auto' (the fastest available; `log` says which and why not the others) or one of
    vdsr.runtime.backends.selection.BACKENDS. tile: output pixels per tile side (default, on ONNX Runtime on CPUs: the
    whole image, or the largest tiles whose working memory fits `memory_budget` bytes (default: a quarter of the
    memory this process may use, 256 MiB to 4 GiB); elsewhere the backend's preferred tile, 512); batch: tiles per
    backend call (default: the backend's preferred ones; 1 on CPUs, where larger batches only cost memory, and 4 on
    GPUs). precision: which of a shipped model's graphs to run: fp32, fp16, int8, or auto (fp16 on GPUs; on CPUs
    where int8 is faster, AVX2 or int8 dot products, the int8 graph if its measured cost is within the bar; else
    fp32). device: auto, cpu, cuda or cuda:N (the GPU to run on; backends of another device are not tried).
    cpu_threads: ONNX Runtime's threads on CPUs (0: one per physical core).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        backend: str = "auto",
        *,
        tile: int | None = None,
        batch: int | None = None,
        log: Callable[[str], None] = lambda line: None,
        precision: str = "auto",
        device: str | None = None,
        memory_budget: int | None = None,
        cpu_threads: int = 0,
    ) -> None:
        if (tile is not None and tile < 1) or (batch is not None and batch < 1):
            raise UsageError(f"Expected tile >= 1 and batch >= 1, got tile={tile}, batch={batch}")
        if memory_budget is not None and memory_budget < 1 << 20:
            raise UsageError(f"Expected a memory budget of at least 1 MiB, got {memory_budget} bytes")
        self.log = log
        self.backend: Backend = open_backend(backend, model, log, precision=precision, device=device,
                                             cpu_threads=cpu_threads)  # fmt: skip
        self.memory_budget = memory_budget or default_memory_budget()
        self.fitted = tile is None and self.backend.window_bytes_per_pixel is not None  # tiles sized per image
        tile, batch = tile or self.backend.preferred_tile, batch or self.backend.preferred_batch
        if self.fitted:
            mp = self.memory_budget / ((self.backend.window_bytes_per_pixel or 1) + BAND_BYTES_PER_PIXEL) / 1e6
            log(f"tiles: whole images up to {mp:.2g} MP of network input, larger ones in the largest tiles that fit "
                f"{self.memory_budget / GIB:.2g} GiB of working memory")  # fmt: skip
        limit = self.backend.max_input
        if limit is not None:  # an engine's profile bounds the windows: tile + 2 * halo and the batch must fit
            tile = min(tile, min(limit[1:]) - 2 * self.backend.halo)
            batch = min(batch, limit[0])
        self.tile, self.batch = tile, batch
        self._warned: set[float] = set()

    def close(self) -> None:
        self.backend.close()

    def tile_for(self, shape: tuple[int, int]) -> int:
        """The tile side for a result of `shape`: the one given, or sized to the memory budget (see the class)."""
        if not self.fitted or self.backend.window_bytes_per_pixel is None:
            return self.tile
        return tile_for_memory(shape, budget=self.memory_budget, bytes_per_pixel=self.backend.window_bytes_per_pixel,
                               halo=self.backend.halo, batch=self.batch)  # fmt: skip

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _check(self, scale: float) -> float:
        scale = check_scale(scale)
        trained = self.backend.scales
        if trained and not min(trained) <= scale <= max(trained) and scale not in self._warned:
            self._warned.add(scale)
            better = models_trained_for(scale)
            risk = (": it can do worse than bicubic there (vdsr at x1.5: 2.2 dB below bicubic on Set5)"
                    if scale < min(trained) else ": its results there are not measured")  # fmt: skip
            self.log(f"warning: x{scale:g} is outside the scales the model was trained for ({trained}){risk}"
                     + (f"; models trained for x{scale:g}: {', '.join(better)}" if better else ""))  # fmt: skip
        return scale

    def upscale_pixels(
        self,
        pixels: NDArray[np.floating],
        scale: float,
        dtype: Any = np.float32,
        *,
        name: Path = Path("<image>"),
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        on_band: Callable[[float], None] | None = None,
        network: Network | None = None,
    ) -> NDArray[Any]:
        """(H, W, C) floats in [0, 1] (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) -> the upscaled image in `dtype`.
        Backends on torch tensors run the whole colour pipeline on their device; the others get numpy's. Refused
        before any work, with an ImageError naming `name`: values outside [0, 1] or not finite, a result over
        `max_output_pixels`, or smaller than the backend's smallest input. `network`: what the tiles run through
        instead of the backend (numpy backends; the list batching passes its recorder and replayer)."""
        scale = self._check(scale)
        backend = self.backend
        shape = check_output(pixels.shape, scale, max_output_pixels=max_output_pixels, name=name)
        check_values(pixels, name)
        tile = self.tile_for(shape)
        window = window_shape(shape, tile, backend.halo)
        if window[0] < backend.min_input[1] or window[1] < backend.min_input[2]:
            low = f"{backend.min_input[2]}x{backend.min_input[1]}"
            raise ImageError(name, f"the result is smaller than {backend.name}'s smallest input ({low}); use another "
                                   "--backend")  # fmt: skip
        if backend.arrays == "torch":
            from vdsr.runtime.upscale_torch import upscale_pixels_torch  # imports torch, which this backend has loaded

            try:
                return upscale_pixels_torch(pixels, scale, backend.run, halo=backend.halo, device=backend.device,
                                            tile=tile, batch=self.batch, dtype=dtype, name=name,
                                            on_band=on_band)  # fmt: skip
            except BackendError:
                raise
            except RuntimeError as error:  # torch on the device around the network: out of memory, a lost device
                cause = first_line(error)
                raise BackendError(f"{backend.name} on {backend.device}: {cause}") from error
        return upscale_pixels(pixels, scale, network or backend.run, halo=backend.halo, tile=tile,
                              batch=self.batch, dtype=dtype, name=name, on_band=on_band)  # fmt: skip

    def upscale(
        self, image: Image.Image | NDArray[Any] | list[Any], scale: float, *,
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS, name: Path = Path("<image>"),
        network: Network | None = None,
    ) -> Any:  # fmt: skip
        """A PIL image (returned as a PIL image in the same mode family, ICC profile kept) or an (H, W) / (H, W, C)
        array: uint8 or uint16 (returned in the same type) or float in [0, 1] (returned as float32); or a list of
        them (a list back, in order, with tiles batched across the images: many small frames fill the backend's
        batches as one large image would). ValueError (ImageError or UsageError) for pixels it cannot take, or a
        result over `max_output_pixels`."""
        limit = max_output_pixels
        if isinstance(image, list) and image and all(isinstance(i, Image.Image | np.ndarray) for i in image):
            return self._upscale_list(image, scale, max_output_pixels=limit)
        if isinstance(image, list) and not image:
            return []
        if isinstance(image, Image.Image):
            loaded = load_image_object(image)
            loaded = dataclasses.replace(loaded, path=name)
            result = to_pil_image(self.upscale_file(loaded, scale, max_output_pixels=limit, network=network))
            if loaded.icc_profile:
                result.info["icc_profile"] = loaded.icc_profile
            return result
        array = np.asarray(image)
        if array.ndim == 2:
            return self.upscale(array[..., None], scale, max_output_pixels=limit, name=name, network=network)[..., 0]
        if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
            raise UsageError(f"{name}: expected an (H, W) or (H, W, C) image with C in 1..4, got shape "
                             f"{np.shape(image)}")  # fmt: skip
        if array.dtype in (np.uint8, np.uint16):
            # the limit before a float copy of the input is made
            check_output(array.shape, check_scale(scale), max_output_pixels=limit, name=name)
            peak = np.iinfo(array.dtype).max
            pixels = array.astype(np.float32) / np.float32(peak)
            return self.upscale_pixels(pixels, scale, array.dtype, max_output_pixels=limit, name=name,
                                       network=network)  # fmt: skip
        if not np.issubdtype(array.dtype, np.floating):
            raise UsageError(f"{name}: expected uint8, uint16 or float pixels, got {array.dtype}")
        return self.upscale_pixels(array, scale, max_output_pixels=limit, name=name, network=network)

    def _upscale_list(self, images: list[Any], scale: float, *, max_output_pixels: int) -> list[Any]:
        """Tiles batched across images, in groups of up to LIST_GROUP_PIXELS output pixels: a first pass over a group
        records every tile window (its network returns zeros), the backend runs the windows in batches of the same
        shape, and a second pass pastes the results. The colour work runs twice; the network once. Backends on torch
        tensors (whose pipeline runs on the device) take the images one by one."""
        if self.backend.arrays == "torch" or len(images) < 2:
            return [self.upscale(one, scale, max_output_pixels=max_output_pixels) for one in images]
        budget = LIST_GROUP_PIXELS / check_scale(scale) ** 2
        results: list[Any] = []
        group: list[Any] = []
        size = 0  # input pixels in the group
        for image in images:
            if group and size + _pixels(image) > budget:
                results += self._upscale_group(group, scale, max_output_pixels=max_output_pixels)
                group, size = [], 0
            group.append(image)
            size += _pixels(image)
        return results + self._upscale_group(group, scale, max_output_pixels=max_output_pixels)

    def _upscale_group(self, images: list[Any], scale: float, *, max_output_pixels: int) -> list[Any]:
        names = [Path(f"<image {i}>") for i in range(len(images))]  # errors say which list item
        if len(images) == 1:  # nothing to batch across: no windows held
            return [self.upscale(images[0], scale, max_output_pixels=max_output_pixels, name=names[0])]
        windows: list[NDArray[np.float32]] = []

        def record(batch: NDArray[np.float32]) -> NDArray[np.float32]:
            windows.extend(np.array(batch))
            return np.zeros_like(batch)

        for image, name in zip(images, names, strict=True):
            self.upscale(image, scale, max_output_pixels=max_output_pixels, name=name, network=record)
        outputs: list[NDArray[np.float32]] = [np.empty(0, np.float32)] * len(windows)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, window in enumerate(windows):
            by_shape.setdefault(window.shape, []).append(i)
        for indices in by_shape.values():
            for first in range(0, len(indices), self.batch):
                part = indices[first : first + self.batch]
                for i, out in zip(part, self.backend.run(np.stack([windows[i] for i in part])), strict=True):
                    outputs[i] = out
        replay = iter(outputs)

        def play(batch: NDArray[np.float32]) -> NDArray[np.float32]:
            return np.stack([next(replay) for _ in range(len(batch))])

        return [self.upscale(image, scale, max_output_pixels=max_output_pixels, name=name, network=play)
                for image, name in zip(images, names, strict=True)]  # fmt: skip

    def upscale_file(
        self, loaded: LoadedImage, scale: float, *, max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        on_band: Callable[[float], None] | None = None, network: Network | None = None,
    ) -> NDArray[Any]:  # fmt: skip
        dtype = np.uint16 if loaded.bit_depth == 16 else np.uint8
        return self.upscale_pixels(loaded.pixels, scale, dtype, name=loaded.path, max_output_pixels=max_output_pixels,
                                   on_band=on_band, network=network)  # fmt: skip

    def upscale_folder(
        self,
        source: str | Path,
        scale: float,
        output: str | Path | None = None,
        *,
        recursive: bool = False,
        skip_existing: bool = False,
        fail_fast: bool = False,
        fmt: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        on_image: Callable[[Path, int], None] = lambda path, pixels: None,
        on_band: Callable[[float], None] | None = None,
    ) -> FolderReport:
        """Upscale a file or every image in a folder (see vdsr.runtime.folders.plan_jobs for where results go). Each
        file that cannot be read, upscaled or written is reported with its cause and the others still run (all stop
        at the first failure with fail_fast). A backend failure stops the run: report.stopped says why, and what was
        written before it is complete. `on_image(path, output pixels)` is called as each file finishes (0 when
        skipped or failed), `on_band(fraction of the current image done)` as its bands of tiles finish."""
        scale = self._check(scale)
        if fmt:
            output_format(Path(f"x.{fmt.lstrip('.')}"))  # an unknown format is bad usage: fail before any work
        jobs = plan_jobs(Path(source), scale, Path(output) if output else None, recursive=recursive, fmt=fmt)
        if not jobs:
            self.log(f"warning: no images in {source}" + ("" if recursive else " (--recursive includes subfolders)"))
        removed = remove_stale_temporaries(job.target for job in jobs)  # left by a run that was killed
        if removed:
            self.log(f"removed {len(removed)} temporary files a killed run left in the output folder")
        report = FolderReport()
        todo = claim_outputs(jobs, report, skip_existing=skip_existing, on_image=on_image)
        if fail_fast and report.failed:
            return report
        upscale = partial(self.upscale_file, scale=scale, max_output_pixels=max_output_pixels, on_band=on_band)
        return run_jobs(
            todo, upscale, report, scale=scale, fail_fast=fail_fast, max_pixels=max_pixels,
            max_output_pixels=max_output_pixels, on_image=on_image,
        )  # fmt: skip


def _pixels(image: Any) -> int:
    """Input pixels of a PIL image or an array."""
    if isinstance(image, Image.Image):
        return image.width * image.height
    shape = np.shape(image)
    return int(shape[0] * shape[1]) if len(shape) >= 2 else 0


def check_values(pixels: NDArray[np.floating], name: Path) -> None:
    """ImageError unless every value is finite and in [0, 1] (a float image on 0..255 would come out white). min and
    max carry NaN and inf along, so no temporary as large as the image is made."""
    if pixels.size == 0:
        return
    low, high = float(pixels.min()), float(pixels.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ImageError(name, "pixel values are NaN or inf")
    if low < 0 or high > 1:
        raise ImageError(name, f"float pixel values must lie in [0, 1], got {low:g} to {high:g} (pass 8-bit images "
                               "as uint8, or divide by 255)")  # fmt: skip
