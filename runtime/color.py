"""ITU-R BT.601 studio-range RGB <-> YCbCr in float, the convention of MATLAB's `rgb2ycbcr` used by the VDSR paper.

Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B in 0..255 (Y in 16..235, Cb/Cr in 16..240).
This is not PIL's "YCbCr" mode, which is full-range JPEG YCbCr.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# Rows give Y, Cb, Cr. The matrix does not depend on the value range; the offsets do (16 and 128 on 0..255).
RGB_TO_YCBCR = (
    np.array(
        [
            [65.481, 128.553, 24.966],
            [-37.797, -74.203, 112.0],
            [112.0, -93.786, -18.214],
        ]
    )
    / 255.0
)
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0


def _check_rgb(array: NDArray[np.floating], name: str) -> None:
    if array.ndim < 1 or array.shape[-1] != 3:
        raise ValueError(f"Expected {name} with 3 channels last, got shape {array.shape}")


def rgb_to_ycbcr(rgb: NDArray[np.floating], peak: float = 1.0) -> NDArray[np.float64]:
    """(..., 3) RGB in 0..peak -> (..., 3) YCbCr on the same scale (Y in 16/255*peak .. 235/255*peak)."""
    _check_rgb(rgb, "RGB")
    return np.asarray(rgb, dtype=np.float64) @ RGB_TO_YCBCR.T + YCBCR_OFFSET * peak


def rgb_to_y(rgb: NDArray[np.floating], peak: float = 1.0) -> NDArray[np.float64]:
    """(..., 3) RGB in 0..peak -> (...) luminance Y only (first row of rgb_to_ycbcr, a third of the work)."""
    _check_rgb(rgb, "RGB")
    y: NDArray[np.float64] = np.asarray(rgb, dtype=np.float64) @ RGB_TO_YCBCR[0] + YCBCR_OFFSET[0] * peak
    return y


def ycbcr_to_rgb(ycbcr: NDArray[np.floating], peak: float = 1.0) -> NDArray[np.float64]:
    """Inverse of rgb_to_ycbcr; not clipped (the caller rounds and clips to its output range)."""
    _check_rgb(ycbcr, "YCbCr")
    return (np.asarray(ycbcr, dtype=np.float64) - YCBCR_OFFSET * peak) @ YCBCR_TO_RGB.T
