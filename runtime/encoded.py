"""Image files as bytes, in and out: what a service gets in a request body (vdsr-serve, Triton's image model) and
sends back, through the pipeline vdsr-run uses. The bytes are decoded by vdsr.runtime.images.decode_image (its
decoders only, its pixel limit read from the header), the result is checked by vdsr.runtime.pipeline.fit_format
before any work, upscaled by Upscaler.upscale_file and encoded by vdsr.runtime.images.encode_image with the ICC
profile and EXIF kept: the same result as vdsr-run writes for that file."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from vdsr.errors import ImageError
from vdsr.runtime.images import FORMAT_SUFFIXES, OUTPUT_FORMATS, READ_FORMATS, decode_image, encode_image
from vdsr.runtime.pipeline import fit_format
from vdsr.runtime.places import local
from vdsr.runtime.tiling import Network
from vdsr.runtime.upscaler import Upscaler


@dataclass(frozen=True)
class Encoded:
    """A result file's bytes, its format (Pillow's name) and its pixels."""

    data: bytes
    fmt: str
    pixels: int
    warnings: tuple[str, ...] = ()  # what the result leaves out (an ICC profile its format cannot hold)


def result_format(data: bytes, asked: str | None) -> str:
    """The format of the result (Pillow's name): the one asked, else the input's as vdsr-run writes it (a camera JPEG
    with an MPF preview, MPO, as JPEG; a GIF as PNG: 256 colours would undo the upscale)."""
    if asked is not None:
        return asked
    with Image.open(io.BytesIO(data), formats=READ_FORMATS) as image:  # the header only: decoded already
        found = "JPEG" if image.format == "MPO" else image.format
    return found if found in OUTPUT_FORMATS else "PNG"


def upscale_encoded(
    data: bytes,
    scale: float,
    *,
    upscaler: Upscaler,
    fmt: str | None,
    limits: tuple[int, int],
    name: str = "image",
    network: Network | None = None,
) -> Encoded:
    """An image file's bytes upscaled into the bytes of the result file in `fmt` (None: result_format's), `limits`
    the most pixels in and out; `network` instead of the backend's own run (a service's shared batches). ImageError
    naming `name` when it cannot be: empty, not an image it reads, over a limit, a result its format cannot hold."""
    if not data:
        raise ImageError(name, "empty: send an image file's bytes")
    max_pixels, max_output_pixels = limits
    loaded = decode_image(data, name, max_pixels)
    fmt = result_format(data, fmt)
    scale = upscaler.check_scale(scale)
    suffix = next(suffix for suffix, known in FORMAT_SUFFIXES.items() if known == fmt)
    try:
        warnings: list[str] = []
        target = local(f"{name}.{suffix}")
        loaded = fit_format(loaded, target, scale, max_output_pixels=max_output_pixels, warn=warnings.append)
    except ImageError as error:  # named as the input is: the result has no file name
        raise ImageError(name, error.cause) from None
    pixels = upscaler.upscale_file(loaded, scale, max_output_pixels=max_output_pixels, network=network)
    out = io.BytesIO()
    try:
        encode_image(pixels, fmt, out, icc_profile=loaded.icc_profile, exif=loaded.exif)
    except (ValueError, OSError) as error:  # an encoder refusing metadata copied from the input
        raise ImageError(name, f"cannot be written as {fmt} ({error})") from error
    return Encoded(out.getvalue(), fmt, int(np.prod(pixels.shape[:2])), tuple(warnings))
