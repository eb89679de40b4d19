"""JPEG files checked before they are decoded: `inspect` walks the marker structure, `decodable` gives the bytes to
hand to Pillow.

Why: libjpeg, under Pillow, treats a scan that ends early as a warning and fills the rest of the image with grey, so a
file cut mid-scan with an end marker appended decodes "successfully"; and it allocates and decodes the whole size the
header claims (a 669-byte file claiming 9000x9000 costs 81 MP of work). Here:

- The size claimed is refused when the file is too small to hold it: a Huffman-coded JPEG spends at least one bit on
  every 8x8 block of its full-resolution component, so no real file holds more than 512 pixels per byte; the decode's
  cost is bounded by the file's own size.
- The structure is walked (segments by their lengths, the entropy-coded data up to its next marker, which is a C-speed
  regular-expression search): no end-of-image marker, a scan without a frame, or a progressive file whose scans stop
  before every coefficient is complete is refused.
- A sequential file's last scan is checked by the decoder itself: the bytes handed to Pillow end with 16 bytes of
  invalid Huffman codes instead of the end marker. A complete scan never needs them (the decoder may read ahead into
  them, never past them); a scan cut short reads them (libjpeg turns every two into at most one empty block), runs out
  of data, and Pillow reports the file as truncated. A cut within the last four or so blocks can still pass, and a
  progressive file cut inside its last scan (a refinement: precision lost in the bottom part, not grey) is not
  detected: only a full entropy decoder could tell.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

MAX_PIXELS_PER_BYTE = 512  # at least 1 bit per 64 pixels of the full-resolution component (see above)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_HUFFMAN_SEQUENTIAL = {0xC0, 0xC1}
_NEXT_MARKER = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")  # a marker in entropy-coded data (not stuffing or RSTn)
# 128 one bits (stuffed 0xFF bytes): no Huffman code is all ones (T.81 C.2), each 17 bits read is one error. libjpeg-
# turbo reads at most 64 bits ahead of the data it needs (its bit buffer); twice that, in case another build differs.
_INVALID_CODES = b"\xff\x00" * 16


@dataclass(frozen=True)
class JpegLayout:
    width: int
    height: int
    coding: int  # the SOF marker's second byte: 0xC0 baseline, 0xC2 progressive, ...
    end: int  # offset of the first image's end-of-image marker


def inspect(data: bytes) -> JpegLayout:
    """The frame and the end of the first image in `data`, after checking the structure; ValueError (one line) for a
    file that is cut short or malformed."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file")
    frame: tuple[int, int, int, list[int]] | None = None  # (coding, width, height, component ids)
    unrefined: dict[int, list[int | None]] = {}  # progressive: component -> per coefficient, the last Al (None: none)
    scans = 0
    pos = 2
    while True:
        if data[pos : pos + 1] != b"\xff":
            raise ValueError("JPEG data cut short or malformed (no marker where one must be)")
        while data[pos + 1 : pos + 2] == b"\xff":  # fill bytes before a marker
            pos += 1
        if pos + 2 > len(data):
            raise ValueError("JPEG data cut short (no end-of-image marker)")
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            pos += 2
            continue
        if pos + 4 > len(data):
            raise ValueError("JPEG data cut short inside a segment header")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        body = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            raise ValueError(f"JPEG segment {marker:#04x} cut short or malformed")
        pos += 2 + length
        if marker in _SOF:
            if frame is not None:
                raise ValueError("JPEG has more than one frame header")
            frame = _frame(marker, body)
            if marker in _PROGRESSIVE:
                unrefined = {c: [None] * 64 for c in frame[3]}
        elif marker == 0xDA:
            if frame is None:
                raise ValueError("JPEG scan before its frame header")
            scans += 1
            if len(body) < 6 or len(body) != 4 + 2 * body[0]:
                raise ValueError("JPEG scan header malformed")
            if frame[0] in _PROGRESSIVE:
                _record_scan(body, unrefined)
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                raise ValueError("JPEG data cut short (no end-of-image marker)")
            pos = found.end() - 2
    if frame is None:
        raise ValueError("JPEG has no frame header")
    if not scans:
        raise ValueError("JPEG has no scan")
    if any(al != 0 for coefficients in unrefined.values() for al in coefficients):
        raise ValueError("progressive JPEG cut short (its scans stop before the image is complete)")
    coding, width, height, _ = frame
    return JpegLayout(width=width, height=height, coding=coding, end=pos)


def check_size(layout: JpegLayout, size: int) -> None:
    """ValueError when a file of `size` bytes claims more pixels than a JPEG can hold."""
    if layout.width * layout.height > MAX_PIXELS_PER_BYTE * size:
        raise ValueError(f"claims {layout.width}x{layout.height} pixels in {size} bytes, more than a JPEG can hold "
                         f"({MAX_PIXELS_PER_BYTE} pixels a byte): cut short or forged")  # fmt: skip


def decodable(data: bytes, layout: JpegLayout) -> bytes:
    """The bytes of the first image to decode: for a Huffman sequential file, its end marker replaced by invalid
    codes, so that a scan cut short makes the decoder run out of data (see the module's docstring)."""
    if layout.coding in _HUFFMAN_SEQUENTIAL:
        return data[: layout.end] + _INVALID_CODES
    return data[: layout.end + 2]


def _frame(marker: int, body: bytes) -> tuple[int, int, int, list[int]]:
    if len(body) < 6:
        raise ValueError("JPEG frame header cut short")
    _, height, width, count = struct.unpack_from(">BHHB", body)
    if len(body) != 6 + 3 * count or count == 0:
        raise ValueError("JPEG frame header malformed")
    if width == 0 or height == 0:
        raise ValueError(f"JPEG frame of {width}x{height} pixels (a height set later by a DNL marker is not supported)")
    return marker, width, height, [body[6 + 3 * i] for i in range(count)]


def _record_scan(body: bytes, unrefined: dict[int, list[int | None]]) -> None:
    """A progressive scan's header: which coefficients of which components it brings to which precision."""
    count = body[0]
    start, stop, approximation = body[1 + 2 * count], body[2 + 2 * count], body[3 + 2 * count]
    high, low = approximation >> 4, approximation & 15
    if not start <= stop <= 63:
        raise ValueError(f"JPEG scan of coefficients {start}..{stop}")
    for component in (body[1 + 2 * i] for i in range(count)):
        coefficients = unrefined.get(component)
        if coefficients is None:
            raise ValueError(f"JPEG scan of component {component}, which the frame does not have")
        for k in range(start, stop + 1):
            if (coefficients[k] is None) != (high == 0) or (high and coefficients[k] != high):
                raise ValueError("progressive JPEG scans out of order")
            coefficients[k] = low
