"""The 16-bit PNG codec: round trips, every row filter against a reference encoder written here, Pillow's view of the
files, and one ValueError per unsupported or broken file."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from vdsr.runtime import png16
from vdsr.runtime.png16 import is_png16, read_png16, write_png16

COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
EDGES = np.array([0, 1, 2, 127, 128, 255, 256, 257, 32767, 32768, 65279, 65280, 65281, 65534, 65535], np.uint16)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def ihdr(width: int, height: int, depth: int = 16, colour_type: int = 2, interlace: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, interlace))


def predict(kind: int, a: int, b: int, c: int) -> int:
    """The PNG spec's predictors, byte by byte (filter types other than 1..4 predict 0, as None does)."""
    if kind == 1:
        return a
    if kind == 2:
        return b
    if kind == 3:
        return (a + b) // 2
    if kind == 4:
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        return a if pa <= pb and pa <= pc else b if pb <= pc else c
    return 0


def filter_rows(pixels: NDArray[np.uint16], filters: list[int]) -> bytes:
    """The filtered image data (filter byte + filtered bytes per row), with filter `filters[y]` on row y."""
    height, width, channels = pixels.shape
    bpp = 2 * channels
    rows = pixels.astype(">u2").tobytes()
    stride = width * bpp
    out = bytearray()
    prev = bytes(stride)
    for y, kind in enumerate(filters):
        line = rows[y * stride : (y + 1) * stride]
        out.append(kind)
        for i, byte in enumerate(line):
            a = line[i - bpp] if i >= bpp else 0
            c = prev[i - bpp] if i >= bpp else 0
            out.append((byte - predict(kind, a, prev[i], c)) & 255)
        prev = line
    return bytes(out)


def encode(pixels: NDArray[np.uint16], filters: list[int], idat_parts: int = 1, extra: bytes = b"") -> bytes:
    """A PNG of `pixels` with the given row filters, its zlib stream cut into `idat_parts` IDAT chunks (the first one
    empty when there are several), `extra` chunks before the image data."""
    height, width, channels = pixels.shape
    stream = zlib.compress(filter_rows(pixels, filters))
    step = -(-len(stream) // max(1, idat_parts - 1))
    parts = [stream[i : i + step] for i in range(0, len(stream), step)]
    idat = b"".join(chunk(b"IDAT", part) for part in ([b""] + parts if idat_parts > 1 else parts))
    head = png16._SIGNATURE + ihdr(width, height, colour_type=COLOUR_TYPES[channels])
    return head + extra + idat + chunk(b"IEND", b"")


def random_pixels(rng: np.random.Generator, height: int, width: int, channels: int) -> NDArray[np.uint16]:
    """Random pixels, half of them values next to 0, 255/256 and 65535, where the modulo-256 arithmetic wraps."""
    pixels = rng.integers(0, 65536, (height, width, channels), dtype=np.uint16)
    edge = rng.random(pixels.shape) < 0.5
    pixels[edge] = rng.choice(EDGES, int(edge.sum()))
    return pixels


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (5, 7), (31, 17)])
def test_round_trip(rng: np.random.Generator, channels: int, shape: tuple[int, int]) -> None:
    pixels = random_pixels(rng, *shape, channels)
    data = write_png16(pixels)
    assert is_png16(data[:33])
    decoded, icc, _ = read_png16(data)
    assert decoded.dtype == np.uint16 and decoded.shape == pixels.shape
    np.testing.assert_array_equal(decoded, pixels)
    assert icc is None


def test_round_trip_of_a_non_contiguous_array(rng: np.random.Generator) -> None:
    pixels = random_pixels(rng, 6, 9, 3)
    np.testing.assert_array_equal(read_png16(write_png16(pixels.transpose(1, 0, 2)))[0], pixels.transpose(1, 0, 2))
    np.testing.assert_array_equal(read_png16(write_png16(pixels[:, ::2, 1:]))[0], pixels[:, ::2, 1:])


