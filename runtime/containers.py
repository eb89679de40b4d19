"""What Pillow does not check in an image file's container, read from the file's own bytes.

- `check_png_rows`: a PNG whose zlib stream ends cleanly before its header's last row. Pillow fills the rows that are
  missing with black and says nothing. This inflates the image data (counting, never keeping more than 1 MiB of it)
  and compares it with the size the header declares, so such a file is refused as truncated, as a cut JPEG is.
- `webp_is_lossy`: how a WebP was coded. An extended file ("VP8X") says it only in a later chunk: "VP8 " lossy,
  "VP8L" lossless.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples a pixel
# Adam7's seven passes: first column, first row, column step, row step
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PIECE = 1 << 20


def png_data_size(width: int, height: int, *, bits: int, interlaced: bool) -> int:
    """The bytes a PNG's inflated image data holds: each row of each (Adam7) pass, with its filter-type byte."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            total += rows * (1 + -(-(columns * bits) // 8))
    return total


def check_png_rows(data: bytes) -> None:
    """ValueError when a PNG's image data inflates to fewer bytes than its IHDR declares. A file this cannot walk
    (bad chunks, a broken zlib stream) is left to the decoder, which reports it."""
    if data[:8] != _SIGNATURE or data[12:16] != b"IHDR" or len(data) < 33:
        return
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if colour not in _SAMPLES or interlace not in (0, 1):
        return
    expected = png_data_size(width, height, bits=depth * _SAMPLES[colour], interlaced=interlace == 1)
    inflate, found, pos = zlib.decompressobj(), 0, 8
    while pos + 8 <= len(data) and found < expected:
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            piece: bytes | memoryview = memoryview(data)[pos + 8 : pos + 8 + length]
            try:
                while piece and found < expected and not inflate.eof:
                    found += len(inflate.decompress(piece, _PIECE))
                    piece = inflate.unconsumed_tail
            except zlib.error:
                return
        pos += 12 + length
    if found < expected and not inflate.eof:
        found += len(inflate.flush())  # what zlib held back when a piece filled its output exactly
    if found < expected:
        raise ValueError(f"PNG image data ends early: {found} of the {expected} bytes its header declares")


def webp_is_lossy(f: BinaryIO) -> bool:
    """Whether a WebP file (open, any position) is coded lossy: its first "VP8 " or "VP8L" chunk among the first 16
    after the RIFF header (an extended file's VP8X, ICCP, ALPH chunks come before it)."""
    pos = 12
    for _ in range(16):
        f.seek(pos)
        header = f.read(8)
        if len(header) < 8 or header[:4] in (b"VP8 ", b"VP8L"):
            return header[:4] == b"VP8 "
        pos += 8 + (int.from_bytes(header[4:], "little") + 1) // 2 * 2  # chunks are padded to an even size
    return False
