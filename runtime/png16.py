"""A small numpy + zlib codec for 16-bit-per-channel PNG files: `is_png16`, `read_png16`, `write_png16`.

Why: PIL decodes 16-bit RGB and RGBA PNGs to 8 bits per channel, and a 16-bit PNG in must give a 16-bit PNG out.
The reader takes non-interlaced 16-bit gray, gray + alpha, RGB and RGBA (colour types 0, 4, 2, 6) to (H, W, C) uint16
with C = 1, 2, 3, 4, and returns the ICC profile of an iCCP chunk; it checks every chunk's CRC and refuses what it
cannot decode exactly with a one-line ValueError (the caller adds the file name).

Undoing the row filters: None and Up rows, and Sub rows (a running sum along the row), are whole-array numpy
operations. Average and Paeth need the reconstructed byte to the left, so a row cannot be done at once; instead the
pixels are processed along anti-diagonals (row + column constant): a pixel's left, upper and upper-left neighbours all
lie on the two previous anti-diagonals, so each anti-diagonal is one vectorised step, H + W of them per image (in bands
of rows, to bound memory). A 1000x750 RGB image with Paeth on every row decodes in about 0.1 s.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # PNG colour type -> channels
_COLOUR_TYPES = {c: t for t, c in _CHANNELS.items()}
_ICC_NAME = b"ICC Profile"
_IDAT_SIZE = 1 << 20  # the writer splits the compressed image into IDAT chunks of this size
_BAND_ROWS = 1024  # rows per band of the anti-diagonal unfiltering (its buffer holds (rows + W) * rows pixels)
MAX_ICC_BYTES = 16 << 20  # a decompressed ICC profile larger than this is refused (real ones are KBs to a few MBs)


class Unsupported(ValueError):
    """A valid PNG variant this reader does not decode (interlaced, tRNS colour key); callers may fall back."""


def is_png16(header: bytes) -> bool:
    """True when `header` (the first 33 or more bytes of a file) starts a PNG whose bit depth is 16."""
    return len(header) >= 26 and header[:8] == _SIGNATURE and header[12:16] == b"IHDR" and header[24] == 16


def read_png16(data: bytes) -> tuple[NDArray[np.uint16], bytes | None, bytes | None]:
    """Decode a 16-bit PNG to (H, W, C) uint16 (C = 1, 2, 3, 4: gray, gray + alpha, RGB, RGBA), its ICC profile and
    its EXIF (the eXIf chunk, wherever it is: PIL would decode the image a second time to find one after IDAT)."""
    if data[:8] != _SIGNATURE:
        raise ValueError("not a PNG file")
    view = memoryview(data)
    header: tuple[int, ...] | None = None
    idat: list[memoryview] = []
    icc: bytes | None = None
    exif: bytes | None = None
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
        elif kind == b"tRNS" and header[3] in (0, 2):
            raise Unsupported("16-bit PNG with a tRNS transparent colour is not supported")
        elif not kind[0] & 0x20 and kind not in (b"IHDR", b"PLTE"):
            raise ValueError(f"unknown critical PNG chunk {name}")
    if not idat:
        raise ValueError("PNG has no IDAT chunk")
    width, height, _, colour_type = header[:4]
    channels = _CHANNELS[colour_type]
    stride = width * channels * 2
    expected = height * (1 + stride)
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat), expected + 1)
    except zlib.error as e:
        raise ValueError(f"corrupt PNG image data ({e})") from None
    if len(raw) != expected:
        got = f"more than {expected}" if len(raw) > expected else len(raw)
        raise ValueError(f"PNG image data is {got} bytes after decompression, expected {expected}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + stride)
    pixels = _unfilter(rows[:, 0], rows[:, 1:], channels * 2)
    return pixels.view(">u2").reshape(height, width, channels).astype(np.uint16), icc, exif


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
    if interlace != 0:
        raise Unsupported("interlaced 16-bit PNG is not supported")


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


def _unfilter(types: NDArray[np.uint8], data: NDArray[np.uint8], bpp: int) -> NDArray[np.uint8]:
    """Undo the PNG row filters: `types` (H,) filter type per row, `data` (H, W * bpp) filtered bytes -> the bytes."""
    if types.size and types.max() > 4:
        raise ValueError(f"bad PNG filter type {types.max()}")
    out = np.empty_like(data)
    prev = np.zeros(data.shape[1], np.uint8)  # the row above the first row is zeros
    for r0 in range(0, len(types), _BAND_ROWS):
        r1 = min(len(types), r0 + _BAND_ROWS)
        if types[r0:r1].max() <= 2:
            _unfilter_rows(types[r0:r1], data[r0:r1], prev, bpp=bpp, out=out[r0:r1])
        else:
            out[r0:r1] = _unfilter_diagonals(types[r0:r1], data[r0:r1], prev, bpp=bpp)
        prev = out[r1 - 1]
    return out


def _unfilter_rows(
    types: NDArray[np.uint8], data: NDArray[np.uint8], prev: NDArray[np.uint8], *, bpp: int, out: NDArray[np.uint8]
) -> None:
    """None, Sub and Up rows, one row at a time: uint8 arithmetic wraps modulo 256 as the PNG filters do."""
    for i, kind in enumerate(types.tolist()):
        if kind == 1:
            np.cumsum(data[i].reshape(-1, bpp), axis=0, dtype=np.uint8, out=out[i].reshape(-1, bpp))
        elif kind == 2:
            np.add(data[i], prev, out=out[i])
        else:
            out[i] = data[i]
        prev = out[i]


def _unfilter_diagonals(
    types: NDArray[np.uint8], data: NDArray[np.uint8], prev: NDArray[np.uint8], *, bpp: int
) -> NDArray[np.uint8]:
    """Any filters, one anti-diagonal of pixels at a time (each step vectorised over its rows and byte lanes)."""
    rows, width = len(types), data.shape[1] // bpp
    # Pixel (i, j), counted from 1 (row 0: `prev`, column 0: zeros), is stored at z[i + j, i]: the pixels of one
    # anti-diagonal are contiguous, their left and upper neighbours lie on the one before, the upper-left on the one
    # before that. int16 holds a byte plus a prediction before the modulo.
    z = np.zeros((rows + width + 1, rows + 1, bpp), np.int16)
    size = z.itemsize
    grid = as_strided(z, (rows + 1, width + 1, bpp), ((rows + 2) * bpp * size, (rows + 1) * bpp * size, size))
    grid[0, 1:] = prev.reshape(width, bpp)
    grid[1:, 1:] = data.reshape(rows, width, bpp)
    has_type = [np.concatenate(([False], types == kind))[:, None] for kind in range(5)]  # indexed by row i
    count = [np.cumsum(has[:, 0]).tolist() for has in has_type]  # rows of each type among rows 0..i
    for d in range(2, rows + width + 1):
        lo, hi = max(1, d - width), min(rows, d - 1) + 1  # rows i on this anti-diagonal with 1 <= j <= width
        x, a = z[d, lo:hi], z[d - 1, lo:hi]
        b, c = z[d - 1, lo - 1 : hi - 1], z[d - 2, lo - 1 : hi - 1]
        for kind in range(1, 5):
            n = count[kind][hi - 1] - count[kind][lo - 1]
            if n == hi - lo:  # the whole anti-diagonal uses one filter
                x += _predict(kind, a=a, b=b, c=c)
                break
            if n:
                x += np.where(has_type[kind][lo:hi], _predict(kind, a=a, b=b, c=c), 0)
        x &= 255
    return grid[1:, 1:].astype(np.uint8).reshape(rows, width * bpp)


def _predict(kind: int, *, a: NDArray[np.int16], b: NDArray[np.int16], c: NDArray[np.int16]) -> NDArray[np.int16]:
    """The PNG predictor of filter `kind` (1 Sub, 2 Up, 3 Average, 4 Paeth) from the left, upper, upper-left bytes."""
    if kind == 1:
        return a
    if kind == 2:
        return b
    if kind == 3:
        return (a + b) >> 1
    pa, pb = b - c, a - c  # p = a + b - c; |p - a|, |p - b|, |p - c| = |pa|, |pb|, |pa + pb|
    pc = np.abs(pa + pb)
    pa, pb = np.abs(pa), np.abs(pb)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
