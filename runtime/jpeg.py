"""JPEG files checked before they are decoded: `inspect` walks the marker structure, `decodable` gives the bytes to
hand to Pillow.

Why: libjpeg, under Pillow, treats a scan that ends early as a warning and fills the rest of the image with grey, so a
file cut mid-scan with an end marker appended decodes "successfully"; and it allocates and decodes the whole size the
header claims (a 669-byte file claiming 9000x9000 costs 81 MP of work). Here:

- The size claimed is refused when the file is too small to hold it: a Huffman-coded JPEG spends at least one bit on
  every 8x8 block of its full-resolution component, so no real file holds more than 512 pixels per byte; the decode's
  cost is bounded by the file's own size. (Arithmetic coding, rare, has no such bound: the pixel limit applies.)
- The structure is walked (segments by their lengths, the entropy-coded data up to its next marker, which is a C-speed
  regular-expression search): no end-of-image marker, a scan without a frame, or a progressive file whose scans stop
  before every coefficient is complete is refused (legal but rare, and the same as a file cut between scans).
- A sequential file's scan is checked by the decoder itself: the bytes handed to Pillow end with 16 bytes of
  invalid Huffman codes right after the entropy-coded data, instead of the end marker (or a comment or restart marker
  added after a cut). A complete scan never needs them (the decoder may read ahead into
  them, never past them); a scan cut short reads them (libjpeg turns every two into at most one empty block), runs out
  of data, and Pillow reports the file as truncated. A cut within the last four or so blocks can still pass, and so
  can a cut inside the last scan of a file of several scans (progressive: a refinement, precision lost in the bottom
  part, not grey; sequential with one scan per component: rare): only a full entropy decoder could tell.
- A scan with restart markers must hold every marker, in turn, and between two markers enough data for the interval's
  MCUs: libjpeg fills an interval whose data ends early with grey (a warning Pillow does not pass on), so emptied
  intervals with their markers kept would decode silently. Every Huffman-coded block spends at least its shortest DC
  code and its EOB (or, without one, four AC codes and a bit) in a sequential scan, its shortest DC code in a
  progressive DC scan, one bit in a DC refinement; an interval of a progressive AC scan spends at least one bit. Those
  bounds, from the file's own Huffman tables, are exact minimums, so no valid file falls under them; an interval
  damaged but still above its minimum decodes wrong without a word (only a full entropy decoder could tell), and
  lossless, hierarchical or arithmetic-coded scans have no such bound.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

MAX_PIXELS_PER_BYTE = 512  # at least 1 bit per 64 pixels of the full-resolution component (see above)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_HUFFMAN_SEQUENTIAL = {0xC0, 0xC1}
_HUFFMAN_DCT = {0xC0, 0xC1, 0xC2}  # whose blocks have the minimum costs above
_ARITHMETIC = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# The end of entropy-coded data: a marker, that is 0xFF then neither stuffing (0x00), fill (0xFF) nor, when the file
# sets a restart interval, a restart marker. (One 0xFF only: "0xFF+" backtracks quadratically over a run of 0xFF.)
_MARKER = re.compile(rb"\xff[^\x00\xff]")
_FILL = re.compile(rb"\xff+")
_RESTART = re.compile(rb"\xff[\xd0-\xd7]")
_MARKER_NOT_RESTART = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# 128 one bits (stuffed 0xFF bytes): no Huffman code is all ones (T.81 C.2), each 17 bits read is one error. libjpeg-
# turbo reads at most 64 bits ahead of the data it needs (its bit buffer); twice that, in case another build differs.
_INVALID_CODES = b"\xff\x00" * 16


@dataclass(frozen=True)
class JpegLayout:
    width: int
    height: int
    coding: int  # the SOF marker's second byte: 0xC0 baseline, 0xC2 progressive, ...
    scans: int
    scan_end: int  # offset of the first marker after the last scan's entropy-coded data
    end: int  # offset of the first image's end-of-image marker


def inspect(data: bytes) -> JpegLayout:
    """The frame and the end of the first image in `data`, after checking the structure; ValueError (one line) for a
    file that is cut short or malformed."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file")
    frame: _Frame | None = None
    unrefined: dict[int, list[int | None]] = {}  # progressive: component -> per coefficient, the last Al (None: none)
    scans = scan_end = restart_interval = 0
    tables: dict[tuple[int, int], dict[int, int]] = {}  # (class: 0 DC, 1 AC; id) -> symbol -> code length in bits
    pos = 2
    while True:
        pos = data.find(b"\xff", pos)  # stray bytes between segments are skipped, as libjpeg does (with a warning)
        if pos < 0:
            raise ValueError("JPEG data cut short (no end-of-image marker)")
        pos = _FILL.match(data, pos).end() - 1  # type: ignore[union-attr]  # fill bytes (0xFF) before a marker
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
                unrefined = {c: [None] * 64 for c in frame.sampling}
        elif marker == 0xDA:
            if frame is None:
                raise ValueError("JPEG scan before its frame header")
            scans += 1
            if len(body) < 6 or len(body) != 4 + 2 * body[0]:
                raise ValueError("JPEG scan header malformed")
            if frame.coding in _PROGRESSIVE:
                _record_scan(body, unrefined)
            found = (_MARKER_NOT_RESTART if restart_interval else _MARKER).search(data, pos)
            if found is None:
                raise ValueError("JPEG data cut short (no end-of-image marker)")
            if restart_interval:
                sizes = _restart_intervals(frame, body, (data, pos, found.start()), interval=restart_interval)
                _check_interval_data(frame, body, sizes, tables=tables, scan=scans)
            pos = scan_end = found.start()
        elif marker == 0xDD and len(body) == 2:  # DRI: restart markers may appear in the scans that follow
            (restart_interval,) = struct.unpack(">H", body)
        elif marker == 0xC4:  # DHT: the Huffman tables of the scans that follow
            tables |= _huffman_tables(body)
    if frame is None:
        raise ValueError("JPEG has no frame header")
    if not scans:
        raise ValueError("JPEG has no scan")
    if any(al != 0 for coefficients in unrefined.values() for al in coefficients):
        raise ValueError("progressive JPEG cut short (its scans stop before the image is complete)")
    return JpegLayout(
        width=frame.width, height=frame.height, coding=frame.coding, scans=scans, scan_end=scan_end, end=pos
    )


