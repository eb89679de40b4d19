"""Seamless tiling: run a network tile by tile and paste back only each tile's core.

Every tile's input window reaches `halo` pixels beyond its core, or to the image edge, where it meets the same zero
padding the whole image would. So with halo >= the network's receptive-field radius (20 for VDSR, from the ONNX
metadata), the tiled result equals the whole-image result: no seams. All windows have one shape (shifted inward at
the edges, never padded) so they batch. Tiles run band by band (a row of tiles): the input and output can be produced
and consumed a band at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numpy.typing import NDArray

Backend = Callable[[NDArray[np.float32]], NDArray[np.float32]]  # (N, 1, h, w) -> (N, 1, h, w)


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


def tiled_rows(
    backend: Backend, rows: Callable[[int, int], NDArray[np.floating]], shape: tuple[int, int], tile: int, halo: int,
    batch: int = 4,
) -> Iterator[tuple[int, int, NDArray[np.float32]]]:  # fmt: skip
    """Run `backend` over an (H, W) image given as `rows(start, stop)`, one band of tiles at a time, top to bottom.

    Yields (core start row, core end row, the output rows in between): only a band of input and output is held, so a
    caller can produce the input and consume the output band by band (huge images, bounded memory).
    """
    if batch < 1:
        raise ValueError(f"Expected batch >= 1, got {batch}")
    columns = tile_windows(shape[1], tile, halo)
    for r0, r1, core0, core1 in tile_windows(shape[0], tile, halo):
        band = np.asarray(rows(r0, r1), dtype=np.float32)
        if band.shape != (r1 - r0, shape[1]):
            raise ValueError(f"Expected input rows of shape {(r1 - r0, shape[1])}, got {band.shape}")
        out = np.empty((core1 - core0, shape[1]), dtype=np.float32)
        for first in range(0, len(columns), batch):
            chunk = columns[first : first + batch]
            windows = np.stack([band[:, c0:c1] for c0, c1, _, _ in chunk])[:, None]
            results = backend(windows)
            if results.shape != windows.shape:
                raise ValueError(f"Backend returned shape {results.shape} for input {windows.shape}")
            for (c0, _, k0, k1), result in zip(chunk, results, strict=True):
                out[:, k0:k1] = result[0, core0 - r0 : core1 - r0, k0 - c0 : k1 - c0]
        yield core0, core1, out


def tiled(backend: Backend, image: NDArray[np.floating], tile: int, halo: int, batch: int = 4) -> NDArray[np.float32]:
    """Apply `backend` to a whole (H, W) image through tiles of `tile` x `tile` output pixels overlapping by `halo`."""
    if image.ndim != 2:
        raise ValueError(f"Expected an (H, W) image, got shape {image.shape}")
    out = np.empty(image.shape, dtype=np.float32)
    for core0, core1, rows in tiled_rows(backend, lambda a, b: image[a:b], image.shape, tile, halo, batch):
        out[core0:core1] = rows
    return out
