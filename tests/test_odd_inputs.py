"""Inputs an adversarial probe of vdsr-run found mishandled (seventh session): the warning for a scale the model was
not trained for, a memory budget that is not a number, an empty path, WebP results, a lossy WebP with metadata
chunks, a PNG whose image data ends early, float error in output sizes, an empty array. The shipped srcnn on ONNX
Runtime's CPU backend, tiny images."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

from vdsr import Upscaler
from vdsr.errors import ImageError, UsageError
from vdsr.runtime.cli import app
from vdsr.runtime.containers import check_png_rows, png_data_size
from vdsr.runtime.images import decode_image, encode_image
from vdsr.runtime.resize import output_shape_for

MODEL = ["--backend", "onnxruntime-cpu"]


def run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*(str(a) for a in args), *MODEL])
    return result.exit_code, result.output


@pytest.fixture
def photo(tmp_path: Path, rng: np.random.Generator) -> Path:
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(("model", "scale", "named"), [("vdsr", "1.5", "vdsr_real"), ("srcnn", "3", "srcnn_x3")])
def test_a_scale_the_model_was_not_trained_for_is_said(photo: Path, model: str, scale: str, named: str) -> None:
    code, output = run(photo, "-s", scale, "--model", model, "-o", photo.parent.parent / "out.png")
    assert code == 0, output
    line = next(line for line in output.splitlines() if line.startswith("warning:"))
    assert f"x{scale} is outside the scales the model was trained for" in line and named in line
    code, output = run(photo, "-s", "2", "--model", model, "-o", photo.parent.parent / "two.png")
    assert code == 0 and "warning:" not in output  # a trained scale: no warning


@pytest.mark.parametrize("budget", ["nan", "inf", "-inf"])
def test_a_memory_budget_that_is_not_a_finite_number_is_bad_usage(photo: Path, budget: str) -> None:
    code, output = run(photo, "-s", "2", "--model", "srcnn", "--memory-budget", budget)
    assert code == 2 and output.startswith("error:") and "Traceback" not in output, output
    assert not list(photo.parent.parent.glob("*x2*"))
    with pytest.raises(UsageError, match="finite number"):
        Upscaler("srcnn", backend="onnxruntime-cpu", memory_budget=float(budget))


def test_an_empty_path_is_bad_usage_not_the_current_folder(
    photo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(photo.parent)  # a folder of images: "" must not mean it
    assert run("", "-s", "2", "--model", "srcnn")[0] == 2
    assert run(photo, "-s", "2", "--model", "srcnn", "-o", "")[0] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"] and [p.name for p in photo.parent.iterdir()] == [
        "photo.png"
    ]


def test_webp_results_are_lossless(rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    encode_image(pixels, "WEBP", out)
    assert np.array_equal(decode_image(out.getvalue(), "x.webp").pixels * 255, pixels.astype(np.float32))


@pytest.mark.parametrize("lossless", [False, True])
def test_a_webp_says_how_it_was_coded_whatever_chunks_come_first(rng: np.random.Generator, lossless: bool) -> None:
    """An extended WebP (VP8X: here for its ICC profile and alpha) names its coding in a later chunk; model auto
    reads it (vdsr_real for lossy inputs)."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for mode in ("RGB", "RGBA"):
        image = Image.fromarray(rng.integers(0, 256, (24, 32, len(mode)), dtype=np.uint8), mode)
        out = io.BytesIO()
        image.save(out, "WEBP", quality=30, lossless=lossless, icc_profile=icc)
        assert out.getvalue()[12:16] == b"VP8X"
        assert decode_image(out.getvalue(), "x.webp").lossy is not lossless


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, raw: bytes, *, colour: int, depth: int, interlaced: bool) -> bytes:
    """A well-formed PNG (valid CRCs, complete zlib stream, IEND) whose image data is `raw`, however long."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(interlaced))
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        [_chunk(b"IHDR", header), _chunk(b"IDAT", zlib.compress(raw)), _chunk(b"IEND", b"")]
    )


def _adam7(pixels: np.ndarray) -> bytes:
    """8-bit gray pixels as Adam7's seven passes, each row with filter type 0."""
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    rows = [b"\0" + row.tobytes() for x0, y0, dx, dy in passes for row in pixels[y0::dy, x0::dx] if row.size]
    return b"".join(rows)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (9, 17), (16, 16)])
def test_interlaced_png_data_has_the_size_its_passes_give(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    raw = _adam7(pixels)
    assert png_data_size(shape[1], shape[0], bits=8, interlaced=True) == len(raw)
    data = _png(shape[1], shape[0], raw, colour=0, depth=8, interlaced=True)
    check_png_rows(data)
    assert np.array_equal(decode_image(data, "i.png").pixels[..., 0] * 255, pixels.astype(np.float32))
    with pytest.raises(ValueError, match="ends early"):
        check_png_rows(_png(shape[1], shape[0], raw[:-1], colour=0, depth=8, interlaced=True))


@pytest.mark.parametrize(("colour", "depth", "channels"), [(2, 8, 3), (0, 8, 1), (6, 16, 4), (0, 1, 1)])
def test_a_png_whose_image_data_ends_early_is_refused(colour: int, depth: int, channels: int) -> None:
    """Pillow fills the rows a short but well-formed stream lacks with black; the file is refused as truncated, in
    every bit depth (16-bit colour goes through vdsr.runtime.png16), and a file that declares a huge image with a
    few bytes of data is refused before any work."""
    width, height = 40, 30
    row = 1 + -(-width * channels * depth // 8)
    whole = bytes(height * row)
    assert png_data_size(width, height, bits=depth * channels, interlaced=False) == len(whole)
    decode_image(_png(width, height, whole, colour=colour, depth=depth, interlaced=False), "whole.png")
    with pytest.raises(ImageError, match=r"short\.png: .*ends early"):
        decode_image(_png(width, height, whole[: 5 * row], colour=colour, depth=depth, interlaced=False), "short.png")
    bomb = _png(9000, 9000, whole[:row], colour=colour, depth=depth, interlaced=False)
    with pytest.raises(ImageError, match="ends early"):
        decode_image(bomb, "bomb.png", max_pixels=10**8)


def test_output_sizes_take_no_pixel_from_float_error() -> None:
    assert output_shape_for((50, 25), 2.2) == (110, 55) and output_shape_for((50, 25), 1.1) == (55, 28)
    assert output_shape_for((7, 3), 1.5) == (11, 5) and output_shape_for((10, 10), 1.0001) == (11, 11)


@pytest.mark.parametrize("shape", [(0, 0), (0, 5, 3), (5, 0)])
def test_an_empty_array_is_bad_usage(shape: tuple[int, ...]) -> None:
    with Upscaler("srcnn", backend="onnxruntime-cpu") as upscaler, pytest.raises(UsageError, match="non-empty"):
        upscaler.upscale(np.zeros(shape, np.uint8), 2)
