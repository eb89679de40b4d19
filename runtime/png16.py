"""16-bit-per-channel PNG files: `is_png16`, `read_png16`, `write_png16`.

Why: PIL decodes 16-bit RGB and RGBA PNGs to 8 bits per channel, and a 16-bit PNG in must give a 16-bit PNG out.
The reader takes 16-bit gray, gray + alpha, RGB and RGBA (colour types 0, 4, 2, 6), interlaced or not, to (H, W, C)
uint16 with C = 1, 2, 3, 4 (plus an alpha channel for a tRNS colour key), and returns the ICC profile of an iCCP
chunk and the eXIf block. It walks the chunks itself (every CRC checked, metadata decompressed with a bound, chunks in
the wrong place ignored as the spec says) and refuses what it cannot decode exactly with a one-line ValueError (the
caller adds the file name).

The pixels are inflated and unfiltered by Pillow's own C decoder, the only decoder in the base install, whose cost is
linear in the data (a 1x300,000 strip: 0.04 s; the numpy decoder this replaced took 8 s). Pillow stores at most 8 bits
per channel, but its unpackers pick either byte of each 16-bit sample: one decode keeps the high bytes ("RGB;16B"),
a second the low bytes ("RGB;16L" reads the big-endian data as little-endian), and the two make the exact value.
Gray + alpha (4 bytes a pixel) decodes once as raw 8-bit RGBA. Measured against OpenCV and imagecodecs (bench/results/
png16_decoders.md): about 2x their time, without a 26-61 MB dependency.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from numpy.typing import NDArray
from PIL import Image

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # PNG colour type -> channels
_COLOUR_TYPES = {c: t for t, c in _CHANNELS.items()}
_ICC_NAME = b"ICC Profile"
_IDAT_SIZE = 1 << 20  # the writer splits the compressed image into IDAT chunks of this size
# channels -> the Pillow raw modes whose decodes give the high and the low byte of every sample
_RAW_MODES = {1: ("I;16B",), 2: ("RGBA",), 3: ("RGB;16B", "RGB;16L"), 4: ("RGBA;16B", "RGBA;16L")}
MAX_ICC_BYTES = 16 << 20  # a decompressed ICC profile larger than this is refused (real ones are KBs to a few MBs)


def is_png16(header: bytes) -> bool:
    """True when `header` (the first 33 or more bytes of a file) starts a PNG whose bit depth is 16."""
    return len(header) >= 26 and header[:8] == _SIGNATURE and header[12:16] == b"IHDR" and header[24] == 16


def read_png16(data: bytes) -> tuple[NDArray[np.uint16], bytes | None, bytes | None]:
    """Decode a 16-bit PNG to (H, W, C) uint16 (C = 1, 2, 3, 4: gray, gray + alpha, RGB, RGBA; one more, alpha, for
    a tRNS colour key), its ICC profile and its EXIF (the eXIf chunk, wherever it is: PIL would decode the image a
    second time to find one after IDAT)."""
    if data[:8] != _SIGNATURE:
        raise ValueError("not a PNG file")
    view = memoryview(data)
    header: tuple[int, ...] | None = None
    idat: list[memoryview] = []
    icc: bytes | None = None
    exif: bytes | None = None
    key: bytes | None = None
    pos = 8
    while True:
        if pos + 12 > len(data):
            raise ValueError("truncated PNG: no IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = kind.decode("latin-1")
        end = pos + 8 + length
        if end + 4 > len(data):
            raise ValueError(f"truncated PNG: {name} chunk cut short")
        if zlib.crc32(view[pos + 4 : end]) != struct.unpack_from(">I", data, end)[0]:
            raise ValueError(f"bad CRC in PNG {name} chunk")
        body = view[pos + 8 : end]
        pos = end + 4
        if header is None:
            if kind != b"IHDR" or length != 13:
                raise ValueError("PNG does not start with an IHDR chunk")
            header = struct.unpack(">IIBBBBB", body)
            _check_header(header)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        elif kind == b"iCCP" and not idat and icc is None:  # the spec: one, before the image data; others ignored
            icc = _read_icc(bytes(body))
        elif kind == b"eXIf":
            exif = bytes(body)
        elif kind == b"tRNS" and header[3] in (0, 2) and not idat:  # a colour key (the spec: before IDAT)
            key = bytes(body)
            if len(key) != 2 * _CHANNELS[header[3]]:
                raise ValueError(f"PNG tRNS chunk of {len(key)} bytes for {_CHANNELS[header[3]]} channels")
        elif not kind[0] & 0x20 and kind not in (b"IHDR", b"PLTE"):
            raise ValueError(f"unknown critical PNG chunk {name}")
    if not idat:
        raise ValueError("PNG has no IDAT chunk")
    width, height, _, colour_type = header[:4]
    pixels = _decode_pixels(data, channels=_CHANNELS[colour_type], shape=(height, width))
    if key is not None:  # a tRNS colour key: pixels of exactly that value are transparent
        opaque = np.any(pixels != np.frombuffer(key, ">u2").astype(np.uint16), axis=2, keepdims=True)
        pixels = np.concatenate([pixels, opaque.astype(np.uint16) * np.uint16(65535)], axis=2)
    return pixels, icc, exif


def _decode_pixels(data: bytes, *, channels: int, shape: tuple[int, int]) -> NDArray[np.uint16]:
    """The image data through Pillow's decoder, once per byte of the 16-bit samples (see the module's docstring)."""
    planes: list[NDArray[np.uint8]] = []
    for raw_mode in _RAW_MODES[channels]:
        try:
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                if image.size != shape[::-1] or len(image.tile) != 1:
                    raise ValueError(f"Pillow reads it as {image.size}, {len(image.tile)} tiles")
                image.tile = [image.tile[0]._replace(args=raw_mode)]
                image.load()
                planes.append(np.asarray(image))
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"corrupt PNG image data ({error})") from None
    if channels == 1:
        return planes[0].astype(np.uint16)[..., None]  # I;16 is 16 bits already
    if channels == 2:
        return np.ascontiguousarray(planes[0]).view(">u2").astype(np.uint16)  # RGBA bytes: G hi, G lo, A hi, A lo
    return np.left_shift(planes[0], 8, dtype=np.uint16) | planes[1]


def write_png16(pixels: NDArray[np.uint16], icc_profile: bytes | None = None, exif: bytes | None = None) -> bytes:
    """Encode (H, W, C) uint16 with C = 1..4 (gray, gray + alpha, RGB, RGBA) as a 16-bit PNG, with an optional ICC
    profile and EXIF block (PIL's form, with or without its "Exif" header). Every row uses the Up filter; zlib
    level 6."""
    if pixels.dtype != np.uint16 or pixels.ndim != 3 or not 1 <= pixels.shape[2] <= 4 or 0 in pixels.shape:
        raise ValueError(f"expected a non-empty (H, W, C) uint16 array, C = 1..4; got {pixels.dtype} {pixels.shape}")
    height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(height, width * channels * 2)
    filtered = np.empty((height, 1 + rows.shape[1]), np.uint8)
    filtered[:, 0] = 2  # Up: each byte minus the byte above it (zero above the first row), modulo 256
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    ihdr = struct.pack(">IIBBBBB", width, height, 16, _COLOUR_TYPES[channels], 0, 0, 0)
    out = [_SIGNATURE, _chunk(b"IHDR", ihdr)]
    if icc_profile is not None:
        out.append(_chunk(b"iCCP", _ICC_NAME + b"\0\0" + zlib.compress(icc_profile)))
    if exif:
        out.append(_chunk(b"eXIf", exif.removeprefix(b"Exif\0\0")))  # the chunk holds the bare TIFF structure
    compressed = zlib.compress(filtered.tobytes(), 6)
    out += [_chunk(b"IDAT", compressed[i : i + _IDAT_SIZE]) for i in range(0, len(compressed), _IDAT_SIZE)]
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _check_header(header: tuple[int, ...]) -> None:
    """IHDR's (width, height, depth, colour type, compression, filter method, interlace), checked."""
    width, height, depth, colour_type, compression, filter_method, interlace = header
    if width == 0 or height == 0:
        raise ValueError(f"PNG has an empty image ({width}x{height})")
    if colour_type == 3:
        raise ValueError("palette PNG (colour type 3) is not supported")
    if colour_type not in _CHANNELS:
        raise ValueError(f"bad PNG colour type {colour_type}")
    if depth != 16:
        raise ValueError(f"PNG bit depth is {depth}, not 16")
    if compression != 0 or filter_method != 0:
        raise ValueError(f"unknown PNG compression or filter method ({compression}, {filter_method})")
    if interlace not in (0, 1):
        raise ValueError(f"unknown PNG interlace method {interlace}")


def _read_icc(body: bytes) -> bytes:
    _, sep, rest = body.partition(b"\0")
    try:
        if not sep or rest[:1] != b"\0":
            raise zlib.error("no profile name or unknown compression method")
        profile = zlib.decompressobj().decompress(rest[1:], MAX_ICC_BYTES + 1)  # bounded: a small chunk can inflate
    except zlib.error as e:
        raise ValueError(f"corrupt PNG iCCP chunk ({e})") from None
    if len(profile) > MAX_ICC_BYTES:
        raise ValueError(f"PNG iCCP profile is over {MAX_ICC_BYTES >> 20} MiB when decompressed")
    return profile
