"""MATLAB-exact bicubic resize, `imresize(image, scale, 'bicubic')`, in vectorised numpy.

Follows MATLAB's imresize.m step by step so the super-resolution inputs match the ones the VDSR paper was evaluated on:
- Keys' cubic kernel with a = -0.5 (OpenCV and torch use a = -0.75; that alone costs tenths of a dB),
- antialiasing when shrinking: the kernel is stretched by 1/scale and scaled by scale,
- sample positions u = x / scale + 0.5 * (1 - 1 / scale) for output pixel x (1-based),
- symmetric border padding (index sequence 1..n, n..1 repeated),
- output size ceil(scale * input size), and the dimension with the smaller scale resized first.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike, NDArray

KERNEL_WIDTH = 4.0  # support of the cubic kernel, in input pixels, before antialiasing


def cubic(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Keys (1981) cubic convolution kernel with a = -0.5, as MATLAB's `cubic`."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    kernel: NDArray[np.float64] = near + far
    return kernel


def contributions(in_length: int, out_length: int, scale: float) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Weights and 0-based source indices, each (out_length, taps).

    Output i = sum_j weights[i, j] * input[indices[i, j]].
    """
    # Antialiasing when shrinking: a kernel as wide as an output pixel's footprint, h(x) = scale * cubic(scale * x).
    # stretch is 1 when enlarging, which leaves the plain kernel (multiplying by 1.0 is exact).
    stretch = min(scale, 1.0)
    width = KERNEL_WIDTH / stretch
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)  # 1-based, may fall outside 1..in_length
    weights: NDArray[np.float64] = stretch * cubic(stretch * (u[:, None] - indices))
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    source: NDArray[np.intp] = mirror[np.mod(indices.astype(np.intp) - 1, 2 * in_length)]
    used = np.any(weights != 0, axis=0)  # MATLAB drops taps that are zero for every output pixel
    return weights[:, used], source[:, used]


def modcrop(image: NDArray[np.generic], scale: int) -> NDArray[np.generic]:
    """Crop the bottom rows and right columns so height and width are multiples of `scale` (MATLAB `modcrop`)."""
    if scale < 1:
        raise ValueError(f"Expected an integer scale >= 1, got {scale}")
    rows = image.shape[0] - image.shape[0] % scale
    cols = image.shape[1] - image.shape[1] % scale
    return image[:rows, :cols]


def output_shape_for(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """MATLAB's output size for a scale factor: ceil(scale * size) per dimension, the product rounded to 9 decimals
    first, so that float error adds no pixel (25 x 2.2 is 55.00000000000001 in floats: 55, not MATLAB's 56)."""
    return (math.ceil(round(scale * shape[0], 9)), math.ceil(round(scale * shape[1], 9)))


def _resize_axis(
    image: NDArray[np.floating], axis: int, *, weights: NDArray[np.float64], source: NDArray[np.intp]
) -> NDArray[np.floating]:
    """Output i along `axis` = sum over taps j of weights[i, j] * image[source[i, j]] (other axes broadcast)."""
    w = weights.astype(image.dtype)
    moved = np.moveaxis(image, axis, 0)
    broadcast = (w.shape[0],) + (1,) * (moved.ndim - 1)
    out = w[:, 0].reshape(broadcast) * moved[source[:, 0]]
    for tap in range(1, w.shape[1]):
        out += w[:, tap].reshape(broadcast) * moved[source[:, tap]]
    return np.moveaxis(out, 0, axis)


def imresize(
    image: NDArray[np.generic],
    scale: float | None = None,
    *,
    output_shape: tuple[int, int] | None = None,
    dtype: DTypeLike = np.float64,
) -> NDArray[np.floating]:
    """Resize an (H, W) or (H, W, C) array like MATLAB's `imresize(image, scale or [rows cols], 'bicubic')`.

    Give exactly one of `scale` (any positive number, e.g. 1/3 or 2.5) or `output_shape` (rows, cols). The result is
    float in `dtype` (float64 by default, as MATLAB computes for double input) and is not rounded or clipped.
    """
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"Expected an (H, W) or (H, W, C) image with H, W >= 1, got shape {image.shape}")
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"Expected a floating-point dtype to compute in, got {np.dtype(dtype)}")
    in_shape = (int(image.shape[0]), int(image.shape[1]))
    if (scale is None) == (output_shape is None):
        raise ValueError(f"Give exactly one of scale or output_shape, got scale={scale}, output_shape={output_shape}")
    if scale is not None:
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"Expected a finite scale > 0, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = output_shape_for(in_shape, scale)
    else:
        assert output_shape is not None
        if len(output_shape) != 2 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in output_shape):
            raise ValueError(f"Expected output_shape (rows, cols) of integers >= 1, got {output_shape}")
        out_shape = (int(output_shape[0]), int(output_shape[1]))
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
    result = np.asarray(image, dtype=dtype)
    # MATLAB resizes the dimension with the smaller scale first (a stable sort: rows first on a tie); fewer operations.
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        weights, source = contributions(in_shape[axis], out_shape[axis], scales[axis])
        result = _resize_axis(result, axis, weights=weights, source=source)
    return result


def imresize_rows(image: NDArray[np.floating], scale: float, *, start: int, stop: int) -> NDArray[np.floating]:
    """Rows start..stop-1 of `imresize(image, scale, dtype=image.dtype)` for a float (H, W) or (H, W, C) image,
    reading only the input rows they need: a band of a huge output without the whole output in memory. Bit-identical
    to slicing the whole result (rows are resized first, as imresize does for equal scales)."""
    if not (isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating) and image.ndim in (2, 3)):
        raise ValueError(f"Expected a float (H, W) or (H, W, C) array, got {type(image).__name__}")
    rows, cols = output_shape_for((image.shape[0], image.shape[1]), scale)
    if not 0 <= start < stop <= rows:
        raise ValueError(f"Expected 0 <= start < stop <= {rows} output rows, got {start}..{stop}")
    weights, source = contributions(image.shape[0], rows, scale)
    weights, source = weights[start:stop], source[start:stop]
    first = int(source.min())
    band = _resize_axis(image[first : int(source.max()) + 1], 0, weights=weights, source=source - first)
    col_weights, col_source = contributions(image.shape[1], cols, scale)
    return _resize_axis(band, 1, weights=col_weights, source=col_source)
