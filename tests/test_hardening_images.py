"""Issue 37, second round: a refusal costs no more than the first frames it needs (multi-page files), a JPEG whose
restart intervals were emptied is refused, and PIL images given to the API are refused as files are."""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import GifImagePlugin, Image, TiffImagePlugin

from vdsr import Upscaler
from vdsr.errors import ImageError
from vdsr.runtime.images import decode_image, load_image, load_image_object

MULTI_FRAME = "animated or multi-page image is not supported"


def many_page_tiff(pages: int) -> bytes:
    """A little-endian TIFF of `pages` 1x1 gray pages, each IFD linked to the next, all on one pixel (0x80)."""
    tags = [(256, 3, 1, 1), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8)]
    tags += [(278, 3, 1, 1), (279, 4, 1, 1)]  # width, height, bits, no compression, gray, strip at 8, 1 row, 1 byte
    size = 2 + 12 * len(tags) + 4
    ifds = [
        struct.pack("<H", len(tags))
        + b"".join(struct.pack("<HHII", *tag) for tag in tags)
        + struct.pack("<I", 10 + (i + 1) * size if i + 1 < pages else 0)
        for i in range(pages)
    ]
    return b"II*\x00" + struct.pack("<I", 10) + b"\x80\x00" + b"".join(ifds)


def many_frame_gif(frames: int) -> bytes:
    """A GIF of `frames` 1x1 frames (two-colour palette; each frame's LZW data: clear, index 0, end)."""
    frame = b"\x2c" + struct.pack("<4H", 0, 0, 1, 1) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + struct.pack("<2H", 1, 1) + b"\x80\x00\x00" + b"\x00" * 3 + b"\xff" * 3 + frame * frames + b";"


def counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """`owner.name` wrapped to count its calls: the returned list grows by one per call."""
    calls: list[int] = []
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize(
    ("make", "owner", "method"),
    [
        (many_page_tiff, TiffImagePlugin.ImageFileDirectory_v2, "load"),  # one call per IFD read
        (many_frame_gif, GifImagePlugin.GifImageFile, "_seek"),  # one call per frame header read
    ],
)
def test_many_frames_are_refused_after_reading_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Any, owner: Any, method: str
) -> None:
    """A 30,000-page TIFF took 10 s to refuse (60,000: 43 s): every page was counted first. Refusing it reads the
    first pages only, from a file and from a PIL image given to the API alike."""
    assert decode_image(make(1), "one").pixels.shape[:2] == (1, 1)  # a single frame of the same build decodes
    (tmp_path / "many").write_bytes(make(30_000))
    reads = counting(monkeypatch, owner, method)
    with pytest.raises(ImageError, match="many: animated or multi-page image"):
        load_image(tmp_path / "many")
    assert len(reads) <= 4, f"{len(reads)} frames read to refuse the file"
    reads.clear()
    with Image.open(tmp_path / "many") as opened, pytest.raises(ImageError, match=MULTI_FRAME):
        load_image_object(opened)
    assert len(reads) <= 4, f"{len(reads)} frames read to refuse the PIL image"


