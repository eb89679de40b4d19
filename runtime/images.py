"""Image files in and out, with one clear error per file that cannot be read or written.

Reading: every pixel format PIL decodes is normalised to float32 (H, W, C) in [0, 1] with C = 1 (gray) or 3 (RGB),
plus a last alpha channel when the file has one; EXIF orientation is applied. 16-bit PNGs keep their precision (PIL
reads 16-bit gray; 16-bit colour PNGs, which PIL cuts to 8 bits, go through vdsr.runtime.png16). The ICC profile and
EXIF block travel with the pixels so that the written result keeps them.

Writing: the format follows the file suffix; 16-bit sources stay 16-bit where the format can hold it (PNG; TIFF for
gray); the file appears whole or not at all (temp file + rename).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, UnidentifiedImageError

from vdsr.errors import ImageError, UsageError
from vdsr.files import atomic_write, open_regular
from vdsr.runtime import containers, jpeg, png16, sixteen_bit
from vdsr.runtime.exif import from_text, parsed, upright, upright_pixels

# What a folder run or a data set picks up (by suffix, any case); a single file given by name is read whatever its
# suffix, but only ever as one of READ_FORMATS.
IMAGE_SUFFIXES = tuple(".png .apng .jpg .jpeg .bmp .tif .tiff .webp .gif .ppm .pgm .pnm .tga".split())
# The only Pillow plugins a file is ever decoded by, whatever its name or first bytes say: never EPS (which runs
# Ghostscript), PDF, or the many rarely used plugins a hostile file could pick. (JPEG opens MPO, camera JPEGs with
# previews, too.)
READ_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF", "PPM", "TGA")

# Refuse larger inputs before decoding them (decompression bombs). PIL's own threshold: above it PIL warns, and above
# twice it PIL refuses, so a larger limit here would not help.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# The most bytes a file of an image's pixels may take: 16-bit RGBA uncompressed takes 8 a pixel, a plain-text 16-bit
# PPM up to 18 and its separators, plus room for metadata (ICC profiles, EXIF, XMP). A larger file is refused before
# it is read into memory: its padding, not its pixels, would set the memory used.
BYTES_PER_PIXEL = 32
METADATA_BYTES = 64 << 20


def max_file_bytes(pixels: int) -> int:
    """The largest image file (bytes) that `pixels` pixels can explain."""
    return pixels * BYTES_PER_PIXEL + METADATA_BYTES


def check_file_size(f: BinaryIO, path: Path | str, *, pixels: int, what: str) -> None:
    """ImageError when the open file `f` is empty or larger than `pixels` pixels explain (`what` names them);
    rewound."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    if size == 0:
        raise ImageError(path, "an empty file (0 bytes)")
    if size > max_file_bytes(pixels):
        raise ImageError(path, padded(size, what))


def padded(size: int, what: str) -> str:
    """The cause of a file refused by max_file_bytes: `size` bytes, more than `what` (its pixels) takes."""
    return f"{size} bytes is more than {what} takes; refused as padded"


# PIL mode -> (mode to convert to, bit depth). Modes not listed (LAB, HSV, F, ...) are refused with a clear error.
# 16-bit gray is read as stored: PIL's convert() between its 16-bit modes clips values to 0..255.
_MODES = {
    "1": ("L", 8),
    "L": ("L", 8),
    "LA": ("LA", 8),
    "La": ("LA", 8),
    "P": ("RGB", 8),  # becomes RGBA when the palette has transparency, below
    "PA": ("RGBA", 8),
    "RGB": ("RGB", 8),
    "RGBA": ("RGBA", 8),
    "RGBa": ("RGBA", 8),
    "RGBX": ("RGB", 8),
    "CMYK": ("RGB", 8),
    "YCbCr": ("RGB", 8),  # JPEG's full-range YCbCr, which PIL converts correctly
    "I;16": ("I;16", 16),
    "I;16L": ("I;16L", 16),
    "I;16B": ("I;16B", 16),
    "I;16N": ("I;16N", 16),
    "I": ("I", 16),  # 32-bit container that PIL uses for 16-bit gray in some formats; values checked below
}