MIXED = [4, 3, 1, 2, 0, 4, 4, 3, 3, 2, 1, 1, 0]  # Average and Paeth rows after each kind of row


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("filters", ["none", "sub", "up", "average", "paeth", "mixed"])
def test_every_row_filter(rng: np.random.Generator, channels: int, filters: str) -> None:
    height, width = 13, 11
    pixels = random_pixels(rng, height, width, channels)
    kinds = MIXED if filters == "mixed" else [["none", "sub", "up", "average", "paeth"].index(filters)] * height
    np.testing.assert_array_equal(read_png16(encode(pixels, kinds))[0], pixels)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (2, 2)])
def test_every_row_filter_on_tiny_images(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    for kind in range(5):
        pixels = random_pixels(rng, *shape, 3)
        np.testing.assert_array_equal(read_png16(encode(pixels, [kind] * shape[0]))[0], pixels)


ADAM7 = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]


def encode_interlaced(pixels: NDArray[np.uint16], kind: int) -> bytes:
    """An Adam7-interlaced PNG of `pixels`: the seven passes (y0, x0, dy, dx), each filtered on its own."""
    height, width, channels = pixels.shape
    passes = [pixels[y0::dy, x0::dx] for y0, x0, dy, dx in ADAM7]
    data = b"".join(filter_rows(p, [kind] * p.shape[0]) for p in passes if p.size)
    head = png16._SIGNATURE + ihdr(width, height, colour_type=COLOUR_TYPES[channels], interlace=1)
    return head + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (9, 17), (16, 8)])
def test_interlaced_files_stay_16_bit(rng: np.random.Generator, channels: int, shape: tuple[int, int]) -> None:
    """Adam7 PNGs used to be read by PIL at 8 bits: every filter, every pass shape, exact 16-bit values."""
    for kind in range(5):
        pixels = random_pixels(rng, *shape, channels)
        np.testing.assert_array_equal(read_png16(encode_interlaced(pixels, kind))[0], pixels)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_colour_key_becomes_an_alpha_channel(rng: np.random.Generator, channels: int) -> None:
    pixels = random_pixels(rng, 6, 7, channels)
    key = pixels[2, 3]
    decoded = read_png16(encode(pixels, [4] * 6, extra=chunk(b"tRNS", key.astype(">u2").tobytes())))[0]
    np.testing.assert_array_equal(decoded[..., :channels], pixels)
    np.testing.assert_array_equal(decoded[..., channels] == 0, np.all(pixels == key, axis=2))
    assert set(np.unique(decoded[..., channels]).tolist()) <= {0, 65535}


def count_calls(function: Any) -> int:
    """How many Python and C functions `function()` calls: a cost measure that does not depend on the machine."""
    import sys

    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(profile)
    try:
        function()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("shape", [(1, 20_000), (20_000, 1), (150, 150)])
