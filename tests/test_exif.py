"""EXIF blocks from elsewhere (vdsr.runtime.exif): one Pillow cannot parse or write back is dropped and the image
still upscaled; one JPEG cannot hold is refused before any work."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from vdsr import Upscaler
from vdsr.runtime.cli import app
from vdsr.runtime.png16 import write_png16

GARBAGE = b"Exif\x00\x00garbage!garbage!"  # not a TIFF header: Pillow cannot parse it
# Found by a mutation probe: parses (orientation 6), but a tag of a wrong type fails when the block is written back
UNWRITABLE = bytes.fromhex(
    "4578696600004d4d002a000000080004010fcc020000000600f5003e0101000200000004454f530001120003000000010006000001310002"
    "00000003737700000000000043616e6f6e00"
)


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def pixels(seed: int, dtype: type = np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, (12, 10, 3), dtype=dtype)


def test_an_unsound_exif_block_is_dropped_and_the_image_still_upscaled(
    tmp_path: Path, tiny_model: dict[str, Path]
) -> None:
    """Found by review: a PNG or WebP (8- or 16-bit) whose EXIF block Pillow cannot parse failed as "corrupt or
    truncated image", though its pixels are good; a JPEG's was written into the result as it was (Pillow's JPEG
    opener swallows the error); a block that parses but cannot be written back failed the image. Each is written
    without its block, by the command line and the API alike."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, block in (("garbage", GARBAGE), ("unwritable", UNWRITABLE)):
        for suffix in ("png", "webp", "jpg"):
            Image.fromarray(pixels(4)).save(folder / f"{name}.{suffix}", exif=block, quality=95)
        png = write_png16(pixels(5, np.uint16))
        chunk = (
            len(block[6:]).to_bytes(4, "big") + b"eXIf" + block[6:] + zlib.crc32(b"eXIf" + block[6:]).to_bytes(4, "big")
        )
        (folder / f"{name}16.png").write_bytes(png[:33] + chunk + png[33:])
    code, output = run(folder, "-s", "2", "--model", tiny_model["onnx"], "-o", tmp_path / "out")
    assert code == 0 and "8 written" in output, output
    for path in sorted((tmp_path / "out").iterdir()):
        with Image.open(path) as written:
            assert written.size == (20, 24) and "exif" not in written.info, path
    with Upscaler(tiny_model["onnx"], "onnxruntime-cpu") as upscaler:
        for name in ("garbage.png", "garbage.jpg", "unwritable.jpg"):
            with Image.open(folder / name) as opened:
                assert upscaler.upscale(opened, 2).size == (20, 24)


def test_an_exif_block_jpeg_cannot_hold_is_refused_before_any_work(tmp_path: Path, tiny_model: dict[str, Path]) -> None:
    """Found by review: a PNG's 70 KB EXIF block failed the JPEG writer after the upscale was done."""
    big = Image.Exif()
    big[0x010F] = "x" * 70_000  # Make: a block over the 64 KiB of JPEG's APP1 marker
    Image.fromarray(pixels(6)).save(tmp_path / "big.png", exif=big.tobytes())
    code, output = run(tmp_path / "big.png", "-s", "2", "--model", tiny_model["onnx"], "-o", tmp_path / "big.jpg")
    assert (
        code == 1 and "big.jpg: JPEG cannot hold its EXIF block of 70" in output and not (tmp_path / "big.jpg").exists()
    )
    code, output = run(tmp_path / "big.png", "-s", "2", "--model", tiny_model["onnx"], "-o", tmp_path / "big2.png")
    assert code == 0 and len(Image.open(tmp_path / "big2.png").info["exif"]) > 70_000
