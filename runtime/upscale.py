"""Upscaling a whole picture: colour handling around the luminance network.

RGB -> BT.601 YCbCr; Y -> MATLAB-bicubic ILR -> the network, tile by tile -> Y'; Cb and Cr (and alpha) -> bicubic;
back to RGB, clipped to [0, 1]. Gray images go through the same BT.601 mapping as R = G = B, so the network sees the
luminance range it was trained on, and the result is gray again.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import NDArray

from vdsr.runtime.color import rgb_to_ycbcr, ycbcr_to_rgb
from vdsr.runtime.resize import imresize
from vdsr.runtime.tiling import Backend, tiled

MAX_SCALE = 8.0
Y_OFFSET, Y_RANGE = 16 / 255, 219 / 255  # BT.601 studio range: Y = 16/255 + 219/255 * gray for R = G = B = gray


def check_scale(scale: float) -> float:
    if (
        isinstance(scale, bool)
        or not isinstance(scale, numbers.Real)
        or not (math.isfinite(scale) and 1 < scale <= MAX_SCALE)
    ):
        raise ValueError(f"Expected a scale with 1 < scale <= {MAX_SCALE:g}, got {scale}")
    return float(scale)


def upscale_pixels(
    pixels: NDArray[np.floating], scale: float, backend: Backend, halo: int, tile: int = 512, batch: int = 4
) -> NDArray[np.float32]:
    """(H, W, C) in [0, 1], C = 1 gray, 2 gray + alpha, 3 RGB or 4 RGBA -> (ceil(sH), ceil(sW), C) in [0, 1]."""
    scale = check_scale(scale)
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"Expected (H, W, C) pixels with C in 1..4, got shape {pixels.shape}")
    color_channels = 1 if pixels.shape[-1] in (1, 2) else 3
    color = pixels[..., :color_channels].astype(np.float64)

    def network(y: NDArray[np.float64]) -> NDArray[np.float32]:
        ilr = imresize(y, scale, dtype=np.float32)
        return tiled(backend, ilr, tile, halo, batch)

    if color_channels == 1:
        y = network(Y_OFFSET + Y_RANGE * color[..., 0])
        out = ((y - Y_OFFSET) / Y_RANGE)[..., None]
    else:
        ycbcr = rgb_to_ycbcr(color)
        y = network(ycbcr[..., 0])
        chroma = imresize(ycbcr[..., 1:], scale, dtype=np.float32)
        out = ycbcr_to_rgb(np.concatenate([y[..., None], chroma], axis=-1)).astype(np.float32)
    if pixels.shape[-1] in (2, 4):
        alpha = imresize(pixels[..., -1].astype(np.float32), scale, dtype=np.float32)
        out = np.concatenate([out, alpha[..., None]], axis=-1)
    result: NDArray[np.float32] = np.clip(out, 0.0, 1.0, dtype=np.float32)
    return result