@dataclass(frozen=True)
class LoadedImage:
    path: Path | str  # a local path, or the URI it was downloaded from
    pixels: NDArray[np.float32]  # (H, W, C) in [0, 1]; C = 1 or 3 colour channels, plus alpha last if has_alpha
    bit_depth: int  # 8 or 16: the precision the file held (and kept)
    has_alpha: bool
    icc_profile: bytes | None = None
    exif: bytes | None = None  # with the orientation already applied to the pixels and removed from the block
    lossy: bool = False  # JPEG (or lossy WebP): its compression artefacts are in the pixels (model "auto" reads it)

    @property
    def color(self) -> NDArray[np.float32]:
        """Colour channels without alpha: (H, W, 1) gray or (H, W, 3) RGB."""
        return self.pixels[..., :-1] if self.has_alpha else self.pixels

    @property
    def alpha(self) -> NDArray[np.float32] | None:
        return self.pixels[..., -1] if self.has_alpha else None

    @property
    def is_gray(self) -> bool:
        """True for one-channel images and for RGB images whose R, G and B are equal everywhere."""
        c = self.color
        return c.shape[-1] == 1 or bool(np.array_equal(c[..., 0], c[..., 1]) and np.array_equal(c[..., 1], c[..., 2]))


def pixels_of(image: Image.Image, path: Path | str) -> tuple[NDArray[np.float32], int]:
    if image.mode not in _MODES:
        raise ImageError(path, f"unsupported pixel format {image.mode!r}")
    target, depth = _MODES[image.mode]
    if image.mode in ("P", "L", "RGB", "1") and "transparency" in image.info:  # a palette entry or colour key: alpha
        target = "LA" if image.mode in ("L", "1") else "RGBA"
    elif image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA":  # RGBA.quantize()'s
        target = "RGBA"
    if image.mode != target:
        image = image.convert(target)
    array = np.asarray(image)
    if image.mode == "I" and (array.min() < 0 or array.max() > 65535):
        raise ImageError(path, f"unsupported 32-bit integer pixels (range {array.min()}..{array.max()})")
    pixels = array.astype(np.float32) / np.float32(255 if depth == 8 else 65535)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    key = image.info.get("transparency")
    if depth == 16 and isinstance(key, int):  # a 16-bit gray colour key: that value becomes transparent
        pixels = np.concatenate([pixels, (array != key)[..., None].astype(np.float32)], axis=-1)
    return pixels, depth


_SIXTEEN_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # PIL reads these exactly


def _read_png16(
    path: Path | str, data: bytes, raw_profile: object
) -> tuple[NDArray[np.float32], int, bytes | None, bytes | None]:
    """A 16-bit colour PNG (which PIL would cut to 8 bits) through vdsr.runtime.png16, oriented by its EXIF: its
    eXIf chunk, else the hex text ImageMagick writes (`raw_profile`, Pillow's info; Pillow reads 8-bit PNGs so)."""
    try:
        array, icc, exif_bytes = png16.read_png16(data)
    except ValueError as error:
        raise ImageError(path, f"corrupt 16-bit PNG ({error})") from error
    exif = parsed(exif_bytes or from_text(raw_profile))
    pixels = upright_pixels(array.astype(np.float32) / np.float32(65535), exif.pop(0x0112, 1))
    return pixels, 16, icc, exif.tobytes() if len(exif) else None


def _read_wide(
    path: Path | str, image: ImageFile.ImageFile, data: bytes
) -> tuple[NDArray[np.float32], int, bytes | None, None]:
    """A 16-bit colour TIFF or PPM through vdsr.runtime.sixteen_bit, which turns it upright."""
    try:
        pixels = sixteen_bit.wide_colour(image, data)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(path, f"cannot read this 16-bit {image.format} ({error})") from error
    return pixels, 16, icc_profile_of(image), None


def _checked_jpeg(path: Path | str, data: bytes) -> Image.Image:
    """A JPEG opened for decoding after vdsr.runtime.jpeg's checks: its size against its bytes, its structure, and
    bytes arranged so that a scan cut short is reported as truncated."""
    try:
        layout = jpeg.inspect(data)
        jpeg.check_size(layout, len(data))
    except ValueError as error:
        raise ImageError(path, str(error)) from error
    return Image.open(io.BytesIO(jpeg.decodable(data, layout)), formats=["JPEG"])


def _decode(image: Image.Image, path: Path | str) -> tuple[NDArray[np.float32], int, bytes | None, bytes | None]:
    """An opened PIL image decoded: pixels (oriented by EXIF), bit depth, ICC profile, EXIF."""
    image.load()
    upright(image, in_place=True)
    pixels, depth = pixels_of(image, path)
    return pixels, depth, icc_profile_of(image), image.info.get("exif")


def icc_profile_of(image: Image.Image) -> bytes | None:
    """The image's ICC profile, or None; a CMYK profile does not describe the RGB pixels PIL converts to: better none
    than a wrong one."""
    return image.info.get("icc_profile") if image.mode != "CMYK" else None


def check_one_frame(image: Image.Image, path: Path | str) -> None:
    """ImageError for an animation or a multi-page file (a camera JPEG's MPF previews aside: frame 0 is the photo).
    Found without counting the frames: each plugin of READ_FORMATS sets `is_animated` from the first frame's header
    (TIFF: the first page's link to a next one; PNG, WebP, MPO: the count their headers declare) or by reading on to
    the second frame (GIF), where `n_frames` walks every page (a 30,000-page TIFF: 10 s)."""
    if getattr(image, "is_animated", False) and image.format != "MPO":
        raise ImageError(path, "animated or multi-page image is not supported")


