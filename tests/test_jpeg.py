"""JPEG files cut short, forged or malformed are refused before or while decoding; complete ones decode as Pillow
decodes them (vdsr.runtime.jpeg)."""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vdsr.errors import ImageError
from vdsr.runtime import jpeg
from vdsr.runtime.images import load_image


def jpeg_bytes(pixels: np.ndarray, **options: Any) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", **options)
    return out.getvalue()


def photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random colour content: JPEG-like statistics, every block different."""
    return (np.cumsum(rng.integers(-4, 5, (height, width, 3)), axis=1) % 256).astype(np.uint8)


def test_complete_files_decode_exactly_as_pillow_decodes_them(tmp_path: Path) -> None:
    """Random sizes, contents, qualities, subsamplings, Huffman tables, progressive or not, restart markers: the
    invalid codes that replace the end marker are never needed by a complete scan."""
    rng = np.random.default_rng(5)
    for case in range(120):
        height, width = (int(v) for v in rng.integers(1, 90, 2))
        content = [
            photo(rng, height, width),
            rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            np.full((height, width, 3), int(rng.integers(0, 256)), np.uint8),
        ][case % 3]
        options = {
            "quality": int(rng.integers(5, 101)),
            "subsampling": int(rng.integers(0, 3)),
            "optimize": bool(case % 2),
            "progressive": case % 5 == 0,
        }
        if case % 7 == 0:
            options["restart_marker_blocks"] = int(rng.integers(1, 5))
        pixels = content if case % 4 else content[..., 0]  # gray or colour
        path = tmp_path / f"{case}.jpg"
        path.write_bytes(jpeg_bytes(pixels, **options))
        with Image.open(path) as reference:
            expected = np.asarray(reference.convert("RGB" if pixels.ndim == 3 else "L"), np.float32) / 255
        got = load_image(path).pixels
        np.testing.assert_array_equal(got, expected.reshape(got.shape), err_msg=f"case {case}: {options}")


@pytest.mark.parametrize("options", [{}, {"subsampling": 0}, {"optimize": True}, {"restart_marker_rows": 1}])
def test_a_scan_cut_short_is_an_error_with_or_without_an_end_marker(tmp_path: Path, options: dict[str, Any]) -> None:
    """The issue's file: a baseline JPEG cut mid-scan with an end marker appended was written as a success, its
    bottom part flat grey."""
    data = jpeg_bytes(photo(np.random.default_rng(1), 120, 160), quality=90, **options)
    cuts = range(len(data) // 3, len(data) - 200, 97)  # all but the last few blocks (the module docstring)
    for cut in cuts:  # an end marker; none; a comment or a restart marker (RST0, or the next in turn) to hide the cut
        turn = sum(data.count(bytes((0xFF, 0xD0 + k)), 0, cut) for k in range(8)) % 8
        for ending in (
            b"\xff\xd9",
            b"",
            b"\xff\xfe\x00\x02\xff\xd9",
            b"\xff\xd0\xff\xd9",
            bytes((0xFF, 0xD0 + turn)) + b"\xff\xd9",
        ):
            path = tmp_path / "cut.jpg"
            path.write_bytes(data[:cut] + ending)
            with pytest.raises(ImageError, match="cut.jpg: .*(truncated|cut short|damaged)") as error:
                load_image(path)
            assert "\n" not in str(error.value)


def test_a_progressive_file_missing_scans_is_an_error(tmp_path: Path) -> None:
    data = jpeg_bytes(photo(np.random.default_rng(2), 120, 160), quality=90, progressive=True)
    scans = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    assert len(scans) > 3
    for before, start in itertools.pairwise(scans):  # cut before a scan or inside the one before; end marker added
        for cut in (start, (before + start) // 2):
            (tmp_path / "p.jpg").write_bytes(data[:cut] + b"\xff\xd9")
            with pytest.raises(ImageError, match="p.jpg: progressive JPEG cut short"):
                load_image(tmp_path / "p.jpg")


def test_a_size_the_bytes_cannot_hold_is_refused_before_decoding(tmp_path: Path) -> None:
    """The issue's 669-byte JPEG claiming 9000x9000 decoded to 81 MP: now refused from its header."""
    data = bytearray(jpeg_bytes(np.zeros((16, 16), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (9000).to_bytes(2, "big") * 2
    (tmp_path / "forged.jpg").write_bytes(bytes(data))
    with pytest.raises(ImageError, match=rf"forged.jpg: claims 9000x9000 pixels in {len(data)} bytes"):
        load_image(tmp_path / "forged.jpg")
    flat = jpeg_bytes(np.full((1024, 1024), 255, np.uint8), quality=100)  # the most compressible real file
    assert 1024 * 1024 < jpeg.MAX_PIXELS_PER_BYTE * len(flat)
    (tmp_path / "flat.jpg").write_bytes(flat)
    assert load_image(tmp_path / "flat.jpg").pixels.shape == (1024, 1024, 1)


def test_malformed_structures_get_one_line_errors() -> None:
    good = jpeg_bytes(photo(np.random.default_rng(3), 16, 16))
    sof = good.index(b"\xff\xc0")
    sos = good.index(b"\xff\xda")
    zero_width = bytearray(good)
    zero_width[sof + 7 : sof + 9] = b"\0\0"
    cases = {
        b"GIF89a": "not a JPEG file",
        good[:sof] + good[sof + 19 :]: "JPEG scan before its frame header",  # the frame segment removed
        good[: sof + 3]: "cut short",
        good[:sos] + b"\xff\xd9": "JPEG has no scan",
        bytes(zero_width): "JPEG frame of 0x16 pixels",
        good[:sos] + good[sos : sos + 4] + b"\x09" + good[sos + 5 :]: "JPEG scan header malformed",
    }
    for data, cause in cases.items():
        with pytest.raises(ValueError, match=cause) as error:
            jpeg.inspect(data)
        assert "\n" not in str(error.value)
    assert jpeg.inspect(good + b"trailing bytes after the end").end == len(good) - 2


DATA = (
    Path(__file__).parent / "data"
)  # JPEGs Pillow cannot write, made by libjpeg-turbo 2.1.5's cjpeg from drawn images


@pytest.mark.parametrize("name", ["one_scan_per_component.jpg", "arithmetic.jpg", "flat_arithmetic.jpg"])
def test_legal_jpegs_pillow_does_not_write_decode_as_pillow_decodes_them(name: str) -> None:
    """Found by review: a sequential file of several scans was refused as truncated; a flat arithmetic-coded 2000x2000
    file (214 bytes: no 512-pixels-a-byte bound holds for arithmetic coding) as forged."""
    with Image.open(DATA / name) as reference:
        expected = np.asarray(reference, np.float32) / 255
    np.testing.assert_array_equal(load_image(DATA / name).pixels, expected)


def test_a_long_run_of_fill_bytes_costs_linear_time(tmp_path: Path) -> None:
    """Found by review: the marker search backtracked over runs of 0xFF (150 KB: 96 s, holding the GIL)."""
    import time

    good = jpeg_bytes(photo(np.random.default_rng(4), 16, 16))
    sos = good.index(b"\xff\xda")
    header_end = sos + 2 + int.from_bytes(good[sos + 2 : sos + 4], "big")
    for where in (header_end, sos):  # inside the scan's data; between segments
        data = good[:where] + b"\xff" * 2_000_000 + b"\x00" + good[where:]
        start = time.process_time()
        try:
            jpeg.inspect(data)
        except ValueError:
            pass
        assert time.process_time() - start < 5, "hang guard: linear costs milliseconds here"
