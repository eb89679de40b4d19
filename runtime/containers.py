"""What Pillow does not check in an image file's container, read from the file's own bytes.

- `check_png_rows`: a PNG whose zlib stream ends cleanly before its header's last row. Pillow fills the rows that are
  missing with black and says nothing. This inflates the image data (counting, never keeping more than 1 MiB of it,
  reading the file a megabyte at a time) and compares it with the size the header declares, so such a file is
  refused as truncated, as a cut JPEG is.
- `webp_is_lossy`: how a WebP was coded. An extended file ("VP8X") says it only in a later chunk: "VP8 " lossy,
  "VP8L" lossless (an animation: in its first frame's). `lossy_coded`: a JPEG or such a WebP.
- `tiff_layout`: the samples of a TIFF's first image, in words, for the error of a layout Pillow cannot open.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

from PIL import TiffImagePlugin

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples a pixel
# Adam7's seven passes: first column, first row, column step, row step
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PIECE = 1 << 20
_PHOTOMETRIC = {0: "gray", 1: "gray", 2: "RGB", 3: "palette", 4: "mask", 5: "CMYK", 6: "YCbCr", 8: "CIELab"}
_SAMPLE_FORMAT = {1: "unsigned", 2: "signed", 3: "floating-point"}


def png_data_size(width: int, height: int, *, bits: int, interlaced: bool) -> int:
    """The bytes a PNG's inflated image data holds: each row of each (Adam7) pass, with its filter-type byte."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            total += rows * (1 + -(-(columns * bits) // 8))
    return total


def check_png_rows(f: BinaryIO) -> None:
    """ValueError when a PNG (an open file, any position) has image data that inflates to fewer bytes than its IHDR
    declares. It seeks from chunk to chunk and reads the image data a piece at a time, so memory stays small whatever
    the file holds. A file this cannot walk (bad chunks, a broken zlib stream) is left to the decoder, which reports
    it."""
    f.seek(0)
    head = f.read(33)
    if head[:8] != _SIGNATURE or head[12:16] != b"IHDR" or len(head) < 33:
        return
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", head, 16)
    if colour not in _SAMPLES or interlace not in (0, 1):
        return
    expected = png_data_size(width, height, bits=depth * _SAMPLES[colour], interlaced=interlace == 1)
    inflate, found, pos = zlib.decompressobj(), 0, 8
    while found < expected and not inflate.eof:
        f.seek(pos)
        header = f.read(8)
        if len(header) < 8 or header[4:] == b"IEND":
            break
        length = struct.unpack_from(">I", header)[0]
        if header[4:] == b"IDAT":
            left = length
            while left and found < expected and not inflate.eof:
                piece = f.read(min(left, _PIECE))
                if not piece:
                    break
                left -= len(piece)
                try:
                    found += _inflated(inflate, piece, expected - found)
                except zlib.error:
                    return
        pos += 12 + length
    if found < expected and not inflate.eof:
        found += len(inflate.flush())  # what zlib held back when a piece filled its output exactly
    if found < expected:
        raise ValueError(f"PNG image data ends early: {found} of the {expected} bytes its header declares")


def _inflated(inflate: zlib._Decompress, piece: bytes, wanted: int) -> int:
    """How many bytes `piece` inflates to, counted a megabyte at a time (never kept), stopping past `wanted`."""
    found = 0
    data: bytes = piece
    while data and found < wanted and not inflate.eof:
        found += len(inflate.decompress(data, _PIECE))
        data = inflate.unconsumed_tail
    return found


def lossy_coded(fmt: str | None, f: BinaryIO) -> bool:
    """Whether a file Pillow opened as `fmt` (open as `f`, any position) is coded lossy: JPEG, or a lossy WebP (model
    "auto" reads it)."""
    return fmt in ("JPEG", "MPO") or (fmt == "WEBP" and webp_is_lossy(f))


def webp_is_lossy(f: BinaryIO) -> bool:
    """Whether a WebP file (open, any position) is coded lossy: its first "VP8 " or "VP8L" chunk among the first 16
    after the RIFF header (an extended file's VP8X, ICCP, ALPH chunks come before it; an animation's are inside
    its first frame's ANMF chunk, after that chunk's 16-byte header)."""
    pos = 12
    for _ in range(16):
        f.seek(pos)
        header = f.read(8)
        if len(header) < 8 or header[:4] in (b"VP8 ", b"VP8L"):
            return header[:4] == b"VP8 "
        if header[:4] == b"ANMF":
            pos += 8 + 16
            continue
        pos += 8 + (int.from_bytes(header[4:], "little") + 1) // 2 * 2  # chunks are padded to an even size
    return False


def tiff_layout(f: BinaryIO) -> str | None:
    """The layout of the first image of a TIFF file (open, any position) in words, "2 samples of 16 bits, unsigned,
    gray, planar" say; None for a file that is not a TIFF or whose first directory cannot be read."""
    f.seek(0)
    head = f.read(16)
    if head[:4] not in TiffImagePlugin.PREFIXES:
        return None
    try:
        tags = TiffImagePlugin.ImageFileDirectory_v2(head if head[2] == 43 else head[:8])
        tags._tag_data_limit = 1 << 20  # Pillow's own budget for out-of-line tag data (the file's size there)
        f.seek(tags.next)
        tags.load(f)
        if not all(tag in tags for tag in (256, 257, 262)):  # no width, height, photometric: not a readable image
            return None
        bits, kinds = tags.get(258, (1,)), tags.get(339, (1,))
        samples, photometric, planar = tags.get(277, 1), tags[262], tags.get(284, 1)
        kind = _SAMPLE_FORMAT.get(kinds[0] if isinstance(kinds, tuple) else kinds, "unknown")
        width = "/".join(map(str, sorted(set(bits)))) if isinstance(bits, tuple) else str(bits)
        colour = _PHOTOMETRIC.get(photometric, f"photometric {photometric}")
        plural = "s" if samples != 1 else ""
        return (
            f"{samples} sample{plural} of {width} bits, {kind}, {colour}, {'planar' if planar == 2 else 'contiguous'}"
        )
    except Exception:  # noqa: BLE001  (a damaged directory: Pillow raises struct.error, ValueError, OSError & co.)
        return None
