"""Image files (stills and animations) much larger than their pixels: refused before they are read into memory
(vdsr.runtime.images.max_file_bytes), and a PNG's image data checked a piece at a time
(vdsr.runtime.containers.check_png_rows)."""

from __future__ import annotations

import io
import re
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from vdsr.errors import ImageError
from vdsr.runtime.animation import upscale_animation
from vdsr.runtime.containers import check_png_rows
from vdsr.runtime.images import LoadedImage, load_image, max_file_bytes

MIB = 1 << 20


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, idat: list[bytes]) -> bytes:
    """An 8-bit RGB PNG whose compressed image data is split over the IDAT chunks `idat`, without IEND."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + b"".join(_chunk(b"IDAT", part) for part in idat)


def _peak(work: Callable[[], object]) -> tuple[int, str]:
    """The most bytes Python allocated while `work` ran, and what it raised ("" when nothing)."""
    tracemalloc.start()
    try:
        work()
    except Exception as error:  # noqa: BLE001  (the caller checks it)
        return tracemalloc.get_traced_memory()[1], str(error)
    else:
        return tracemalloc.get_traced_memory()[1], ""
    finally:
        tracemalloc.stop()


def test_png_image_data_is_checked_a_piece_at_a_time(rng: np.random.Generator) -> None:
    width, height = 1000, 2000  # 6 MB of incompressible rows, stored in 3 IDAT chunks
    raw = b"".join(b"\0" + rng.integers(0, 256, width * 3, dtype=np.uint8).tobytes() for _ in range(height))
    stream = zlib.compress(raw, 0)
    third = len(stream) // 3
    whole = io.BytesIO(_png(width, height, [stream[:third], stream[third : 2 * third], stream[2 * third :]]))
    peak, error = _peak(lambda: check_png_rows(whole))
    assert error == "" and peak < 4 * MIB
    short = io.BytesIO(_png(width, height, [zlib.compress(raw[: len(raw) // 2], 0)]))
    with pytest.raises(ValueError, match="ends early"):
        check_png_rows(short)


def _padded(path: Path, head: bytes, size: int) -> Path:
    """`head`, then zeros to `size` bytes (a sparse file: nothing is written for them)."""
    with path.open("wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def _small_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 2), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


def _small_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize(
    "head",
    [
        # a private ancillary chunk after the image data, declaring the padding as its body
        _small_png()[:-12] + struct.pack(">I", 2**31 - 1) + b"paDd",
        _small_jpeg(),  # bytes after the end-of-image marker
    ],
    ids=["png", "jpeg"],
)
def test_a_small_image_padded_past_what_its_pixels_take_is_refused_unread(tmp_path: Path, head: bytes) -> None:
    path = _padded(tmp_path / "padded.img", head, max_file_bytes(16 * 16) + 1)
    peak, error = _peak(lambda: load_image(path))
    assert re.fullmatch(r".*padded\.img: \d+ bytes is more than a (3x2|16x16) image takes; refused as padded", error)
    assert peak < 4 * MIB
    with pytest.raises(ImageError, match="is more than an image of at most 100 pixels takes"):
        load_image(path, max_pixels=100)  # refused before Pillow opens it


def test_metadata_within_the_allowance_is_read(tmp_path: Path) -> None:
    """A small image with megabytes of metadata (a large ICC profile, XMP) is an image, not padding."""
    png = _small_png()
    text = _chunk(b"zTXt", b"XML:com.adobe.xmp\0\0" + zlib.compress(bytes(MIB // 2)))
    with_text = png[:33] + _chunk(b"paDd", bytes(3 * MIB)) + text + png[33:]
    (tmp_path / "meta.png").write_bytes(with_text)
    assert load_image(tmp_path / "meta.png").pixels.shape == (2, 3, 3)


def test_an_animation_padded_past_what_its_frames_take_is_refused_unread(tmp_path: Path) -> None:
    """An animation's frames are read one by one: its file may hold no more than the run's output pixels explain."""
    first, *rest = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in (10, 90, 200)]
    out = io.BytesIO()
    first.save(out, "GIF", save_all=True, append_images=rest, duration=[100, 100, 100])
    path = _padded(tmp_path / "padded.gif", out.getvalue(), max_file_bytes(10_000) + 1)
    limits = {"max_pixels": 100, "max_output_pixels": 10_000}
    peak, error = _peak(lambda: upscale_animation(path, tmp_path / "out.png", 2, upscale=_never, **limits))
    assert error.endswith("bytes is more than frames of 10000 pixels in all takes; refused as padded") and peak < MIB
    assert not (tmp_path / "out.png").exists()
    (tmp_path / "whole.gif").write_bytes(out.getvalue())
    upscale_animation(tmp_path / "whole.gif", tmp_path / "out.png", 2, upscale=_doubled, **limits)
    with Image.open(tmp_path / "out.png") as written:
        assert written.size == (8, 8) and written.n_frames == 3


def _never(image: LoadedImage) -> NDArray[np.uint8]:
    raise AssertionError("no frame is read from a refused file")


def _doubled(image: LoadedImage) -> NDArray[np.uint8]:
    return (image.pixels.repeat(2, 0).repeat(2, 1) * 255).round().astype(np.uint8)