def check_size(layout: JpegLayout, size: int) -> None:
    """ValueError when a file of `size` bytes claims more pixels than a Huffman-coded JPEG can hold (arithmetic coding
    can spend less than a bit on a block: those are bounded by the pixel limit only)."""
    if layout.coding not in _ARITHMETIC and layout.width * layout.height > MAX_PIXELS_PER_BYTE * size:
        raise ValueError(
            f"claims {layout.width}x{layout.height} pixels in {size} bytes, more than a JPEG can hold "
            f"({MAX_PIXELS_PER_BYTE} pixels a byte): cut short or forged"
        )


def decodable(data: bytes, layout: JpegLayout) -> bytes:
    """The bytes of the first image to decode: for a Huffman sequential file of one scan, its entropy-coded data
    followed by invalid codes instead of what came after it (an end marker, or a marker added to hide a cut), so that
    a scan cut short makes the decoder run out of data (see the module's docstring). Files of several scans are read
    whole by libjpeg before any output: they keep their end marker."""
    if layout.coding in _HUFFMAN_SEQUENTIAL and layout.scans == 1:
        return data[: layout.scan_end] + _INVALID_CODES
    return data[: layout.end + 2]


@dataclass(frozen=True)
class _Frame:
    coding: int
    width: int
    height: int
    sampling: dict[int, tuple[int, int]]  # component id -> (horizontal, vertical) sampling factor


def _frame(marker: int, body: bytes) -> _Frame:
    if len(body) < 6:
        raise ValueError("JPEG frame header cut short")
    _, height, width, count = struct.unpack_from(">BHHB", body)
    if len(body) != 6 + 3 * count or count == 0:
        raise ValueError("JPEG frame header malformed")
    if width == 0 or height == 0:
        raise ValueError(f"JPEG frame of {width}x{height} pixels (a height set later by a DNL marker is not supported)")
    sampling = {body[6 + 3 * i]: (body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15) for i in range(count)}
    if not all(1 <= h <= 4 and 1 <= v <= 4 for h, v in sampling.values()):
        raise ValueError("JPEG frame header with sampling factors outside 1..4")
    return _Frame(marker, width, height, sampling)


@dataclass(frozen=True)
class _Interval:
    mcus: int
    size: int  # bytes of entropy-coded data between its markers, fill bytes (0xFF) before a marker left out


