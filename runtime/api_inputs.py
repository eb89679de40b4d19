"""What the Python API (vdsr.Upscaler.upscale) takes, as pixels: PIL images and uint8, uint16 or float arrays in
[0, 1], checked, and what turns a result back into what the caller gave."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vdsr.errors import ImageError, UsageError
from vdsr.runtime import model_choice
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


def check_item(image: Image.Image | NDArray[Any], scale: float, *, name: Path | str, max_output_pixels: int) -> None:
    """What the upscale of `image` refuses that needs neither decoding nor a float copy: an empty image, an array's
    shape or type, a result over `max_output_pixels`, float values not in [0, 1]. A list's items are all checked
    before any work."""
    if isinstance(image, Image.Image):
        if 0 in image.size:
            raise UsageError(f"{name}: expected a non-empty image, got {image.width}x{image.height}")
        check_output((image.height, image.width), scale, max_output_pixels=max_output_pixels, name=name)
        return
    array = checked_array(image, name)
    check_output(array.shape, scale, max_output_pixels=max_output_pixels, name=name)
    if array.dtype.kind == "f":
        check_values(array, name)


def checked_array(image: object, name: Path | str) -> NDArray[Any]:
    """`image` as an array the API takes: (H, W) or (H, W, C), C in 1..4, non-empty, uint8, uint16 (either byte
    order) or float; UsageError naming `name` otherwise."""
    try:
        array = np.asarray(image)
    except ValueError:  # a ragged list of lists
        raise UsageError(f"{name}: not an image array (rows of different lengths)") from None
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4)) or 0 in array.shape:
        raise UsageError(
            f"{name}: expected a non-empty (H, W) or (H, W, C) image with C in 1..4, got shape {array.shape}"
        )
    if not (array.dtype.kind == "u" and array.dtype.itemsize in (1, 2)) and array.dtype.kind != "f":
        raise UsageError(f"{name}: expected uint8, uint16 or float pixels, got {array.dtype}")
    return array


def prepare(
    image: Image.Image | NDArray[Any], scale: float, *, name: Path | str, max_output_pixels: int, checked: bool = False
) -> tuple[NDArray[np.floating], Any, Finish]:
    """What the API takes -> (pixels in [0, 1], the result's dtype, what turns the result into what it gives back).
    Refused as check_item says before any copy (unless `checked` already), then as a file would be (a PIL image:
    animated, truncated, ...)."""
    if not checked:
        check_item(image, scale, name=name, max_output_pixels=max_output_pixels)
    if isinstance(image, Image.Image):
        loaded = load_image_object(image, name)

        def as_pil(pixels: NDArray[Any]) -> Image.Image:
            result = to_pil_image(pixels)
            if loaded.icc_profile:
                result.info["icc_profile"] = loaded.icc_profile
            return result

        return loaded.pixels, np.uint16 if loaded.bit_depth == 16 else np.uint8, as_pil
    array = np.asarray(image)
    if array.ndim == 2:
        options = {"name": name, "max_output_pixels": max_output_pixels, "checked": True}
        pixels, dtype, finish = prepare(array[..., None], scale, **options)  # type: ignore[arg-type]
        return pixels, dtype, lambda out: finish(out)[..., 0]
    if array.dtype.kind == "u":  # uint8 or uint16, either byte order ('>u2': FITS, network data)
        native = np.uint8 if array.dtype.itemsize == 1 else np.uint16  # what the result is given back as
        return array.astype(np.float32) / np.float32(np.iinfo(native).max), native, lambda out: out
    return array, np.float32, lambda out: out


def check_values(pixels: NDArray[np.floating], name: Path | str) -> None:
    """ImageError unless every value is finite and in [0, 1] (a float image on 0..255 would come out white). min and
    max carry NaN and inf along, so no temporary as large as the image is made."""
    if not isinstance(pixels, np.ndarray):
        raise UsageError(f"{name}: Expected (H, W, C) pixels as a numpy array, got {type(pixels).__name__}")
    if pixels.size == 0:
        return
    low, high = float(pixels.min()), float(pixels.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ImageError(name, "pixel values are NaN or inf")
    if low < 0 or high > 1:
        raise ImageError(
            name,
            f"float pixel values must lie in [0, 1], got {_shown(low)} to {_shown(high)} (pass 8-bit images "
            "as uint8, or divide by 255)",
        )


def _shown(value: float) -> str:
    """Every digit a float needs (1.0000000000000002 is not "1"), without a trailing ".0"."""
    return repr(value).removesuffix(".0")


def upscale_list(images: list[Any], scale: float, *, upscalers: list[Any], max_output_pixels: int) -> list[Any]:
    """Images, each for its upscaler (a vdsr.Upscaler, `scale` checked; model auto: one per item), every item checked
    first (check_item), then the items of each upscaler in groups of up to GROUP_PIXELS output pixels, each group's
    tiles batched across its images; the first image that cannot be taken is raised, named by its list index."""
    named = [(image, f"<image {index}>") for index, image in enumerate(images)]
    for image, name in named:
        check_item(image, scale, name=name, max_output_pixels=max_output_pixels)
    run = partial(_upscale_named, scale=scale, max_output_pixels=max_output_pixels)
    return model_choice.by_model(named, upscalers, lambda upscaler, mine: run(mine, upscaler=upscaler))


def _upscale_named(named: list[tuple[Any, str]], *, scale: float, upscaler: Any, max_output_pixels: int) -> list[Any]:
    results: list[Any] = []
    group: list[tuple[Steps[NDArray[Any]], Finish]] = []
    size = 0.0
    for index, (image, name) in enumerate(named):
        pixels, dtype, finish = prepare(image, scale, name=name, max_output_pixels=max_output_pixels, checked=True)
        group.append((upscaler.steps(pixels, scale, dtype, name=name, max_output_pixels=max_output_pixels), finish))
        size += pixels.shape[0] * pixels.shape[1] * scale**2
        if size >= GROUP_PIXELS or index == len(named) - 1:
            outcomes = upscaler._drive([steps for steps, _ in group])
            for outcome, (_, finish) in zip(outcomes, group, strict=True):
                if isinstance(outcome, Failed):
                    raise outcome.error
                results.append(finish(outcome))
            group, size = [], 0.0
    return results