def load_image_object(image: Image.Image, name: Path | str = "<image>") -> LoadedImage:
    """A PIL image already in memory (or opened and not yet loaded), normalised as load_image normalises files, and
    refused as they are: ImageError naming the file PIL opened it from, else `name`."""
    path = getattr(image, "filename", "") or name
    lossy = image.format in ("JPEG", "MPO", "WEBP")  # a PIL image's file format (not how a WebP was coded)
    with _decode_errors(path):
        check_one_frame(image, path)
        image = upright(image, in_place=False)  # a copy, turned upright as files are
        pixels, depth = pixels_of(image, path)
    return LoadedImage(path, pixels, depth, pixels.shape[-1] in (2, 4), icc_profile_of(image), lossy=lossy)


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode one image file (EXIF orientation applied), a regular file in one of READ_FORMATS. Raises ImageError
    naming the file and the cause."""
    path = Path(path)
    try:
        with open_regular(path) as f:
            return _decode_file(f, path, max_pixels)
    except FileNotFoundError as error:
        raise ImageError(path, "file not found") from error
    except PermissionError as error:
        raise ImageError(path, "permission denied") from error
    except IsADirectoryError as error:
        raise ImageError(path, "is a directory, not an image file") from error


def decode_image(data: bytes | BinaryIO, name: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """An image file's bytes, or an open file of them (downloaded, say), decoded as load_image decodes a file;
    ImageError naming `name`."""
    return _decode_file(io.BytesIO(data) if isinstance(data, bytes) else data, name, max_pixels)


def _decode_file(f: BinaryIO, path: Path | str, max_pixels: int) -> LoadedImage:
    check_file_size(f, path, pixels=max_pixels, what=f"an image of at most {max_pixels} pixels")
    with _decode_errors(path, f), Image.open(f, formats=READ_FORMATS) as image:
        check_one_frame(image, path)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(path, f"{width}x{height} is over the limit of {max_pixels} pixels")
        check_file_size(f, path, pixels=width * height, what=f"a {width}x{height} image")
        if image.format == "PNG":  # Pillow fills the rows a short (well-formed) stream lacks with black
            containers.check_png_rows(f)
        if image.format == "PNG" and image.mode not in _SIXTEEN_BIT_GRAY and png16.is_png16(_head(f, 33)):
            f.seek(0)
            pixels, depth, icc, exif = _read_png16(path, f.read(), image.info.get("Raw profile type exif"))
        elif isinstance(image, ImageFile.ImageFile) and sixteen_bit.is_wide_colour(image):  # TIFF, PPM
            f.seek(0)
            pixels, depth, icc, exif = _read_wide(path, image, f.read())
        elif image.format in ("JPEG", "MPO"):
            f.seek(0)
            with _checked_jpeg(path, f.read()) as checked:
                pixels, depth, icc, exif = _decode(checked, path)
        else:
            pixels, depth, icc, exif = _decode(image, path)
        lossy = containers.lossy_coded(image.format, f)
    has_alpha = pixels.shape[-1] in (2, 4)
    return LoadedImage(path, pixels, depth, has_alpha, icc or None, exif or None, lossy)


def _head(f: BinaryIO, count: int) -> bytes:
    f.seek(0)
    return f.read(count)


@contextmanager
def _decode_errors(path: Path | str, f: BinaryIO | None = None) -> Iterator[None]:
    """Decoding failures, whatever PIL or a plugin raised, as one ImageError naming `path` (read from `f`, if given)."""
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(path, f"image too large to decode safely ({error})") from error
    except UnidentifiedImageError as error:
        layout = containers.tiff_layout(f) if f is not None else None
        if layout is not None:
            raise ImageError(
                path, f"a TIFF layout not read here ({layout}): save it as 8- or 16-bit gray or RGB(A)"
            ) from error
        raise ImageError(path, f"not an image file in a supported format ({', '.join(READ_FORMATS)})") from error
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # load_image says these in its own words
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports truncated or corrupt data as OSError (and some plugins as SyntaxError/ValueError).
        raise ImageError(path, f"corrupt or truncated image ({error})") from error
    except MemoryError as error:
        raise ImageError(path, "not enough memory to decode it") from error
    except Exception as error:  # noqa: BLE001  (plugins also raise struct.error, EOFError, KeyError on bad data)
        raise ImageError(path, f"cannot decode it ({type(error).__name__}: {error})") from error


# The formats results are written in, and what each holds: an alpha channel; 16 bits per sample (gray only for
# TIFF and PPM, whose PIL writers have no 16-bit colour); an ICC profile. Others (GIF: 256 colours) would lose the
# upscale's detail.
OUTPUT_FORMATS = {
    "PNG": (True, True, True),
    "TIFF": (True, True, True),
    "WEBP": (True, False, True),
    "TGA": (True, False, False),
    "JPEG": (False, False, True),
    "BMP": (False, False, False),
    "PPM": (False, True, False),
}


class OutputFormat(str, Enum):
    """What --format takes: the suffix each output format is written with, mapped to PIL's name by FORMAT_SUFFIXES."""

    png = "png"
    jpg = "jpg"
    webp = "webp"
    tif = "tif"
    tga = "tga"
    bmp = "bmp"
    ppm = "ppm"


