"""16-bit colour TIFF and PPM files, which Pillow reads as 8-bit RGB: `wide_colour` decodes them at 16 bits.

- TIFF (contiguous RGB or RGBA, any compression Pillow's libtiff reads; other 16-bit colour layouts, planar or with
  premultiplied alpha, are refused rather than read wrong): Pillow's own decoder, twice. Pillow stores at most 8 bits a
  channel, but its 16-bit raw modes pick one byte of each sample ("RGB;16L" the high byte of little-endian data,
  "RGB;16B" of big-endian, "RGB;16N" of native): decoding with the file's mode keeps the high bytes, with the other
  byte order the low bytes, and the two make the exact values (as vdsr.runtime.png16 does for PNG).
- Binary PPM (P6) with a maximum value over 255: big-endian samples after the header, read here and scaled by the
  maximum value; a sample above it is an error. Plain-text (P3) ones: the numbers after the header.
Gray 16-bit TIFF, PGM and PNG need none of this: Pillow reads them exactly.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, TiffImagePlugin

from vdsr.runtime.exif import upright

# Pillow raw modes whose unpackers only pick one byte of each 16-bit sample (the last letter, the byte order, aside);
# "RGBa;16" (premultiplied alpha) also divides by alpha, which the low-byte pass cannot undo
_BYTE_PICKERS = ("RGB;16", "RGBA;16", "RGBX;16")
_OTHER_BYTE = {"L": "B", "B": "L", "N": "B" if sys.byteorder == "little" else "L"}


def is_wide_colour(image: ImageFile.ImageFile) -> bool:
    """Whether Pillow would cut this opened image's 16-bit colour samples to 8 bits."""
    if image.format == "PPM":
        return image.mode == "RGB" and bool(image.tile) and _maximum(image) > 255
    if not isinstance(image, TiffImagePlugin.TiffImageFile):
        return False
    bits = image.tag_v2.get(258, (1,))  # BitsPerSample, one per sample
    return isinstance(bits, tuple) and len(bits) > 1 and max(bits) > 8


def wide_colour(image: ImageFile.ImageFile, data: bytes) -> NDArray[np.float32]:
    """The pixels of `image` (opened from `data`, not yet loaded; is_wide_colour true) as float32 in [0, 1],
    (H, W, 3 or 4). ValueError (one line) for data that does not hold them, or a layout this cannot read exactly."""
    if not isinstance(image, TiffImagePlugin.TiffImageFile):
        return _ppm(image, data)
    contiguous = image.tag_v2.get(284, 1) == 1  # PlanarConfiguration
    if not (contiguous and image.tile and all(_raw_mode(tile.args)[:-1] in _BYTE_PICKERS for tile in image.tile)):
        raise ValueError(
            f"a colour TIFF of {image.tag_v2.get(258)} bits, planar or with premultiplied alpha, is not "
            "read exactly here; save it as contiguous RGB or RGBA"
        )
    planes = []
    for other_byte in (False, True):
        with Image.open(io.BytesIO(data), formats=["TIFF"]) as again:
            again.tile = [tile._replace(args=_with_raw_mode(tile.args, other_byte=other_byte)) for tile in again.tile]
            again.load()  # Pillow turns a TIFF upright as it loads it (13: in load_end); older ones did not
            upright(again, in_place=True)  # a no-op once done: its orientation tag is gone
            planes.append(np.asarray(again))
    values = np.left_shift(planes[0], 8, dtype=np.uint16) | planes[1]
    pixels: NDArray[np.float32] = values.astype(np.float32) / np.float32(65535)
    return pixels


def _raw_mode(args: tuple[Any, ...] | str | None) -> str:
    return str(args[0] if isinstance(args, tuple) else args)


def _with_raw_mode(args: tuple[Any, ...] | str | None, *, other_byte: bool) -> tuple[Any, ...] | str:
    mode = _raw_mode(args)
    if other_byte:
        mode = mode[:-1] + _OTHER_BYTE[mode[-1]]
    return (mode, *args[1:]) if isinstance(args, tuple) else mode


def _maximum(image: ImageFile.ImageFile) -> int:
    args = image.tile[0].args
    return int(args[1]) if isinstance(args, tuple) and len(args) > 1 else 255


def _ppm(image: ImageFile.ImageFile, data: bytes) -> NDArray[np.float32]:
    width, height = image.size
    count, maximum = width * height * 3, _maximum(image)
    body = data[image.tile[0].offset :]
    if image.tile[0].codec_name == "ppm":
        if len(body) < 2 * count:
            raise ValueError(f"PPM data cut short ({len(body)} bytes, {2 * count} needed)")
        values = np.frombuffer(body, ">u2", count)
    else:
        if b"#" in body:
            raise ValueError("comments inside plain PPM pixel data are not supported")
        words = body.split(maxsplit=count)
        if len(words) < count or not all(word.isdigit() for word in words[:count]):
            raise ValueError(f"plain PPM data holds fewer than the {count} numbers its size needs")
        values = np.array(words[:count], dtype=np.int64)
    if int(values.max(initial=0)) > maximum:
        raise ValueError(f"PPM sample {int(values.max())} over its maximum value {maximum}")
    return (values.astype(np.float32) / np.float32(maximum)).reshape(height, width, 3)
