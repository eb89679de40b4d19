"""Seamless tiling: cut an image into windows, run the network on them, paste back only each window's core.

Every tile's input window reaches `halo` pixels beyond its core, or to the image edge, where it meets the same zero
padding the whole image would. So with halo >= the network's receptive-field radius (20 for VDSR, from the ONNX
metadata), the tiled result equals the whole-image result: no seams. All windows have one shape (shifted inward at
the edges, never padded) so they batch. Tiles run band by band (a row of tiles): the input and output can be produced
and consumed a band at a time. The two steps are public: `cut_windows` and `paste_results`; `tile_steps` walks an
image through them as a generator that yields windows and is sent results, so a driver (vdsr.runtime.batching) can
run the windows of several images in one network call.

One loop serves numpy arrays and torch tensors: it only slices, assigns and calls, and gets its buffers from `empty`
(numpy by default; the device pipeline passes torch.empty on its device).

Every result is checked to be finite: a NaN or inf window (NaN weights, an fp16 overflow) is never pasted into an
image that is then reported as written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import BackendError, ImageError

Network = Callable[[Any], Any]  # (N, 1, h, w) float32 -> the same shape, numpy arrays or torch tensors
Empty = Callable[[tuple[int, ...]], Any]  # a float32 buffer of that shape, in the network's arrays
T = TypeVar("T")
Steps = Generator[Any, Any, T]  # yields (N, 1, h, w) windows, is sent their results, returns its outcome


def numpy_empty(shape: tuple[int, ...]) -> NDArray[np.float32]:
    return np.empty(shape, dtype=np.float32)


def tile_windows(length: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Along one axis, per tile: (window start, window end, core start, core end); windows all the same length."""
    if length < 1 or tile < 1 or halo < 0:
        raise ValueError(f"Expected length >= 1, tile >= 1, halo >= 0, got {length}, {tile}, {halo}")
    window = min(length, tile + 2 * halo)
    spans = []
    for core_start in range(0, length, tile):
        core_end = min(core_start + tile, length)
        start = min(max(core_start - halo, 0), length - window)  # shifted inward at the edges
        spans.append((start, start + window, core_start, core_end))
    return spans


def window_shape(shape: tuple[int, int], tile: int, halo: int) -> tuple[int, int]:
    """The (height, width) of every window tile_steps gives the network for an image of `shape`."""
    return (min(shape[0], tile + 2 * halo), min(shape[1], tile + 2 * halo))


def network_pixels(shape: tuple[int, int], tile: int, halo: int) -> int:
    """The pixels of all the windows tile_steps gives the network for an image of `shape`: the network's work."""
    height, width = window_shape(shape, tile, halo)
    return math.ceil(shape[0] / tile) * math.ceil(shape[1] / tile) * height * width


BAND_BYTES_PER_PIXEL = 64  # a band's ILR rows, its Y out and resized chroma, float32, and the resize's temporaries


def working_memory(shape: tuple[int, int], tile: int, *, bytes_per_pixel: int, halo: int, batch: int = 1) -> int:
    """Bytes the network's windows (a batch of them, as many as the image has) and the band of rows they run in take
    for an image of `shape` in tiles of `tile`."""
    rows, cols = window_shape(shape, tile, halo)
    windows = min(batch, math.ceil(shape[0] / tile) * math.ceil(shape[1] / tile))
    return windows * rows * cols * bytes_per_pixel + rows * shape[1] * BAND_BYTES_PER_PIXEL


def tile_for_memory(shape: tuple[int, int], *, budget: int, bytes_per_pixel: int, halo: int, batch: int = 1) -> int:
    """The largest tile side for an image of `shape` whose working_memory fits `budget`: the whole image when it fits
    (no halo recomputed), else the largest square tiles; at least 2 x halo (or 1), whatever the budget."""
    low, high = 1, max(shape)  # working_memory grows with the tile: the largest that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        fits = working_memory(shape, middle, bytes_per_pixel=bytes_per_pixel, halo=halo, batch=batch) <= budget
        low, high = (middle, high) if fits else (low, middle - 1)
    return max(low, 2 * halo, 1)


def cut_windows(band: Any, columns: list[tuple[int, int, int, int]], *, empty: Empty = numpy_empty) -> Any:
    """The first tiling step: a band of input rows (h, W) cut into its windows, one per column span of
    tile_windows, stacked as the network takes them: (len(columns), 1, h, w)."""
    windows = empty((len(columns), 1, band.shape[0], columns[0][1] - columns[0][0]))
    for i, (c0, c1, _, _) in enumerate(columns):
        windows[i, 0] = band[:, c0:c1]
    return windows


def paste_results(
    out: Any, results: Any, columns: list[tuple[int, int, int, int]], *, rows: tuple[int, int, int]
) -> int:
    """The second tiling step: each window's core pasted into `out` (the band's core rows, (core1 - core0, W)),
    `rows` = (window start row, core start row, core end row). A window whose result is not finite is pasted as
    zeros; returns how many there were (the caller refuses the image)."""
    r0, core0, core1 = rows
    bad = 0
    for (c0, _, k0, k1), result in zip(columns, results, strict=True):
        with np.errstate(invalid="ignore"):  # x - x: 0 for finite x, NaN for NaN and inf (no warning)
            finite = bool(((result - result) == 0).all())
        bad += not finite
        out[:, k0:k1] = result[0, core0 - r0 : core1 - r0, k0 - c0 : k1 - c0] if finite else 0
    return bad


def tile_steps(
    rows: Callable[[int, int], Any],
    shape: tuple[int, int],
    *,
    tile: int,
    halo: int,
    on_rows: Callable[[int, int, Any], None],
    empty: Empty = numpy_empty,
    name: Path | str = "<image>",
) -> Steps[None]:
    """An (H, W) image given as `rows(start, stop)` through the network, one band of tiles at a time, top to bottom:
    yields each band's windows (cut_windows) and is sent the network's results for them (the driver,
    vdsr.runtime.batching, may run them with other images' windows); their cores go to `on_rows(core start row, core
    end row, output rows)`. Only a band of input and output is held, so a caller can produce the input and consume
    the output band by band (huge images, bounded memory). After the last band: ImageError (naming `name`) if some
    tiles came back NaN or inf, BackendError if every one did (the model or the backend is broken: every image would
    fail)."""
    columns = tile_windows(shape[1], tile, halo)
    tiles = non_finite = 0
    for r0, r1, core0, core1 in tile_windows(shape[0], tile, halo):
        band = rows(r0, r1)
        if tuple(band.shape) != (r1 - r0, shape[1]):
            raise ValueError(f"Expected input rows of shape {(r1 - r0, shape[1])}, got {tuple(band.shape)}")
        windows = cut_windows(band, columns, empty=empty)
        results = yield windows
        if tuple(results.shape) != tuple(windows.shape):
            raise ValueError(f"Backend returned shape {tuple(results.shape)} for input {tuple(windows.shape)}")
        out = empty((core1 - core0, shape[1]))
        tiles, non_finite = (
            tiles + len(columns),
            non_finite + paste_results(out, results, columns, rows=(r0, core0, core1)),
        )
        on_rows(core0, core1, out)
    if non_finite == tiles:
        raise BackendError("the network's output is NaN or inf everywhere (broken weights or backend?)")
    if non_finite:
        raise ImageError(name, f"the network's output is NaN or inf in {non_finite} of {tiles} tiles")
