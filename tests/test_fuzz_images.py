"""Hostile image files: mutated PNG, 16-bit PNG, JPEG (baseline, progressive, with restart markers) and TIFF bytes
through load_image.

Every case must either decode (finite pixels in [0, 1], a sane shape) or raise the project's one-line ImageError
naming the file: never another exception, a hang, or unbounded memory. Mutations: truncation, bit flips, byte runs
overwritten with extreme values, insertions and deletions, and PNG chunks edited with their CRC made valid again (so
the edit reaches the decoder instead of stopping at the checksum). Hypothesis runs derandomized: CI sees the same
cases every time. Memory: the address space is capped for the run (an allocation past it fails the case); time: each
case is bounded by a hang guard far above its normal cost (milliseconds).
"""

from __future__ import annotations

import io
import resource
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vdsr.errors import ImageError
from vdsr.runtime.images import load_image
from vdsr.runtime.png16 import write_png16

CASES = 2100
MEMORY_HEADROOM = 1536 << 20  # address space the whole fuzz run may add to the process
HANG_GUARD_S = 5.0  # per case, plus 50 us a byte: typical cases take 1-20 ms


SEEDS_RGB = (np.cumsum(np.random.default_rng(11).integers(-6, 7, (24, 20, 3)), axis=1) % 256).astype(np.uint8)


def seeds() -> dict[str, bytes]:
    rgb = SEEDS_RGB
    files: dict[str, bytes] = {}
    for name, image, fmt, options in [
        ("rgb.png", Image.fromarray(rgb), "PNG", {}),
        ("palette.png", Image.fromarray(rgb).convert("P"), "PNG", {}),
        ("gray_alpha.png", Image.fromarray(rgb[..., :2].copy(), "LA"), "PNG", {}),
        ("baseline.jpg", Image.fromarray(rgb), "JPEG", {"quality": 80}),
        ("progressive.jpg", Image.fromarray(rgb), "JPEG", {"quality": 80, "progressive": True}),
        ("gray.jpg", Image.fromarray(rgb[..., 0]), "JPEG", {"quality": 60, "subsampling": 0}),
        ("restarts.jpg", Image.fromarray(rgb), "JPEG", {"quality": 80, "restart_marker_blocks": 1}),
        ("progressive_restarts.jpg", Image.fromarray(rgb), "JPEG", {"progressive": True, "restart_marker_rows": 1}),
    ]:
        out = io.BytesIO()
        image.save(out, fmt, **options)
        files[name] = out.getvalue()
    files["rgb16.png"] = write_png16(rgb.astype(np.uint16) * 257)
    for name, options in [("plain.tif", {}), ("deflate.tif", {"compression": "zlib"})]:
        out = io.BytesIO()
        tifffile.imwrite(out, rgb, photometric="rgb", **options)
        files[name] = out.getvalue()
    return files


SEEDS = seeds()


def png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(start, length of the body) of each chunk of a PNG, as far as the structure goes."""
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        if pos + 12 + length > len(data):
            break
        chunks.append((pos, length))
        pos += 12 + length
    return chunks


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete", "chunk"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            if data:
                data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":  # lengths, sizes, offsets and counts are where parsers trust the file
            value = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            data[at : at + 4] = value.to_bytes(4, draw(st.sampled_from(["big", "little"])))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif name.endswith(".png") and (chunks := png_chunks(bytes(data))):
            start, length = draw(st.sampled_from(chunks))  # edit inside one chunk, then make its CRC right again
            if length:
                offset = start + 8 + draw(st.integers(0, length - 1))
                data[offset] = draw(st.integers(0, 255))
            body = bytes(data[start + 4 : start + 8 + length])
            data[start + 8 + length : start + 12 + length] = struct.pack(">I", zlib.crc32(body))
    return name, bytes(data)


@contextmanager
def address_space_capped(headroom: int) -> Iterator[None]:
    """RLIMIT_AS lowered to what the process maps now plus `headroom` (restored after)."""
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = mapped + headroom if hard == resource.RLIM_INFINITY else min(hard, mapped + headroom)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_the_seeds_decode_exactly(tmp_path: Path) -> None:
    rgb = SEEDS_RGB.astype(np.float32) / 255
    for name, data in SEEDS.items():
        (tmp_path / name).write_bytes(data)
        pixels = load_image(tmp_path / name).pixels
        assert pixels.shape[:2] == (24, 20), name
        if name in ("rgb.png", "rgb16.png", "plain.tif", "deflate.tif"):  # lossless
            np.testing.assert_allclose(pixels, rgb, rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc to cap the address space")
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's own notes on the damaged metadata it skips
def test_mutated_files_decode_or_fail_with_one_line(tmp_path: Path) -> None:
    outcomes = {"decoded": 0, "refused": 0}

    @settings(
        max_examples=CASES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(mutated())
    def case(sample: tuple[str, bytes]) -> None:
        name, data = sample
        path = tmp_path / name
        path.write_bytes(data)
        start = time.process_time()
        try:
            image = load_image(path)
        except ImageError as error:
            message = str(error)
            assert message.startswith(str(path)) and "\n" not in message, message
            assert "not enough memory" not in message, f"{name}: {message}"  # the memory cap was reached
            outcomes["refused"] += 1
        else:
            pixels = image.pixels
            assert pixels.dtype == np.float32 and pixels.ndim == 3 and 1 <= pixels.shape[2] <= 4
            assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1
            outcomes["decoded"] += 1
        elapsed = time.process_time() - start
        assert elapsed < HANG_GUARD_S + 50e-6 * len(data), f"{name}: {elapsed:.1f} s for {len(data)} bytes"

    with address_space_capped(MEMORY_HEADROOM):
        with pytest.raises(MemoryError):  # the cap is real
            bytearray(MEMORY_HEADROOM + (256 << 20))
        case()
    assert sum(outcomes.values()) >= 2000 and min(outcomes.values()) > 100, outcomes  # both paths well exercised
