"""Seamless tiling: run a network tile by tile and paste back only each tile's core.

Every tile's input window reaches `halo` pixels beyond its core, or to the image edge, where it meets the same zero
padding the whole image would. So with halo >= the network's receptive-field radius (20 for VDSR, from the ONNX
metadata), the tiled result equals the whole-image result: no seams. All windows have one shape (shifted inward at
the edges, never padded) so they batch; memory holds the image, the output and one batch of windows.
"""

from __future__ import annotations

from collections.abc import Callable

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


def tiled(backend: Backend, image: NDArray[np.floating], tile: int, halo: int, batch: int = 4) -> NDArray[np.float32]:
    """Apply `backend` to an (H, W) image through tiles of `tile` x `tile` output pixels overlapping by `halo`."""
    if image.ndim != 2:
        raise ValueError(f"Expected an (H, W) image, got shape {image.shape}")
    if batch < 1:
        raise ValueError(f"Expected batch >= 1, got {batch}")
    source = np.asarray(image, dtype=np.float32)
    out = np.empty(source.shape, dtype=np.float32)
    jobs = [
        (r, c) for r in tile_windows(source.shape[0], tile, halo) for c in tile_windows(source.shape[1], tile, halo)
    ]
    for first in range(0, len(jobs), batch):
        chunk = jobs[first : first + batch]
        windows = np.stack([source[r[0] : r[1], c[0] : c[1]] for r, c in chunk])[:, None]
        results = backend(windows)
        if results.shape != windows.shape:
            raise ValueError(f"Backend returned shape {results.shape} for input {windows.shape}")
        for (r, c), result in zip(chunk, results, strict=True):
            out[r[2] : r[3], c[2] : c[3]] = result[0, r[2] - r[0] : r[3] - r[0], c[2] - c[0] : c[3] - c[0]]
    return out