def encoded(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour content: JPEG-like statistics, every block different."""
    steps = np.random.default_rng(seed).integers(-4, 5, (height, width, 3))
    return (np.cumsum(steps, axis=1) % 256).astype(np.uint8)


def with_intervals_emptied(data: bytes, first: int, last: int, *, scan: int = 0, keep: int = 0, fill: int = 0) -> bytes:
    """`data` with restart intervals first..last (counted from 1) of its scan number `scan` (from 0) cut to their
    first `keep` bytes and `fill` fill bytes (0xFF), every restart marker kept in place and in turn."""
    sos = [match.start() for match in re.finditer(rb"\xff\xda", data)][scan]
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    stop = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]").search(data, start).start()  # type: ignore[union-attr]
    pieces = re.split(rb"(\xff[\xd0-\xd7])", data[start:stop])  # interval, marker, interval, ..., interval
    for index in range(first - 1, last):
        pieces[2 * index] = pieces[2 * index][:keep] + b"\xff" * fill
    return data[:start] + b"".join(pieces) + data[stop:]


@pytest.mark.parametrize(
    ("options", "damage"),
    [
        ({"quality": 90}, {}),  # the file: 4:2:0 baseline, intervals 3-18 of 20 emptied
        ({"quality": 90, "subsampling": 0, "optimize": True}, {}),
        ({"quality": 30}, {"keep": 1}),  # a byte left in each: still far fewer than the blocks need
        ({"quality": 30}, {"fill": 200}),  # fill bytes instead of data
        ({"quality": 90, "gray": True}, {}),
        ({"quality": 75, "progressive": True}, {}),  # the DC scan
        ({"quality": 75, "progressive": True}, {"scan": 3}),  # a scan of AC coefficients
    ],
)
def test_a_jpeg_with_emptied_restart_intervals_is_refused(
    tmp_path: Path, options: dict[str, Any], damage: dict[str, int]
) -> None:
    """libjpeg fills an interval whose data ends at its restart marker with grey, as a warning Pillow does not pass
    on: the issue's file decoded without a word with 83% of its pixels wrong."""
    pixels = photo(320, 128)
    pixels = pixels[..., 0] if options.pop("gray", False) else pixels
    good = encoded(Image.fromarray(pixels), restart_marker_rows=1, **options)
    (tmp_path / "good.jpg").write_bytes(good)
    load_image(tmp_path / "good.jpg")
    (tmp_path / "damaged.jpg").write_bytes(with_intervals_emptied(good, 3, 18, **damage))
    scan = damage.get("scan", 0)
    where = r"restart interval 3 of \d+" + (f" in scan {scan + 1}" if scan else "")
    held = "only 1 of the" if damage.get("keep") else "no data"
    with pytest.raises(ImageError, match=f"damaged.jpg: damaged JPEG: {where} holds {held}"):
        load_image(tmp_path / "damaged.jpg")


def test_valid_jpegs_with_restart_markers_all_decode(tmp_path: Path) -> None:
    """Every way Pillow writes a JPEG with restart markers passes the bounds on each interval's data, the flat images
    that compress most included (they meet the bounds exactly: they are minimums, not estimates)."""
    contents = {
        "flat black": np.zeros((40, 56, 3), np.uint8),
        "flat white": np.full((40, 56, 3), 255, np.uint8),
        "photo": photo(40, 56, seed=1),
        "noise": np.random.default_rng(2).integers(0, 256, (17, 23, 3), dtype=np.uint8),
    }
    for case, quality in enumerate([1, 2, 5, 10, 25, 50, 75, 90, 95, 100]):
        for name, pixels in contents.items():
            for mode in ("RGB", "L", "CMYK"):
                image = Image.fromarray(pixels).convert(mode)
                options: dict[str, Any] = {
                    "quality": quality,
                    "subsampling": case % 3,
                    "progressive": bool(case % 2),
                    "optimize": case % 4 < 2,
                    ["restart_marker_blocks", "restart_marker_rows"][case % 2]: 1 + case % 3,
                }
                path = tmp_path / f"{case}_{mode}.jpg"
                path.write_bytes(encoded(image, **options))
                shape = load_image(path).pixels.shape
                assert shape == (*pixels.shape[:2], 1 if mode == "L" else 3), f"{name} {mode}: {options}"


def test_the_api_refuses_animations_as_the_command_line_does(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "green", "blue")]
    frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(ImageError) as from_file:
        load_image(tmp_path / "animated.gif")
    with Upscaler("srcnn", "onnxruntime-cpu") as upscaler, Image.open(tmp_path / "animated.gif") as animated:
        for given in (animated, [Image.new("RGB", (8, 8)), animated]):
            with pytest.raises(ImageError) as from_api:
                upscaler.upscale(given, 2)
            assert str(from_api.value) == str(from_file.value)
        assert upscaler.upscale(animated.convert("RGB"), 2).size == (16, 16)  # a frame taken by the caller


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_the_api_reports_a_truncated_lazily_opened_image_as_an_image_error(tmp_path: Path, fmt: str) -> None:
    """Image.open reads the header only: the truncation shows when the pixels are read, as a raw OSError before."""
    data = encoded(Image.fromarray(photo(64, 64)), fmt)
    (tmp_path / "cut").write_bytes(data[: len(data) // 2])
    with Upscaler("srcnn", "onnxruntime-cpu") as upscaler:
        with Image.open(tmp_path / "cut") as opened, pytest.raises(ImageError, match="truncated") as raised:
            upscaler.upscale(opened, 2)
        assert str(raised.value).startswith(f"{tmp_path / 'cut'}: ")
        with Image.open(io.BytesIO(data[: len(data) // 2])) as unnamed, pytest.raises(ImageError) as raised:
            upscaler.upscale(unnamed, 2, name="upload 7")
        assert str(raised.value).startswith("upload 7: corrupt or truncated image")


def test_the_api_takes_big_endian_16_bit_arrays() -> None:
    """Found by review: a '>u2' array (FITS, data off the network) was refused as "not uint16"."""
    pixels = np.random.default_rng(0).integers(0, 65536, (20, 24, 3), dtype=np.uint16)
    with Upscaler("srcnn", "onnxruntime-cpu") as upscaler:
        native, swapped = upscaler.upscale(pixels, 2), upscaler.upscale(pixels.astype(">u2"), 2)
    assert swapped.dtype == np.uint16 and np.array_equal(native, swapped)
