"""EXIF as the runtime reads it: the orientation that turns pixels upright, and a block Pillow cannot parse counted
as none. The pixels of such a file are good, so it is still read (and written without the block), not refused."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

# What Pillow raises on an EXIF block that is not one (a bad TIFF header, offsets past the end, wrong types).
PARSE_ERRORS = (SyntaxError, ValueError, TypeError, KeyError, IndexError, OSError, EOFError, struct.error)
JPEG_MAX_EXIF = 65_533  # bytes of one APP1 marker segment, its "Exif\0\0" included (Pillow's writer's check)

# EXIF orientation (2..8) -> the numpy view that displays the image upright, as ImageOps.exif_transpose does
_ORIENT: dict[int, Callable[[NDArray[Any]], NDArray[Any]]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def upright_pixels(pixels: NDArray[np.float32], orientation: object) -> NDArray[np.float32]:
    """`pixels` turned as an EXIF orientation (1..8) says, contiguous."""
    return np.ascontiguousarray(_ORIENT[orientation](pixels) if orientation in _ORIENT else pixels)


def _sound(block: bytes) -> Image.Exif | None:
    """The tags of an EXIF block; None when Pillow cannot parse it or write it back (as turning the image upright
    and writing the result do)."""
    exif = Image.Exif()
    try:
        exif.load(block)
        exif.tobytes()
    except PARSE_ERRORS:
        return None
    return exif


def parsed(block: bytes | None) -> Image.Exif:
    """The tags of an EXIF block; none (an empty Exif) for a block that is not sound."""
    return (_sound(block) if block else None) or Image.Exif()


def usable(image: Image.Image) -> bool:
    """Whether `image`'s EXIF block, if it has one, is sound. Checked on the block itself too: Pillow's JPEG opener
    parses it when it opens the file, keeps what it could, and no longer raises."""
    try:
        image.getexif()  # a PNG's block may be ImageMagick's hex text chunk, which Pillow reads here
    except PARSE_ERRORS:
        return False
    block = image.info.get("exif")
    return not isinstance(block, bytes) or not block or _sound(block) is not None


def from_text(text: object) -> bytes | None:
    """The EXIF block in ImageMagick's PNG text chunk ("Raw profile type exif": a header of three lines, then hex), as
    Pillow reads it for 8-bit PNGs; None for none, or for text that is not hex."""
    if not isinstance(text, str):
        return None
    try:
        return bytes.fromhex("".join(text.split("\n")[3:]))
    except ValueError:
        return None


def upright(image: Image.Image, *, in_place: bool) -> Image.Image:
    """`image` turned as its EXIF orientation says (ImageOps.exif_transpose: in place, else a copy). An EXIF block
    Pillow cannot parse or write back counts as none and is dropped from the image's info, so it is not written
    either."""
    if not usable(image):
        image = image if in_place else image.copy()
        image.info.pop("exif", None)
        image.info.pop("Raw profile type exif", None)
        image.getexif().clear()  # Pillow keeps what it parsed before the error
    if in_place:
        ImageOps.exif_transpose(image, in_place=True)
        return image
    return ImageOps.exif_transpose(image)
