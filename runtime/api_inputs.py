"""What the Python API (vdsr.Upscaler.upscale) takes, as pixels: PIL images and uint8, uint16 or float arrays in
[0, 1], checked, and what turns a result back into what the caller gave."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vdsr.errors import ImageError, UsageError
from vdsr.runtime.batching import Failed
from vdsr.runtime.images import load_image_object, to_pil_image
from vdsr.runtime.picture import check_output
from vdsr.runtime.pipeline import GROUP_PIXELS
from vdsr.runtime.tiling import Steps

Finish = Callable[[NDArray[Any]], Any]  # a result's pixels -> what the caller gets back (a PIL image, an array)


def is_image_list(image: object) -> TypeGuard[list[Any]]:
    """Whether `image` is a list of images (PIL images, arrays); UsageError naming the first item that is not, in a
    list that holds some (a list of lists of numbers is one array)."""
    if not isinstance(image, list):
        return False
    kinds = [isinstance(item, Image.Image | np.ndarray) for item in image]
    if any(kinds) and not all(kinds):
        index = kinds.index(False)
        raise UsageError(f"item {index} of the list is a {type(image[index]).__name__}, not a PIL image or an array")
    return all(kinds)  # an empty list too: nothing back


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
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4) or 0 in array.shape:
        raise UsageError(
            f"{name}: expected a non-empty (H, W) or (H, W, C) image with C in 1..4, got shape {np.shape(image)}"
        )
    if array.dtype.kind == "u" and array.dtype.itemsize in (1, 2):  # either byte order ('>u2': FITS, network data)
        native = np.uint8 if array.dtype.itemsize == 1 else np.uint16  # what the result is given back as
        check_output(array.shape, scale, max_output_pixels=max_output_pixels, name=name)  # before a float copy
        return array.astype(np.float32) / np.float32(np.iinfo(native).max), native, lambda out: out
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


def upscale_list(images: list[Any], scale: float, *, upscaler: Any, max_output_pixels: int) -> list[Any]:
    """Images for `upscaler` (a vdsr.Upscaler, `scale` checked) in groups of up to GROUP_PIXELS output pixels, each
    group's tiles batched across its images; the first image that cannot be taken is raised."""
    results: list[Any] = []
    group: list[tuple[Steps[NDArray[Any]], Finish]] = []
    size = 0.0
    for index, image in enumerate(images):
        name = f"<image {index}>"  # errors say which list item
        pixels, dtype, finish = prepare(image, scale, name=name, max_output_pixels=max_output_pixels)
        group.append((upscaler.steps(pixels, scale, dtype, name=name, max_output_pixels=max_output_pixels), finish))
        size += pixels.shape[0] * pixels.shape[1] * scale**2
        if size >= GROUP_PIXELS or index == len(images) - 1:
            outcomes = upscaler._drive([steps for steps, _ in group])
            for outcome, (_, finish) in zip(outcomes, group, strict=True):
                if isinstance(outcome, Failed):
                    raise outcome.error
                results.append(finish(outcome))
            group, size = [], 0.0
    return results
