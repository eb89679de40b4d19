"""Files of many frames in a folder run: videos (vdsr.runtime.video) and animated GIF, PNG and WebP
(vdsr.runtime.animation), one at a time after the pipeline's images, each written whole or failed in one line."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePath
from typing import Any

from vdsr.errors import BackendError, ImageError, UsageError
from vdsr.runtime.animation import AnimationResult, is_animation, upscale_animation
from vdsr.runtime.pipeline import Interrupted
from vdsr.runtime.places import LocalFiles
from vdsr.runtime.planning import FileFailure, FolderReport, Job
from vdsr.runtime.video import VIDEO_FORMATS, VideoResult, VideoSettings, check_settings, is_video, upscale_video

ONE_VIDEO = "the main video stream alone is upscaled; other streams but audio, subtitles and data are left out"
Progress = tuple[Callable[[float], None] | None, Callable[[int, int | None], None]]  # on_band, on_frame


def is_sequence(job: Job) -> bool:
    """A video (by its suffix), or an animated GIF, PNG or WebP on a local path (by its header)."""
    return is_video(job.source.path) or (
        isinstance(job.source.files, LocalFiles) and is_animation(Path(job.source.path))
    )


def check_videos(jobs: list[Job], settings: VideoSettings) -> None:
    """The encoder settings checked for every video's container, before any work: UsageError for bad usage. Without
    PyAV nothing is checked: each video then fails in one line saying what to install, and the rest still run."""
    if importlib.util.find_spec("av") is None:
        return
    for suffix in {PurePath(str(job.target.path)).suffix.lower() for job in jobs if is_video(job.source.path)}:
        muxer, codec = VIDEO_FORMATS.get(suffix, (None, "libx264"))
        check_settings(settings, codec, muxer)


def run_sequences(
    jobs: list[Job],
    scale: float,
    report: FolderReport,
    *,
    lumas: Callable[..., Any],
    still: Callable[..., Any],
    settings: VideoSettings,
    group: int,
    limits: tuple[int, int],
    fail_fast: bool,
    on_image: Callable[[Path | str, int], None],
    on_progress: Progress,
) -> None:
    """`jobs` into `report`, one at a time: `lumas(planes, scale, name=)` runs the network on video frames' luma
    planes, `still(loaded, scale=)` on one animation frame (check_videos first). A backend failure stops the run."""
    for job in jobs:
        if report.stopped or (fail_fast and report.failed):
            break
        try:
            result = _one(
                job,
                scale,
                lumas=lumas,
                still=still,
                settings=settings,
                group=group,
                limits=limits,
                on_progress=on_progress,
            )
        except (ImageError, UsageError) as error:  # UsageError: no PyAV here
            cause = error.cause if isinstance(error, ImageError) else str(error)
            report.failed.append(FileFailure(job.source.shown, cause))
            on_image(job.source.shown, 0)
            continue
        except BackendError as error:
            report.stopped = f"{job.source.shown}: {error}"
            break
        except KeyboardInterrupt:
            raise Interrupted(report) from None
        report.written.append(job.target.shown)
        pixels = result.frames * result.width * result.height
        report.megapixels += pixels / 1e6
        if isinstance(result, VideoResult) and result.not_copied:
            report.warnings.append(f"{job.source.shown}: its {', '.join(result.not_copied)} not copied ({ONE_VIDEO})")
        on_image(job.source.shown, pixels)


def _one(
    job: Job,
    scale: float,
    *,
    lumas: Callable[..., Any],
    still: Callable[..., Any],
    settings: VideoSettings,
    group: int,
    limits: tuple[int, int],
    on_progress: Progress,
) -> VideoResult | AnimationResult:
    """One file of frames upscaled."""
    source, target = job.source, job.target
    if not (isinstance(source.files, LocalFiles) and isinstance(target.files, LocalFiles)):
        raise ImageError(source.shown, "videos are read and written on local paths only")
    on_band, on_frames = on_progress

    def on_frame(done: int, total: int | None) -> None:
        on_frames(done, total)
        if on_band is not None and total:
            on_band(min(done / total, 0.999))  # the whole file: once it is written

    result: VideoResult | AnimationResult
    if is_video(source.path):
        result = upscale_video(
            Path(source.path),
            Path(target.path),
            scale,
            lumas=partial(lumas, scale=scale, name=source.shown),
            settings=settings,
            group=group,
            max_pixels=limits[0],
            max_output_pixels=limits[1],
            on_frame=on_frame,
        )
    else:
        result = upscale_animation(
            Path(source.path),
            Path(target.path),
            scale,
            upscale=partial(still, scale=scale),
            max_pixels=limits[0],
            max_output_pixels=limits[1],
            on_frame=lambda done: on_frame(done, None),
        )
    return result