FORMAT_SUFFIXES = dict(
    zip([f.value for f in OutputFormat], ["PNG", "JPEG", "WEBP", "TIFF", "TGA", "BMP", "PPM"], strict=True)
)
assert set(FORMAT_SUFFIXES.values()) == set(OUTPUT_FORMATS), "every output format has its suffix"


def output_format(path: PurePath) -> str:
    """PIL's format name for a file suffix ('.jpg' -> 'JPEG'); UsageError for a suffix this tool does not write
    (.pbm and .pfm among them: PIL's PPM writer would put 8- or 16-bit P5/P6 data under a bitmap's or a float map's
    name)."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt not in OUTPUT_FORMATS or path.suffix.lower() in (".pbm", ".pfm"):
        raise UsageError(
            f"{path}: cannot write {path.suffix or 'files without a suffix'!r} images "
            f"(results are written as {', '.join(FORMAT_SUFFIXES)})"
        )
    return fmt


def encode_image(
    pixels: NDArray[np.uint8] | NDArray[np.uint16],
    fmt: str,
    out: BinaryIO,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """(H, W, C) uint8 or uint16, C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA -> one file in format `fmt`, into `out`.

    uint16 stays 16-bit in PNG (and TIFF, PPM for gray); other formats get 8 bits (rounded). A format without alpha
    (JPEG) refuses an alpha channel rather than silently dropping it.
    """
    channels = pixels.shape[-1]
    holds_alpha, holds_16_bits, _ = OUTPUT_FORMATS[fmt]
    if not holds_alpha and channels in (2, 4):
        raise ValueError(f"{fmt} cannot hold the alpha channel; write PNG, TIFF or WEBP instead")
    options: dict[str, Any] = {"icc_profile": icc_profile} if icc_profile else {}
    if exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        options["exif"] = exif
    if fmt == "JPEG":
        options |= {"quality": 95, "subsampling": 0}  # 4:4:4: keep the chroma detail the upscale made
    if fmt == "WEBP":
        options["lossless"] = True  # as PNG (PIL's default is lossy at quality 80: 38 dB off the result)
    if pixels.dtype == np.uint16 and fmt == "PNG" and channels > 1:
        out.write(png16.write_png16(np.asarray(pixels, dtype=np.uint16), icc_profile, exif))  # PIL: no 16-bit colour
        return
    to_pil_image(pixels, sixteen_bit=holds_16_bits).save(out, fmt, **options)


def to_pil_image(pixels: NDArray[np.uint8] | NDArray[np.uint16], sixteen_bit: bool = True) -> Image.Image:
    """(H, W, C) uint8 -> L, LA, RGB or RGBA; uint16 gray -> I;16 if `sixteen_bit`; other uint16 -> 8 bits, rounded
    (PIL has no 16-bit colour modes)."""
    if pixels.dtype == np.uint16 and not (sixteen_bit and pixels.shape[-1] == 1):
        pixels = np.rint(pixels / 257.0).astype(np.uint8)  # 65535 -> 255 exactly
    return Image.fromarray(np.ascontiguousarray(pixels if pixels.shape[-1] > 1 else pixels[..., 0]))  # L, LA, ...


def save_image(
    path: Path,
    pixels: NDArray[np.uint8] | NDArray[np.uint16],
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Encode in the format the suffix names, then write atomically. ImageError naming the file on failure."""
    fmt = output_format(path)
    try:
        atomic_write(path, lambda f: encode_image(pixels, fmt, f, icc_profile=icc_profile, exif=exif))
    except OSError as error:  # the file system (PIL's encoders raise ValueError)
        raise ImageError(path, f"cannot write ({error.strerror or error})") from error
    except ValueError as error:
        raise ImageError(path, f"cannot encode as {fmt} ({error})") from error
    except Exception as error:  # noqa: BLE001  (an encoder's own failure on metadata copied from the input)
        raise ImageError(path, f"cannot write ({type(error).__name__}: {error})") from error
