"""What the Python API (vdsr.Upscaler.upscale) takes, as pixels: PIL images and uint8, uint16 or float arrays in
[0, 1], checked, and what turns a result back into what the caller gave."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vdsr.errors import ImageError, UsageError
from vdsr.runtime.images import load_image_object, to_pil_image
from vdsr.runtime.picture import check_output

Finish = Callable[[NDArray[Any]], Any]  # a result's pixels -> what the caller gets back (a PIL image, an array)


def prepare(
    image: Image.Image | NDArray[Any], scale: float, *, name: Path | str, max_output_pixels: int
) -> tuple[NDArray[np.floating], Any, Finish]:
    """What the API takes -> (pixels in [0, 1], the result's dtype, what turns the result into what it gives back)."""
    if isinstance(image, Image.Image):
        loaded = load_image_object(image, name)  # refused as a file would be: animated, truncated, ...

        def as_pil(pixels: NDArray[Any]) -> Image.Image:
            result = to_pil_image(pixels)
            if loaded.icc_profile:
                result.info["icc_profile"] = loaded.icc_profile
            return result

        return loaded.pixels, np.uint16 if loaded.bit_depth == 16 else np.uint8, as_pil
    array = np.asarray(image)
    if array.ndim == 2:
        pixels, dtype, finish = prepare(array[..., None], scale, name=name, max_output_pixels=max_output_pixels)
        return pixels, dtype, lambda out: finish(out)[..., 0]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise UsageError(f"{name}: expected an (H, W) or (H, W, C) image with C in 1..4, got shape {np.shape(image)}")
    if array.dtype in (np.uint8, np.uint16):
        check_output(array.shape, scale, max_output_pixels=max_output_pixels, name=name)  # before a float copy
        return array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max), array.dtype, lambda out: out
    if not np.issubdtype(array.dtype, np.floating):
        raise UsageError(f"{name}: expected uint8, uint16 or float pixels, got {array.dtype}")
    return array, np.float32, lambda out: out


def check_values(pixels: NDArray[np.floating], name: Path | str) -> None:
    """ImageError unless every value is finite and in [0, 1] (a float image on 0..255 would come out white). min and
    max carry NaN and inf along, so no temporary as large as the image is made."""
    if pixels.size == 0:
        return
    low, high = float(pixels.min()), float(pixels.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ImageError(name, "pixel values are NaN or inf")
    if low < 0 or high > 1:
        raise ImageError(
            name,
            f"float pixel values must lie in [0, 1], got {low:g} to {high:g} (pass 8-bit images "
            "as uint8, or divide by 255)",
        )
