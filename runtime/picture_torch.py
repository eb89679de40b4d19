"""vdsr.runtime.picture's colour pipeline on a torch device, for the torch and TensorRT backends.

The LR image is uploaded once. The BT.601 conversion, the bicubic ILR (matrix products per band of tiles, over only
the input rows and columns each band reads; the weights of vdsr.runtime.resize), the network on the tiles, the
conversion back to RGB and the rounding all run on the device; only each finished band of the result comes back.
The tiles run through vdsr.runtime.tiling's steps on torch tensors, so the result equals the numpy path's to float
rounding (a test checks it on the CPU). Importing this module imports torch: the upscaler loads it only for backends
that run on torch tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import DTypeLike, NDArray

from vdsr.runtime.color import RGB_TO_YCBCR, YCBCR_OFFSET, YCBCR_TO_RGB
from vdsr.runtime.picture import Y_OFFSET, Y_RANGE, host_memory, output_type
from vdsr.runtime.resize import contributions, output_shape_for
from vdsr.runtime.resize_torch import resize_rows
from vdsr.runtime.tiling import Steps, tile_steps

COLUMN_CHUNK = 2048  # output columns per column-resize product: bounds its matrix, whatever the image's width


def picture_steps_torch(
    pixels: NDArray[np.floating],
    scale: float,
    *,
    halo: int,
    device: str,
    tile: int = 512,
    dtype: DTypeLike = np.float32,
    name: Path | str = "<image>",
    on_band: Callable[[float], None] | None = None,
) -> Steps[NDArray[Any]]:
    """As vdsr.runtime.picture.picture_steps, with every step on `device` (windows and results: torch tensors on
    it). The host running out of memory is this picture's ImageError; torch failing on the device is a
    RuntimeError, the backend's failure (the caller stops the run)."""
    steps = _steps(pixels, scale, halo=halo, device=device, tile=tile, dtype=dtype, name=name, on_band=on_band)
    return host_memory(steps, name)


def _steps(
    pixels: NDArray[np.floating],
    scale: float,
    *,
    halo: int,
    device: str,
    tile: int,
    dtype: DTypeLike,
    name: Path | str,
    on_band: Callable[[float], None] | None,
) -> Steps[NDArray[Any]]:
    out_dtype, peak = output_type(pixels, dtype)
    gray = pixels.shape[-1] in (1, 2)
    n = 1 if gray else 3
    matrix = torch.tensor(RGB_TO_YCBCR, dtype=torch.float32, device=device)
    offset = torch.tensor(YCBCR_OFFSET, dtype=torch.float32, device=device)
    image = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(device)
    luma = Y_OFFSET + Y_RANGE * image[..., :1] if gray else image[..., :3] @ matrix.T + offset
    planes = torch.cat([luma, image[..., n:]], dim=-1).permute(2, 0, 1)  # (C, H, W): Y, Cb, Cr, alpha
    del image, luma
    height, width = output_shape_for((pixels.shape[0], pixels.shape[1]), scale)
    rows = contributions(pixels.shape[0], height, scale)
    cols = []  # per chunk of output columns: (its resize matrix, transposed, on the device; first input; start; stop)
    col_weights, col_source = contributions(pixels.shape[1], width, scale)
    for start in range(0, width, COLUMN_CHUNK):
        stop = min(width, start + COLUMN_CHUNK)
        part, first = resize_rows(col_weights, col_source, start=start, stop=stop)
        cols.append((torch.from_numpy(part.T).to(device, torch.float32), first, start, stop))

    def resize(planes: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Output rows start..stop of the bicubic resize of `planes` (C, H, W), as banded matrix products."""
        part, first = resize_rows(*rows, start=start, stop=stop)
        tall = torch.from_numpy(part).to(device, torch.float32) @ planes[:, first : first + part.shape[1]]
        wide = torch.empty((planes.shape[0], stop - start, width), device=device)
        for m, c_first, c_start, c_stop in cols:
            wide[..., c_start:c_stop] = tall[..., c_first : c_first + m.shape[0]] @ m
        return wide

    back = torch.tensor(YCBCR_TO_RGB, dtype=torch.float32, device=device)
    out = np.empty((height, width, pixels.shape[-1]), dtype=out_dtype)

    def empty(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty(shape, device=device)

    def ilr(start: int, stop: int) -> torch.Tensor:
        return resize(planes[:1], start, stop)[0]

    def finish(core0: int, core1: int, y: torch.Tensor) -> None:  # a band's luminance back to colour, to the host
        rest = resize(planes[1:], core0, core1)  # Cb, Cr and alpha of the core rows: bicubic, as the ILR
        if gray:
            color = ((y - Y_OFFSET) / Y_RANGE)[None]
        else:
            ycc = torch.cat([y[None], rest[:2]]) - offset[:, None, None]
            color = torch.einsum("ij,jhw->ihw", back, ycc)
        result_band = torch.cat([color, rest[2 if not gray else 0 :]]).clamp_(0, 1).permute(1, 2, 0)
        if out_dtype.kind == "u":
            result_band = torch.round(result_band * peak)
        out[core0:core1] = result_band.cpu().numpy()
        if on_band is not None:
            on_band(core1 / height)

    yield from tile_steps(ilr, (height, width), tile=tile, halo=halo, on_rows=finish, empty=empty, name=name)
    return out
