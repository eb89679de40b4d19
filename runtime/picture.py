"""One picture through the luminance network: colour handling around it, as steps a driver runs.

RGB -> BT.601 YCbCr; Y -> MATLAB-bicubic ILR -> the network, tile by tile -> Y'; Cb and Cr (and alpha) -> bicubic;
back to RGB, clipped to [0, 1]. Gray images go through the same BT.601 mapping as R = G = B, so the network sees the
luminance range it was trained on, and the result is gray again.

`picture_steps` is a generator (vdsr.runtime.tiling.tile_steps): it yields windows and is sent the network's
results, so vdsr.runtime.batching can run several pictures' windows together; `upscale_picture` runs one. The scale
is trusted here: it was checked where it came in (vdsr.scale).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from vdsr.errors import ImageError, UsageError
from vdsr.runtime.batching import run_steps
from vdsr.runtime.color import rgb_to_ycbcr, ycbcr_to_rgb
from vdsr.runtime.resize import imresize_rows, output_shape_for
from vdsr.runtime.tiling import Network, Steps, T, tile_steps

Y_OFFSET, Y_RANGE = 16 / 255, 219 / 255  # BT.601 studio range: Y = 16/255 + 219/255 * gray for R = G = B = gray


def check_output(shape: tuple[int, ...], scale: float, *, max_output_pixels: int, name: Path | str) -> tuple[int, int]:
    """The (height, width) of the result; ImageError naming `name` if it has more than `max_output_pixels` (UsageError
    for a limit that is not a whole number >= 1)."""
    if isinstance(max_output_pixels, bool) or not isinstance(max_output_pixels, numbers.Integral | np.integer):
        raise UsageError(f"Expected max_output_pixels a whole number, got {type(max_output_pixels).__name__}")
    if max_output_pixels < 1:
        raise UsageError(f"Expected max_output_pixels >= 1, got {max_output_pixels}")
    height, width = output_shape_for((shape[0], shape[1]), scale)
    if height * width > max_output_pixels:
        raise ImageError(name, f"the {width}x{height} result is over the limit of {max_output_pixels} output pixels")
    return height, width


def output_type(pixels: NDArray[np.floating], dtype: DTypeLike) -> tuple[np.dtype[Any], float]:
    """(output dtype, the output's full-scale value) once pixels and dtype are known to be usable: UsageError
    otherwise (Upscaler.upscale takes more: 2-D arrays, uint8 and uint16)."""
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[-1] not in (1, 2, 3, 4):
        raise UsageError(f"Expected (H, W, C) pixels with C in 1..4, got shape {np.shape(pixels)}")
    if pixels.dtype.kind != "f":
        raise UsageError(f"Expected float pixels in [0, 1], got {pixels.dtype} (upscale() takes uint8 and uint16)")
    out_dtype = np.dtype(dtype)
    if out_dtype.kind not in "fu":
        raise UsageError(f"Expected a float or unsigned integer output dtype, got {out_dtype}")
    return out_dtype, float(np.iinfo(out_dtype).max) if out_dtype.kind == "u" else 1.0


def picture_steps(
    pixels: NDArray[np.floating],
    scale: float,
    *,
    halo: int,
    tile: int = 512,
    dtype: DTypeLike = np.float32,
    name: Path | str = "<image>",
    on_band: Callable[[float], None] | None = None,
) -> Steps[NDArray[Any]]:
    """(H, W, C) in [0, 1], C = 1 gray, 2 gray + alpha, 3 RGB or 4 RGBA -> (ceil(sH), ceil(sW), C) in `dtype`:
    float in [0, 1], or an unsigned integer type scaled to its full range (uint8: 0..255) and rounded.

    Works band by band (a row of tiles): besides the input and the output, memory holds the input's YCbCr planes and
    one band of tiles, as tall as a tile however large the image (the Upscaler sizes tiles to its memory budget).
    Non-finite network output: see vdsr.runtime.tiling.tile_steps (errors name `name`); running out of memory is
    this picture's ImageError too. `on_band(fraction of the output rows done)` follows the work, band by band.
    """
    return host_memory(_steps(pixels, scale, halo=halo, tile=tile, dtype=dtype, name=name, on_band=on_band), name)


def host_memory(steps: Steps[T], name: Path | str) -> Steps[T]:
    """`steps`, with the host running out of memory reported as this picture's ImageError (the others go on)."""
    try:
        return (yield from steps)
    except MemoryError:
        raise ImageError(name, "not enough memory to upscale it") from None


def _steps(
    pixels: NDArray[np.floating],
    scale: float,
    *,
    halo: int,
    tile: int,
    dtype: DTypeLike,
    name: Path | str,
    on_band: Callable[[float], None] | None,
) -> Steps[NDArray[Any]]:
    out_dtype, peak = output_type(pixels, dtype)
    gray = pixels.shape[-1] in (1, 2)
    n = 1 if gray else 3  # colour channels; alpha, if any, follows
    # The planes the resize reads, float32 like the training data: Y, then Cb and Cr, then alpha. Converted in
    # chunks of rows so no float64 copy of the whole image is made.
    planes = np.empty(pixels.shape, dtype=np.float32)
    for r in range(0, pixels.shape[0], 256):
        color = pixels[r : r + 256, :, :n].astype(np.float64)
        planes[r : r + 256, :, :n] = Y_OFFSET + Y_RANGE * color if gray else rgb_to_ycbcr(color)
        planes[r : r + 256, :, n:] = pixels[r : r + 256, :, n:]
    height, width = output_shape_for((pixels.shape[0], pixels.shape[1]), scale)
    out = np.empty((height, width, pixels.shape[-1]), dtype=out_dtype)

    def ilr(start: int, stop: int) -> NDArray[np.floating]:  # rows of the network's input, made as they are needed
        return imresize_rows(planes[..., 0], scale, start=start, stop=stop)

    def finish(row0: int, row1: int, y: NDArray[np.float32]) -> None:  # a band's luminance back to colour
        rest = imresize_rows(planes[..., 1:], scale, start=row0, stop=row1) if pixels.shape[-1] > 1 else None
        for r0 in range(0, row1 - row0, 64):  # back to RGB a few rows at a time: small float64 temporaries
            r1 = min(r0 + 64, row1 - row0)
            ycc = y[r0:r1, :, None] if rest is None else np.concatenate([y[r0:r1, :, None], rest[r0:r1]], axis=-1)
            rgb = (ycc[..., :1] - Y_OFFSET) / Y_RANGE if gray else ycbcr_to_rgb(ycc[..., :3])
            rows = np.clip(np.concatenate([rgb, ycc[..., n:]], axis=-1), 0.0, 1.0)
            out[row0 + r0 : row0 + r1] = np.rint(rows * peak) if out_dtype.kind == "u" else rows
        if on_band is not None:
            on_band(row1 / height)

    yield from tile_steps(ilr, (height, width), tile=tile, halo=halo, on_rows=finish, name=name)
    return out


def luma_steps(
    y: NDArray[np.float32], scale: float, *, halo: int, tile: int = 512, name: Path | str = "<image>"
) -> Steps[NDArray[np.float32]]:
    """A luminance plane alone, (H, W) in the network's convention (BT.601 studio-range Y in [0, 1]) -> the
    upscaled plane, (ceil(sH), ceil(sW)) float32, not clipped: for video, whose chroma never leaves its planes
    (vdsr.runtime.video). The same ILR and tiles as picture_steps."""
    height, width = output_shape_for((y.shape[0], y.shape[1]), scale)
    out = np.empty((height, width), np.float32)

    def keep(row0: int, row1: int, rows: NDArray[np.float32]) -> None:
        out[row0:row1] = rows

    ilr = partial(imresize_rows, y, scale)
    steps = tile_steps(
        lambda start, stop: ilr(start=start, stop=stop), (height, width), tile=tile, halo=halo, on_rows=keep, name=name
    )
    yield from host_memory(steps, name)
    return out


def upscale_picture(
    pixels: NDArray[np.floating],
    scale: float,
    network: Network,
    *,
    halo: int,
    tile: int = 512,
    batch: int = 4,
    dtype: DTypeLike = np.float32,
    name: Path | str = "<image>",
    on_band: Callable[[float], None] | None = None,
) -> NDArray[Any]:
    """One picture through `network`, `batch` windows a call (see picture_steps)."""
    steps = picture_steps(pixels, scale, halo=halo, tile=tile, dtype=dtype, name=name, on_band=on_band)
    return run_steps(steps, network, batch=batch)
