"""Reading image files into float arrays, with one clear error per unreadable file.

Every pixel format PIL decodes is normalised to float32 (H, W, C) in [0, 1] with C = 1 (gray) or 3 (RGB), plus a last
alpha channel when the file has one. 8-bit and 16-bit gray keep their precision. Known gap: PIL decodes 16-bit RGB/RGBA
PNGs to 8 bits, so those arrive with 8-bit precision (bit_depth reports 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse larger inputs before decoding them (decompression bombs). PIL's own threshold: above it PIL warns, and above
# twice it PIL refuses, so a larger limit here would not help.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

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


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and the cause on one line."""

    def __init__(self, path: Path, cause: str) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = path
        self.cause = cause


@dataclass(frozen=True)
class LoadedImage:
    path: Path
    pixels: NDArray[np.float32]  # (H, W, C) in [0, 1]; C = 1 or 3 colour channels, plus alpha last if has_alpha
    bit_depth: int  # 8 or 16: the precision the file held
    has_alpha: bool

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


def _to_array(image: Image.Image, path: Path) -> tuple[NDArray[np.float32], int]:
    if image.mode not in _MODES:
        raise ImageError(path, f"unsupported pixel format {image.mode!r}")
    target, depth = _MODES[image.mode]
    if image.mode == "P" and "transparency" in image.info:
        target = "RGBA"
    if image.mode != target:
        image = image.convert(target)
    array = np.asarray(image)
    if image.mode == "I" and (array.min() < 0 or array.max() > 65535):
        raise ImageError(path, f"unsupported 32-bit integer pixels (range {array.min()}..{array.max()})")
    pixels = array.astype(np.float32) / np.float32(255 if depth == 8 else 65535)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels, depth


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode one image file (EXIF orientation applied). Raises ImageError naming the file and the cause."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise ImageError(path, f"animated or multi-page image ({frames} frames) is not supported")
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(path, f"{width}x{height} is over the limit of {max_pixels} pixels")
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            pixels, depth = _to_array(image, path)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(path, f"image too large to decode safely ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageError(path, "not an image file, or a format PIL cannot read") from error
    except FileNotFoundError as error:
        raise ImageError(path, "file not found") from error
    except PermissionError as error:
        raise ImageError(path, "permission denied") from error
    except IsADirectoryError as error:
        raise ImageError(path, "is a directory, not an image file") from error
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports truncated or corrupt data as OSError (and some plugins as SyntaxError/ValueError).
        raise ImageError(path, f"corrupt or truncated image ({error})") from error
    has_alpha = pixels.shape[-1] in (2, 4)
    return LoadedImage(path=path, pixels=pixels, bit_depth=depth, has_alpha=has_alpha)
