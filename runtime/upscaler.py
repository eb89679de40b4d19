"""The Python API, `from vdsr import Upscaler`: one model on one backend, images and folders in, super-resolved out."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vdsr.catalogue import untrained_warning
from vdsr.errors import ImageError
from vdsr.model import Model
from vdsr.runtime import model_choice
from vdsr.runtime.api_inputs import is_image_list, prepare, upscale_list
from vdsr.runtime.backends.base import Backend
from vdsr.runtime.backends.opening import open_chosen
from vdsr.runtime.backends.specs import Request
from vdsr.runtime.batching import Failed
from vdsr.runtime.driving import drive_on, steps_on
from vdsr.runtime.images import DEFAULT_MAX_PIXELS, LoadedImage, output_format
from vdsr.runtime.machine import GIB, checked_memory_budget, default_memory_budget
from vdsr.runtime.picture import check_output, luma_steps
from vdsr.runtime.pipeline import DEFAULT_MAX_OUTPUT_PIXELS, run_jobs
from vdsr.runtime.places import local
from vdsr.runtime.planning import FolderReport, Job, claim, nothing_found, plan
from vdsr.runtime.resize import output_shape_for
from vdsr.runtime.sequences import check_videos, is_sequence, run_sequences
from vdsr.runtime.tiling import BAND_BYTES_PER_PIXEL, Network, Steps, tile_for_memory
from vdsr.runtime.video import VideoResult, VideoSettings, upscale_video
from vdsr.scale import check_scale


class Upscaler:
    """Super-resolution with one model on one backend; a context manager that closes the backend.

        with Upscaler() as upscaler:  # the shipped VDSR on the fastest backend this machine has
            big = upscaler.upscale(Image.open("a.png"), 2)
            report = upscaler.upscale_folder("photos/", 2)  # -> photos_x2/, same tree, same formats

    model: 'vdsr' (default) or another shipped model (vdsr.catalogue.MODELS), the path of an .onnx graph or
    .safetensors weights, or a vdsr.Model. backend: 'auto' (the fastest available; `log` says which and why not the
    others) or one of vdsr.runtime.backends.specs.BACKENDS. tile: output pixels per tile side (default, on ONNX
    Runtime on CPUs: the whole image, or the largest tiles whose working memory fits `memory_budget` bytes (default:
    a quarter of the memory this process may use, 256 MiB to 4 GiB); elsewhere the backend's preferred tile, 512);
    batch: tiles per backend call (default: the backend's preferred ones; 1 on CPUs, where larger batches only cost
    memory, and 4 on GPUs). precision: which of a shipped model's graphs to run: fp32, fp16, int8, or auto (fp16 on
    GPUs; on CPUs where int8 is faster, AVX2 or int8 dot products, the int8 graph if its measured cost is within the
    bar; else fp32). device: auto, cpu, cuda or cuda:N (the GPU to run on; backends of another device are not
    tried). cpu_threads: ONNX Runtime's threads on CPUs (0: one per physical core). tta: the geometric
    self-ensemble, the mean of the network on the 8 flips and rotations (vdsr.runtime.ensemble; 8x the cost).
    """

    def __init__(
        self,
        model: str | Path | Model | None = "auto",
        backend: str = "auto",
        *,
        tile: int | None = None,
        batch: int | None = None,
        log: Callable[[str], None] = lambda line: None,
        precision: str = "auto",
        device: str | None = None,
        memory_budget: float | None = None,
        cpu_threads: int = 0,
        tta: bool = False,
    ) -> None:
        request = Request(backend, precision, device, cpu_threads, tile, batch)
        memory_budget = None if memory_budget is None else checked_memory_budget(memory_budget)
        self.log, self.tta = log, tta
        self.for_lossy: Upscaler | None = None  # model auto: the model of compressed inputs (vdsr.runtime.model_choice)
        if model_choice.is_auto(model):
            log(model_choice.explain())
            options = {"tile": tile, "batch": batch, "precision": model_choice.lossy_precision(precision, log)}
            options |= {"memory_budget": memory_budget, "cpu_threads": cpu_threads, "device": device, "tta": tta}
            self.for_lossy = Upscaler(model_choice.LOSSY_MODEL, backend, log=log, **options)  # type: ignore[arg-type]
            model = model_choice.CLEAN_MODEL
        self.model = Model.load(model)
        self.backend: Backend = open_chosen(self.model, request, log)
        self.memory_budget = memory_budget or default_memory_budget()
        self.fitted = tile is None and self.backend.window_bytes_per_pixel is not None  # tiles sized per image
        tile, batch = tile or self.backend.preferred_tile, batch or self.backend.preferred_batch
        if self.fitted:
            mp = self.memory_budget / ((self.backend.window_bytes_per_pixel or 1) + BAND_BYTES_PER_PIXEL) / 1e6
            log(
                f"tiles: whole images up to {mp:.2g} MP of network input, larger ones in the largest tiles that fit "
                f"{self.memory_budget / GIB:.2g} GiB of working memory"
            )
        limit = self.backend.max_input
        if limit is not None:  # an engine's profile bounds the windows: tile + 2 * halo and the batch must fit
            tile = min(tile, min(limit[1:]) - 2 * self.backend.halo)
            batch = min(batch, limit[0])
        self.tile, self.batch = tile, batch
        self._warned: set[float] = set()

    def close(self) -> None:
        self.backend.close()
        if self.for_lossy is not None:
            self.for_lossy.close()

    def _for(self, *, lossy: bool, scale: float) -> Upscaler:
        """The upscaler of an input: this one, or with model auto the one for compressed inputs and low scales."""
        if self.for_lossy is not None and model_choice.wants_lossy_model(
            lossy=lossy, scale=scale, clean_scales=self.backend.scales
        ):
            return self.for_lossy
        return self

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def tile_for(self, shape: tuple[int, int]) -> int:
        """The tile side for a result of `shape`: the one given, or sized to the memory budget (see the class)."""
        if not self.fitted or self.backend.window_bytes_per_pixel is None:
            return self.tile
        return tile_for_memory(
            shape,
            budget=self.memory_budget,
            bytes_per_pixel=self.backend.window_bytes_per_pixel,
            halo=self.backend.halo,
            batch=self.batch,
        )

    def check_scale(self, scale: object) -> float:
        """The API's scale check (vdsr.scale), with a warning, once per scale, where the model was not trained."""
        scale = check_scale(scale)
        if (chosen := self._for(lossy=False, scale=scale)) is not self:  # model auto, a scale for the other model
            return chosen.check_scale(scale)
        warning = untrained_warning(scale, self.backend.scales)
        if warning and scale not in self._warned:
            self._warned.add(scale)
            self.log(warning)
        return scale

    def steps(
        self,
        pixels: NDArray[np.floating],
        scale: float,
        dtype: Any = np.float32,
        *,
        name: Path | str = "<image>",
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        on_band: Callable[[float], None] | None = None,
    ) -> Steps[NDArray[Any]]:
        """One picture's steps on this backend (vdsr.runtime.picture; on the device for backends on torch tensors),
        `scale` already checked. Refused, with an ImageError naming `name`: values outside [0, 1] or not finite, a
        result over `max_output_pixels`, or smaller than the backend's smallest input."""
        shape = check_output(np.shape(pixels), scale, max_output_pixels=max_output_pixels, name=name)
        tile = self.tile_for(shape)
        return (yield from steps_on(self.backend, pixels, scale, dtype=dtype, tile=tile, name=name, on_band=on_band))

    def upscale_group(
        self,
        images: list[LoadedImage],
        scale: float,
        *,
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        on_band: Callable[[float], None] | None = None,
        network: Network | None = None,
    ) -> list[NDArray[Any] | ImageError]:
        """The pipeline's upscaling step (vdsr.runtime.pipeline): decoded images, their tiles batched across them; for
        each its result (uint16 for 16-bit sources, else uint8) or the ImageError it failed with. BackendError when
        the backend fails (every later image would too). With model auto, each image on its model's backend;
        `network`: run instead of this backend's own (a service's shared batches; no model auto then)."""
        options: dict[str, Any] = {"max_output_pixels": max_output_pixels, "on_band": on_band}
        if network is not None:
            return self._group(images, scale, network=network, **options)
        chosen = [self._for(lossy=loaded.lossy, scale=scale) for loaded in images]  # model auto: by its model
        return model_choice.by_model(images, chosen, partial(Upscaler._group, scale=scale, **options))

    def _group(
        self, images: list[LoadedImage], scale: float, *, network: Network | None = None, **options: Any
    ) -> list[NDArray[Any] | ImageError]:
        depth = [np.uint16 if loaded.bit_depth == 16 else np.uint8 for loaded in images]
        steps = [self.steps(im.pixels, scale, d, name=im.path, **options) for im, d in zip(images, depth, strict=True)]
        return [o.error if isinstance(o, Failed) else o for o in self._drive(steps, network=network)]

    def _drive(
        self, steps: list[Steps[NDArray[Any]]], *, host: bool = False, network: Network | None = None
    ) -> list[NDArray[Any] | Failed]:
        """`steps` through the backend (vdsr.runtime.driving); `host`: windows cut on the host (video)."""
        return drive_on(self.backend, steps, batch=self.batch, host=host, tta=self.tta, network=network)

    def upscale_lumas(
        self, planes: list[NDArray[np.float32]], scale: float, *, name: Path | str = "<video>"
    ) -> list[NDArray[np.float32] | ImageError]:
        """Luma planes alone (video frames, vdsr.runtime.video), `scale` already checked: each upscaled (float32, not
        clipped) or the ImageError it failed with, their tiles batched across them."""
        steps = [
            luma_steps(
                y, scale, halo=self.backend.halo, tile=self.tile_for(output_shape_for(y.shape, scale)), name=name
            )
            for y in planes
        ]
        return [o.error if isinstance(o, Failed) else o for o in self._drive(steps, host=True)]

    def upscale_video(
        self,
        source: str | Path,
        target: str | Path,
        scale: float,
        *,
        settings: VideoSettings | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        on_frame: Callable[[int, int | None], None] = lambda done, total: None,
    ) -> VideoResult:
        """A video upscaled into `target` (vdsr.runtime.video); ImageError naming the file if it cannot be. With
        model auto, by the model of compressed inputs."""
        if self.for_lossy is not None:
            limits = {"max_pixels": max_pixels, "max_output_pixels": max_output_pixels}
            return self.for_lossy.upscale_video(source, target, scale, settings=settings, on_frame=on_frame, **limits)
        scale = self.check_scale(scale)
        return upscale_video(
            Path(source),
            Path(target),
            scale,
            lumas=partial(self.upscale_lumas, scale=scale, name=source),
            settings=settings or VideoSettings(),
            group=self.batch,
            max_pixels=max_pixels,
            max_output_pixels=max_output_pixels,
            on_frame=on_frame,
        )

    def upscale_pixels(
        self,
        pixels: NDArray[np.floating],
        scale: float,
        dtype: Any = np.float32,
        *,
        name: Path | str = "<image>",
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        on_band: Callable[[float], None] | None = None,
    ) -> NDArray[Any]:
        """(H, W, C) floats in [0, 1] (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) -> the upscaled image in `dtype`.
        Refused before any work as `steps` says."""
        scale = self.check_scale(scale)
        if (chosen := self._for(lossy=False, scale=scale)) is not self:
            options = {"name": name, "max_output_pixels": max_output_pixels, "on_band": on_band}
            return chosen.upscale_pixels(pixels, scale, dtype, **options)  # type: ignore[arg-type]
        (outcome,) = self._drive(
            [self.steps(pixels, scale, dtype, name=name, max_output_pixels=max_output_pixels, on_band=on_band)]
        )
        if isinstance(outcome, Failed):
            raise outcome.error
        return outcome

    def upscale(
        self,
        image: Image.Image | NDArray[Any] | list[Any],
        scale: float,
        *,
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        name: Path | str = "<image>",
    ) -> Any:
        """A PIL image (returned as a PIL image in the same mode family, ICC profile kept) or an (H, W) / (H, W, C)
        array: uint8 or uint16 (returned in the same type) or float in [0, 1] (returned as float32); or a list of
        them (a list back, in order, with tiles batched across the images: many small frames fill the backend's
        batches as one large image would). ValueError (ImageError or UsageError) for pixels it cannot take (a PIL
        image as its file would be: animated, multi-page, truncated), or a result over `max_output_pixels`."""
        scale = self.check_scale(scale)
        if is_image_list(image):
            chosen = [self._for(lossy=_is_lossy(i), scale=scale) for i in image]  # model auto: each by its model
            return upscale_list(image, scale, upscalers=chosen, max_output_pixels=max_output_pixels)
        if (chosen_one := self._for(lossy=_is_lossy(image), scale=scale)) is not self:
            return chosen_one.upscale(image, scale, max_output_pixels=max_output_pixels, name=name)
        pixels, dtype, finish = prepare(image, scale, name=name, max_output_pixels=max_output_pixels)  # type: ignore[arg-type]  # a list of lists: an array
        steps = self.steps(pixels, scale, dtype, name=name, max_output_pixels=max_output_pixels)
        (outcome,) = self._drive([steps])
        if isinstance(outcome, Failed):
            raise outcome.error
        return finish(outcome)

    def upscale_file(
        self,
        loaded: LoadedImage,
        scale: float,
        *,
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        on_band: Callable[[float], None] | None = None,
        network: Network | None = None,
    ) -> NDArray[Any]:
        """A decoded file's pixels upscaled: uint16 for 16-bit sources, else uint8 (`network`: see upscale_group)."""
        options = {"max_output_pixels": max_output_pixels, "on_band": on_band, "network": network}
        (outcome,) = self.upscale_group([loaded], self.check_scale(scale), **options)  # type: ignore[arg-type]
        if isinstance(outcome, ImageError):
            raise outcome
        return outcome

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
        on_image: Callable[[Path | str, int], None] = lambda path, pixels: None,
        on_band: Callable[[float], None] | None = None,
        video: VideoSettings | None = None,
    ) -> FolderReport:
        """Upscale a file or every image and video in a folder (see vdsr.runtime.planning for where results go).
        Each file that cannot be read, upscaled or written is reported with its cause and the others still run (all
        stop at the first failure with fail_fast). A backend failure stops the run: report.stopped says why, and
        what was written before it is complete. `on_image(path, output pixels)` is called as each file finishes (0
        when skipped or failed), `on_band(fraction of the current image done)` as its bands of tiles finish; `video`:
        the encoder of videos (vdsr.runtime.video)."""
        scale = self.check_scale(scale)
        if fmt:
            output_format(Path(f"x.{fmt.lstrip('.')}"))  # an unknown format is bad usage: fail before any work
        jobs = plan(local(source), scale, None if output is None else local(output), recursive=recursive, fmt=fmt)
        if not jobs:
            self.log(nothing_found(source, recursive=recursive))
        return self.upscale_jobs(
            jobs,
            scale,
            skip_existing=skip_existing,
            fail_fast=fail_fast,
            max_pixels=max_pixels,
            max_output_pixels=max_output_pixels,
            on_image=on_image,
            on_band=on_band,
            video=video,
        )

    def upscale_jobs(
        self,
        jobs: list[Job],
        scale: float,
        *,
        skip_existing: bool = False,
        fail_fast: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
        on_image: Callable[[Path | str, int], None] = lambda path, pixels: None,
        on_band: Callable[[float], None] | None = None,
        on_frame: Callable[[int, int | None], None] = lambda done, total: None,
        video: VideoSettings | None = None,
    ) -> FolderReport:
        """Planned jobs (vdsr.runtime.planning.plan) through the pipeline, `scale` checked (check_scale): stale
        temporaries removed, the jobs claimed (vdsr.runtime.planning.claim), then the images through
        vdsr.runtime.pipeline and the videos one at a time through vdsr.runtime.video (`video`: their encoder)."""
        scale = self.check_scale(scale)
        removed = jobs[0].target.files.remove_stale([job.target.path for job in jobs]) if jobs else []
        if removed:  # left by a run that was killed
            self.log(f"removed {len(removed)} temporary files a killed run left in the output folder")
        report = FolderReport()
        todo = claim(jobs, report, skip_existing=skip_existing, on_image=on_image)
        if fail_fast and report.failed:
            return report
        upscale = partial(self.upscale_group, scale=scale, max_output_pixels=max_output_pixels, on_band=on_band)
        moving = [job for job in todo if is_sequence(job)]  # one at a time, frame by frame
        check_videos(moving, video or VideoSettings())  # bad usage: before any work
        report = run_jobs(
            [job for job in todo if job not in moving],
            upscale,
            report,
            scale=scale,
            fail_fast=fail_fast,
            max_pixels=max_pixels,
            max_output_pixels=max_output_pixels,
            on_image=on_image,
            group=self.batch,
        )
        run_sequences(
            moving,
            scale,
            report,
            lumas=(self.for_lossy or self).upscale_lumas,  # video frames are compressed: model auto's lossy one
            still=self.upscale_file,
            settings=video or VideoSettings(),
            group=self.batch,
            limits=(max_pixels, max_output_pixels),
            fail_fast=fail_fast,
            on_image=on_image,
            on_progress=(on_band, on_frame),
        )
        return report


def _is_lossy(image: object) -> bool:
    """Whether an API input is a PIL image of a compressed format (arrays do not say: lossless, as far as is known)."""
    return isinstance(image, Image.Image) and image.format in model_choice.LOSSY_FORMATS
