"""Animated GIF, PNG (APNG) and WebP: a source of frames and a sink that writes them back, as a video is.

Each frame is read as PIL composes it (disposal and blending done), upscaled as a still image is (vdsr.runtime.picture:
colour, alpha), and written in the result's format (a GIF's result is an animated PNG, as a still GIF's is a PNG:
no palette) with its duration and the loop count. The frames are kept for PIL's writer (it reads them twice and
compares each with the last): so the output frames together must be within the output pixel limit, checked before
any work. At most MAX_FRAMES frames, counted as they are read (never all counted first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vdsr.errors import ImageError
from vdsr.files import atomic_write, open_regular
from vdsr.runtime.containers import lossy_coded
from vdsr.runtime.images import LoadedImage, check_file_size, pixels_of, to_pil_image
from vdsr.runtime.resize import output_shape_for

ANIMATED_FORMATS = ("GIF", "PNG", "WEBP")  # what is read
WRITTEN = {".gif": "GIF", ".png": "PNG", ".apng": "PNG", ".webp": "WEBP"}  # the result's suffix -> what is written
MAX_FRAMES = 10_000

Frames = Callable[[LoadedImage], NDArray[np.uint8]]  # one frame through the network


@dataclass(frozen=True)
class AnimationResult:
    frames: int
    width: int
    height: int


def is_animation(path: Path) -> bool:
    """Whether the file at `path` is an animated GIF, PNG or WebP, from its header (PIL's `is_animated` reads no
    further than the second frame), read only for the suffixes those formats have: a folder of JPEGs costs no second
    open. False for anything PIL cannot open: the image path then says why."""
    if path.suffix.lower() not in WRITTEN:
        return False
    try:
        with open_regular(path) as f, Image.open(f, formats=list(ANIMATED_FORMATS)) as image:
            return bool(getattr(image, "is_animated", False))
    except Exception:  # noqa: BLE001  (not an animation this module writes; the image path reports the file)
        return False


def upscale_animation(
    source: Path,
    target: Path,
    scale: float,
    *,
    upscale: Frames,
    max_pixels: int,
    max_output_pixels: int,
    on_frame: Callable[[int], None] = lambda n: None,
) -> AnimationResult:
    """`source`'s frames upscaled into `target` (written whole, or not at all), with their durations and loop count.
    ImageError naming `source` for a file that cannot be read or written as asked."""
    with open_regular(source) as f:
        check_file_size(f, source, pixels=max_output_pixels, what=f"frames of {max_output_pixels} pixels in all")
        with Image.open(f, formats=list(ANIMATED_FORMATS)) as image:
            fmt = WRITTEN.get(target.suffix.lower())
            if fmt is None:
                raise ImageError(source, f"an animation is written as PNG (APNG) or WebP, not {target.suffix}")
            if image.width * image.height > max_pixels:
                raise ImageError(
                    source, f"{image.width}x{image.height} frames are over the limit of {max_pixels} pixels"
                )
            height, width = output_shape_for((image.height, image.width), scale)
            durations = _durations(image, source, frame_pixels=height * width, max_output_pixels=max_output_pixels)
            plays = _plays(image)
            lossy = lossy_coded(image.format, f)  # model auto: as a still of that coding
            result: list[AnimationResult] = []

            def write(out: BinaryIO) -> None:
                frames = _upscaled(image, source, lossy=lossy, upscale=upscale, on_frame=on_frame)
                first, *rest = frames  # PIL's writers read twice
                options: dict[str, Any] = {"save_all": True, "append_images": rest, "duration": durations}
                if fmt != "GIF":  # APNG's num_plays and WebP's loop count count plays (0: forever)
                    options["loop"] = min(plays, 65535)  # WebP's field: 16 bits
                elif plays != 1:  # GIF's Netscape loop counts the plays after the first
                    options["loop"] = max(plays - 1, 0)
                if fmt == "WEBP":
                    options["lossless"] = True
                first.save(out, format=fmt, **options)
                result.append(AnimationResult(len(durations), first.width, first.height))

            try:
                atomic_write(target, write)
            except ImageError:
                raise
            except (OSError, ValueError, EOFError) as error:
                raise ImageError(source, f"cannot be upscaled ({type(error).__name__}: {error})") from None
    return result[0]


def _plays(image: Image.Image) -> int:
    """How many times the animation plays, 0 for forever. A GIF's loop count (its Netscape extension) is the plays
    after the first, and without one it plays once; APNG's num_plays and WebP's loop count are the plays."""
    loop = image.info.get("loop")
    if not isinstance(loop, int):
        return 1
    return loop + 1 if image.format == "GIF" and loop > 0 else loop


def _durations(image: Image.Image, source: Path, *, frame_pixels: int, max_output_pixels: int) -> list[int]:
    """Each frame's duration in ms, read frame by frame: refused at the first frame past MAX_FRAMES or past the
    output pixel limit (all frames' results together), never counted to the end first."""
    durations: list[int] = []
    for index in range(MAX_FRAMES + 1):
        try:
            image.seek(index)
        except EOFError:
            break
        if index == MAX_FRAMES:
            raise ImageError(source, f"more than {MAX_FRAMES} frames")
        if (index + 1) * frame_pixels > max_output_pixels:
            raise ImageError(source, f"its frames' results are over the limit of {max_output_pixels} output pixels")
        if image.format == "WEBP":
            image.load()  # WebP says a frame's duration once it is decoded
        durations.append(int(image.info.get("duration", 0) or 0))
    return durations


def _upscaled(
    image: Image.Image, source: Path, *, lossy: bool, upscale: Frames, on_frame: Callable[[int], None]
) -> Iterator[Image.Image]:
    for index in range(MAX_FRAMES):
        try:
            image.seek(index)
        except EOFError:
            return
        frame = image.convert("RGBA" if image.has_transparency_data else "RGB")
        pixels, depth = pixels_of(frame, source)
        loaded = LoadedImage(source, pixels, depth, pixels.shape[-1] in (2, 4), None, lossy=lossy)
        out = to_pil_image(upscale(loaded))
        on_frame(index + 1)
        yield out