def test_decoding_work_does_not_grow_with_the_image_side(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    """The old numpy decoder looped over the H + W anti-diagonals (a 1x300,000 strip took 8 s): the number of calls
    must not grow with the image, only the C decoder's work, which is linear in the bytes."""
    small = encode(random_pixels(rng, 3, 4, 3), [4] * 3)
    pixels = random_pixels(rng, *shape, 3)
    big = encode(pixels, [3, 4] * (shape[0] // 2) + [4] * (shape[0] % 2))
    np.testing.assert_array_equal(read_png16(big)[0], pixels)
    assert count_calls(lambda: read_png16(big)) <= count_calls(lambda: read_png16(small)) + 50


def test_several_idat_chunks(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = random_pixels(rng, 9, 7, 3)
    np.testing.assert_array_equal(read_png16(encode(pixels, [4] * 9, idat_parts=4))[0], pixels)
    monkeypatch.setattr(png16, "_IDAT_SIZE", 50)
    data = write_png16(pixels)
    assert data.count(b"IDAT") > 3
    np.testing.assert_array_equal(read_png16(data)[0], pixels)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels >> 8)


def test_ancillary_chunks_are_ignored(rng: np.random.Generator) -> None:
    pixels = random_pixels(rng, 4, 5, 2)
    extra = chunk(b"gAMA", struct.pack(">I", 45455)) + chunk(b"tEXt", b"Comment\0hello") + chunk(b"tRNS", b"\0\0")
    np.testing.assert_array_equal(read_png16(encode(pixels, [1] * 4, extra=extra))[0], pixels)


def test_icc_profile_round_trip(rng: np.random.Generator) -> None:
    profile = bytes(range(256)) * 5
    pixels = random_pixels(rng, 3, 4, 3)
    data = write_png16(pixels, profile)
    assert b"iCCP" + b"ICC Profile\0\0" in data
    decoded, icc, _ = read_png16(data)
    np.testing.assert_array_equal(decoded, pixels)
    assert icc == profile
    assert Image.open(io.BytesIO(data)).info["icc_profile"] == profile


def test_pillow_reads_our_16_bit_gray_exactly(rng: np.random.Generator) -> None:
    pixels = random_pixels(rng, 7, 6, 1)
    with Image.open(io.BytesIO(write_png16(pixels))) as im:
        assert im.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(im), pixels[:, :, 0])


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_pillow_reads_the_high_bytes_of_our_colour_and_alpha(rng: np.random.Generator, channels: int) -> None:
    """PIL decodes 16-bit RGB/RGBA (and gray + alpha, as RGBA) to 8 bits by dropping the low byte, not rounding."""
    pixels = random_pixels(rng, 7, 6, channels)
    with Image.open(io.BytesIO(write_png16(pixels))) as im:
        high = pixels >> 8
        assert im.mode == ("RGB" if channels == 3 else "RGBA")
        expected = high[:, :, [0, 0, 0, 1]] if channels == 2 else high
        np.testing.assert_array_equal(np.asarray(im), expected)


def test_we_read_pillows_16_bit_gray(rng: np.random.Generator) -> None:
    """Pillow chooses the filter per row (None, Sub, Paeth, ... on a smooth image): a real writer's mix."""
    gray = (np.cumsum(rng.integers(-300, 301, (40, 64)), axis=1) % 65536).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, "PNG")
    data = buffer.getvalue()
    assert is_png16(data)
    np.testing.assert_array_equal(read_png16(data)[0][:, :, 0], gray)


def test_is_png16() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2)).save(buffer, "PNG")
    assert not is_png16(buffer.getvalue())
    assert is_png16(write_png16(np.zeros((2, 3, 4), np.uint16))[:33])
    assert not is_png16(b"")
    assert not is_png16(b"GIF89a" + bytes(40))


def test_writer_refuses_other_arrays() -> None:
    bad_arrays: list[NDArray[Any]] = [np.zeros((2, 3, 3), np.uint8), np.zeros((2, 3), np.uint16), np.zeros((2, 3, 5))]
    for bad in bad_arrays:
        with pytest.raises(ValueError, match="uint16"):
            write_png16(bad)
    with pytest.raises(ValueError, match="non-empty"):
        write_png16(np.zeros((0, 3, 3), np.uint16))


