"""Inputs adversarial probes found mishandled (seventh session). vdsr-run: the warning for a scale the model was not
trained for, a memory budget that is not a number, an empty path, WebP results, a lossy WebP with metadata chunks, a
PNG whose image data ends early, float error in output sizes, an empty array. vdsr-export: its output on its input,
a graph name without .onnx, an opset onnx does not know. vdsr-bench: NaN outputs, weights that are not floating point,
reports on each other or on inputs. vdsr-train: a run folder that cannot be one, or holds a run, refused before any
data work. The shipped srcnn on ONNX Runtime's CPU backend, tiny images."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

from vdsr import Upscaler
from vdsr.bench.cli import app as bench_app
from vdsr.catalogue import shipped
from vdsr.errors import DatasetError, ImageError, ModelError, UsageError
from vdsr.export.cli import app as export_app
from vdsr.runtime.cli import app
from vdsr.runtime.containers import check_png_rows, png_data_size
from vdsr.runtime.images import decode_image, encode_image
from vdsr.runtime.resize import output_shape_for
from vdsr.train.cli import app as train_app
from vdsr.weights import load_weights

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
    check_png_rows(io.BytesIO(data))
    assert np.array_equal(decode_image(data, "i.png").pixels[..., 0] * 255, pixels.astype(np.float32))
    with pytest.raises(ValueError, match="ends early"):
        check_png_rows(io.BytesIO(_png(shape[1], shape[0], raw[:-1], colour=0, depth=8, interlaced=True)))


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


def test_export_never_writes_over_its_input_nor_a_name_it_cannot_read_back(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(shipped("srcnn.safetensors").read_bytes())
    for args, cause in [
        (["--output", str(weights)], "ends in .onnx"),
        (["--output", str(tmp_path / "w.txt")], "ends in .onnx"),
        (["--opset", "100"], "the installed onnx knows opsets up to"),
    ]:
        result = CliRunner().invoke(export_app, ["--weights", str(weights), *args])
        assert result.exit_code == 2 and cause in result.output, result.output
    link = tmp_path / "w.onnx"
    link.symlink_to(weights)  # the graph's name, but the weights' file
    result = CliRunner().invoke(export_app, ["--weights", str(weights), "--output", str(link)])
    assert result.exit_code == 2 and "is the weights being exported" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.onnx", "w.safetensors"]
    load_weights(weights)  # untouched


def test_bench_refuses_weights_it_cannot_trust_and_reports_that_would_clash(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / "a.png")
    graph = onnx.load(str(shipped("srcnn.onnx")))
    first = graph.graph.initializer[0]
    values = numpy_helper.to_array(first).copy()
    nan, overflow = values.copy(), np.full_like(values, 3e38)  # refused when read; finite, but its sums overflow
    nan.flat[0] = np.nan
    for name, weights in (("nan.onnx", nan), ("overflow.onnx", overflow)):
        first.CopyFrom(numpy_helper.from_array(weights, first.name))
        onnx.save(graph, str(tmp_path / name))
    from safetensors.numpy import load_file, save_file

    tensors = {k: v.astype(np.int64) for k, v in load_file(str(shipped("srcnn.safetensors"))).items()}
    with open(shipped("srcnn.safetensors"), "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    save_file(tensors, str(tmp_path / "whole.safetensors"), metadata=header["__metadata__"])
    with pytest.raises(ModelError, match="whole.safetensors: weights .*I64.* are not floating point"):
        load_weights(tmp_path / "whole.safetensors")
    bench = ["-d", str(folder), "-s", "2"]
    result = CliRunner().invoke(bench_app, [*bench, "--weights", str(tmp_path / "nan.onnx")])
    assert result.exit_code == 1 and "nan.onnx: stored tensor 'body.0.weight' holds NaN" in result.output
    result = CliRunner().invoke(bench_app, [*bench, "--weights", str(tmp_path / "overflow.onnx")])
    assert result.exit_code == 1 and "output holds NaN or inf" in result.output, result.output
    for reports, cause in [
        (["--json", str(tmp_path / "r"), "--csv", str(tmp_path / "r")], "--csv: .* is also --json"),
        (["--csv", str(folder / "a.png")], "--csv: .*a.png is an input of this run"),
    ]:
        result = CliRunner().invoke(bench_app, [*bench, "-m", "bicubic", *reports])
        assert result.exit_code == 2 and re.search(cause, result.output), result.output
    assert [p.name for p in folder.iterdir()] == ["a.png"] and not (tmp_path / "r").exists()


def test_a_data_set_error_is_one_line() -> None:
    error = DatasetError("Set5: 7 of 7 files fail verification", [f"f{i}.png: missing" for i in range(7)])
    assert str(error) == "Set5: 7 of 7 files fail verification; " + "; ".join(
        [f"f{i}.png: missing" for i in range(5)] + ["and 2 more"]
    )


def test_train_refuses_a_run_folder_before_any_data_work(tmp_path: Path) -> None:
    """A file where the folder goes, a run's checkpoint without --resume, a finished run's weights: bad usage,
    refused before the patches are made (the data folder given here does not exist)."""
    base = ["--model", "srcnn", "--scale", "2", "--max-steps", "1", "--data-dir", str(tmp_path / "none")]
    (tmp_path / "file").write_text("x")
    for name in ("checkpoint.safetensors", "srcnn.json"):
        (tmp_path / name.split(".")[0]).mkdir()
        (tmp_path / name.split(".")[0] / name).write_text("x")
    for output, cause in [
        ("file", "is not a writable folder"),
        ("checkpoint", "exists: pass --resume to continue it"),
        ("srcnn", "holds a finished run's srcnn.safetensors"),
    ]:
        result = CliRunner().invoke(train_app, ["--output", str(tmp_path / output), *base])
        assert result.exit_code == 2 and cause in result.output, result.output
    for minutes in ("nan", "-1", "inf"):
        result = CliRunner().invoke(train_app, ["--output", str(tmp_path / "new"), *base, "--max-minutes", minutes])
        assert result.exit_code == 2 and "--max-minutes: expected a number of minutes >= 0" in result.output
