"""MATLAB-exact bicubic resize on a torch tensor, on whatever device it lives (the ILR made on the GPU).

Same weights as vdsr.runtime.resize (one `contributions` for both), as two small dense matrices, so the resize is
two matrix products: out = Rows @ image @ Cols^T. Rows first, as imresize does for equal scales. Needs torch (the
GPU paths have it); the CPU runtime uses the numpy version.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from vdsr.runtime.resize import contributions, output_shape_for


def resize_rows(
    weights: NDArray[np.float64], source: NDArray[np.intp], *, start: int, stop: int
) -> tuple[NDArray[np.float64], int]:
    """Rows start..stop of the resize matrix of `contributions`, over only the inputs they read: (the matrix, the
    first input it reads). A band of a large image then costs its own size, not the whole image's."""
    taps = source[start:stop]
    first, last = int(taps.min()), int(taps.max())
    matrix = np.zeros((stop - start, last - first + 1))
    np.add.at(
        matrix, (np.repeat(np.arange(stop - start), taps.shape[1]), (taps - first).ravel()), weights[start:stop].ravel()
    )  # mirrored taps summed
    return matrix, first


def resize_matrix(in_length: int, out_length: int, scale: float) -> NDArray[np.float64]:
    """(out_length, in_length): row i holds the weights output i takes from each input (mirrored taps summed)."""
    part, first = resize_rows(*contributions(in_length, out_length, scale), start=0, stop=out_length)
    matrix = np.zeros((out_length, in_length))
    matrix[:, first : first + part.shape[1]] = part
    return matrix


def imresize_torch(image: torch.Tensor, scale: float) -> torch.Tensor:
    """`imresize(image, scale)` for a (..., H, W) float tensor, in its dtype and on its device."""
    if image.dim() < 2 or not image.is_floating_point():
        raise ValueError(f"Expected a float tensor (..., H, W), got {image.dtype} {tuple(image.shape)}")
    height, width = image.shape[-2:]
    out_height, out_width = output_shape_for((height, width), scale)
    rows = torch.from_numpy(resize_matrix(height, out_height, scale)).to(image.device, image.dtype)
    cols = torch.from_numpy(resize_matrix(width, out_width, scale)).to(image.device, image.dtype)
    return rows @ image @ cols.T