def broken_files() -> list[tuple[str, bytes, str]]:
    """(case, file, expected cause) for files the reader must refuse."""
    pixels = np.arange(2 * 3 * 3, dtype=np.uint16).reshape(2, 3, 3) * 3000
    good = encode(pixels, [0, 0])
    iend = chunk(b"IEND", b"")
    start = good.index(b"IDAT") - 4
    head, idat = good[:start], good[start : -len(iend)]
    corrupt = bytearray(good)
    corrupt[start + 9] ^= 1
    short = zlib.compress(filter_rows(pixels, [0, 0])[:-1])
    gray = np.zeros((2, 3, 1), np.uint16)
    return [
        ("not a PNG", b"GIF89a" + bytes(60), "not a PNG file"),
        ("empty", b"", "not a PNG file"),
        ("bad CRC", bytes(corrupt), "bad CRC in PNG IDAT chunk"),
        ("cut short", good[:-14], "truncated PNG: IDAT chunk cut short"),
        ("no IEND", head + idat, "truncated PNG: no IEND chunk"),
        ("no IDAT", head + iend, "PNG has no IDAT chunk"),
        ("no IHDR", png16._SIGNATURE + idat + iend, "does not start with an IHDR chunk"),
        ("short data", head + chunk(b"IDAT", short) + iend, "corrupt PNG image data"),
        ("not zlib", head + chunk(b"IDAT", b"not zlib data") + iend, "corrupt PNG image data"),
        ("filter type 5", encode(pixels, [0, 5]), "corrupt PNG image data"),
        ("interlace 2", png16._SIGNATURE + ihdr(3, 2, interlace=2) + idat + iend, "unknown PNG interlace method 2"),
        ("8 bits", png16._SIGNATURE + ihdr(3, 2, depth=8) + idat + iend, "bit depth is 8, not 16"),
        ("palette", png16._SIGNATURE + ihdr(3, 2, depth=8, colour_type=3) + idat + iend, "colour type 3"),
        ("gray tRNS", encode(gray, [0, 0], extra=chunk(b"tRNS", b"\0\0\0")), "tRNS chunk of 3 bytes"),
        ("RGB tRNS", encode(pixels, [0, 0], extra=chunk(b"tRNS", bytes(2))), "tRNS chunk of 2 bytes"),
        ("unknown chunk", encode(pixels, [0, 0], extra=chunk(b"ABCD", b"")), "unknown critical PNG chunk ABCD"),
        ("bad ICC", encode(pixels, [0, 0], extra=chunk(b"iCCP", b"x\0\0garbage")), "corrupt PNG iCCP chunk"),
    ]


@pytest.mark.parametrize(("data", "cause"), [case[1:] for case in broken_files()], ids=[c[0] for c in broken_files()])
def test_broken_files_give_one_clear_error(data: bytes, cause: str) -> None:
    with pytest.raises(ValueError, match=cause) as error:
        read_png16(data)
    assert "\n" not in str(error.value)


def test_exif_block_is_written_and_pil_reads_it(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "vdsr camera"  # Make
    (tmp_path / "e.png").write_bytes(write_png16(np.zeros((2, 3, 3), np.uint16), exif=exif.tobytes()))
    with Image.open(tmp_path / "e.png") as image:
        assert image.getexif().get(0x010F) == "vdsr camera"


def test_icc_profiles_are_bounded_and_read_only_where_the_spec_puts_them() -> None:
    """A small iCCP chunk can inflate to gigabytes: decompression is bounded; one after IDAT is refused (by Pillow's
    decoder, which reads the chunks after the image data with its own 1 MB bound)."""
    import tracemalloc

    pixels = random_pixels(np.random.default_rng(7), 5, 4, 3)
    bomb = chunk(b"iCCP", b"bomb\0\0" + zlib.compress(bytes(256 << 20), 9))  # 256 MiB of zeros in ~250 KB
    plain = encode(pixels, [0] * 5)
    after_idat = plain[: -len(chunk(b"IEND", b""))] + bomb + chunk(b"IEND", b"")
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="corrupt PNG image data .Decompressed data too large"):
            read_png16(after_idat)
        with pytest.raises(ValueError, match="iCCP profile is over 16 MiB"):
            read_png16(encode(pixels, [0] * 5, extra=bomb))  # before IDAT: read, up to the bound
        assert tracemalloc.get_traced_memory()[1] < 64 << 20  # peak: the bound, not the 256 MiB
    finally:
        tracemalloc.stop()
    profile = bytes(range(256)) * 40
    good = chunk(b"iCCP", b"icc\0\0" + zlib.compress(profile))
    assert read_png16(encode(pixels, [0] * 5, extra=good + good))[1] == profile  # the first one