def _restart_intervals(
    frame: _Frame, scan: bytes, entropy: tuple[bytes, int, int], *, interval: int
) -> list[_Interval]:
    """A scan with a restart interval holds one restart marker between every two intervals of its MCUs (T.81 A.2),
    numbered 0 to 7 in turn: fewer, or one out of turn, means it was cut short (a marker appended after a cut makes
    libjpeg fill the rest with grey, silently). Returns each interval's MCUs and bytes of entropy-coded data."""
    components = [scan[1 + 2 * i] for i in range(scan[0])]
    if any(c not in frame.sampling for c in components):
        raise ValueError("JPEG scan of a component the frame does not have")
    h_max = max(h for h, _ in frame.sampling.values())
    v_max = max(v for _, v in frame.sampling.values())
    if len(components) == 1:  # not interleaved: one block of that component is one MCU
        h, v = frame.sampling[components[0]]
        units = _ceil(_ceil(frame.width * h, h_max), 8) * _ceil(_ceil(frame.height * v, v_max), 8)
    else:
        units = _ceil(frame.width, 8 * h_max) * _ceil(frame.height, 8 * v_max)
    data, start, stop = entropy
    expected = _ceil(units, interval) - 1
    markers = list(_RESTART.finditer(data, start, stop))
    numbers = [match[0][1] - 0xD0 for match in markers]
    if len(numbers) != expected or numbers != [i % 8 for i in range(len(numbers))]:  # RST0..RST7, RST0, ...
        raise ValueError(
            f"JPEG scan cut short or malformed ({len(numbers)} restart markers where {expected} belong, "
            "numbered 0 to 7 in turn)"
        )
    bounds = [start, *(i for match in markers for i in match.span()), stop]
    # 0xFF before a marker is fill, not data: a data byte 0xFF is always followed by 0x00 (T.81 B.1.1.5)
    sizes = [len(data[begin:end].rstrip(b"\xff")) for begin, end in zip(bounds[::2], bounds[1::2], strict=True)]
    return [_Interval(min(interval, units - i * interval), size) for i, size in enumerate(sizes)]


def _check_interval_data(
    frame: _Frame,
    header: bytes,
    intervals: list[_Interval],
    *,
    tables: dict[tuple[int, int], dict[int, int]],
    scan: int,
) -> None:
    """ValueError for a restart interval of scan number `scan` (header `header`) with fewer bytes than its MCUs need
    at the least (see the module's docstring)."""
    if frame.coding not in _HUFFMAN_DCT:
        return
    count = header[0]
    start, approximation = header[1 + 2 * count], header[3 + 2 * count]
    bits = 0  # per MCU, at the least
    for i in range(count):
        component, selectors = header[1 + 2 * i], header[2 + 2 * i]
        h, v = frame.sampling[component]
        blocks = h * v if count > 1 else 1
        dc, ac = tables.get((0, selectors >> 4)), tables.get((1, selectors & 15))
        if frame.coding in _HUFFMAN_SEQUENTIAL:
            bits += blocks * (_shortest_dc(dc) + _shortest_ac_block(ac))
        elif start == 0:  # a progressive DC scan: a code per block, or one bit in a refinement
            bits += blocks * (_shortest_dc(dc) if approximation >> 4 == 0 else 1)
    for index, interval in enumerate(intervals):
        need = _ceil(max(1, interval.mcus * bits), 8)  # padded to whole bytes with one bits before each marker
        if interval.size < need:
            where = f"restart interval {index + 1} of {len(intervals)}" + (f" in scan {scan}" if scan > 1 else "")
            held = (
                "no data" if not interval.size else f"only {interval.size} of the {need} bytes its MCUs need at least"
            )
            raise ValueError(f"damaged JPEG: {where} holds {held}")


def _huffman_tables(body: bytes) -> dict[tuple[int, int], dict[int, int]]:
    """A DHT segment's tables: (class, id) -> symbol -> code length (T.81 B.2.4.2, C). A table cut short, which
    libjpeg refuses anyway, is left out (the bounds then assume one-bit codes)."""
    tables = {}
    pos = 0
    while pos + 17 <= len(body):
        counts = body[pos + 1 : pos + 17]
        symbols = body[pos + 17 : pos + 17 + sum(counts)]
        if len(symbols) != sum(counts):
            break
        lengths = [length for length, n in enumerate(counts, start=1) for _ in range(n)]
        tables[body[pos] >> 4, body[pos] & 15] = dict(zip(symbols, lengths, strict=True))
        pos += 17 + len(symbols)
    return tables


def _shortest_dc(table: dict[int, int] | None) -> int:
    """The fewest bits a DC difference can take: its code and as many extra bits as its category (T.81 F.1.2.1)."""
    return min((length + symbol for symbol, length in table.items()), default=1) if table else 1


def _shortest_ac_block(table: dict[int, int] | None) -> int:
    """The fewest bits a block's 63 AC coefficients can take: an end-of-block code (symbol 0), or without one at
    least four codes (each covers at most 16 coefficients) and the last coefficient's extra bit (T.81 F.1.2.2)."""
    if not table:
        return 1
    without_eob = 4 * min(table.values()) + 1
    return min(table.get(0, without_eob), without_eob)


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


def _ceil(a: int, b: int) -> int:
    return -(-a // b)
