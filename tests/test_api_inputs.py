"""What `vdsr.Upscaler` takes and refuses, found by a review of the Python API: every refusal a vdsr error before
any work, transparency kept in every PIL mode that has it, model auto naming list items by their place in the list."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vdsr import Upscaler
from vdsr.errors import ImageError, UsageError
from vdsr.runtime.images import load_image_object


class PathLikeOnly:
    """An os.PathLike that is not a pathlib path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)


def jpeg_image(shape: tuple[int, int, int]) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, np.uint8)).save(buffer, "JPEG")
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_transparency_of_a_quantized_rgba_and_of_a_keyed_1_bit_image_is_kept() -> None:
    """RGBA.quantize() gives a P image with an RGBA palette (no "transparency" key), and a 1-bit PNG can carry a
    colour key: both came back opaque."""
    rgba = np.zeros((10, 8, 4), np.uint8)
    rgba[:5, :, 3] = 255
    quantized = load_image_object(Image.fromarray(rgba).quantize(16), "q")
    assert quantized.pixels.shape == (10, 8, 4) and set(np.unique(quantized.pixels[..., 3])) == {0.0, 1.0}
    buffer = io.BytesIO()
    Image.fromarray(np.array([[0, 255] * 2] * 4, np.uint8)).convert("1").save(buffer, "PNG", transparency=0)
    keyed = load_image_object(Image.open(buffer), "b")
    assert keyed.pixels.shape == (4, 4, 2)
    np.testing.assert_array_equal(keyed.pixels[..., 1], keyed.pixels[..., 0])  # black is the transparent one
    opaque = load_image_object(Image.fromarray(rgba[..., :3]).quantize(4), "p")  # an RGB palette: no alpha
    assert opaque.pixels.shape == (10, 8, 3)


def test_every_list_item_is_checked_before_any_work(tiny_model: dict[str, Path]) -> None:
    with Upscaler(tiny_model["onnx"], "onnxruntime-cpu") as upscaler:
        calls: list[int] = []
        run = upscaler.backend.run

        def counted(windows: Any) -> Any:
            calls.append(1)
            return run(windows)

        upscaler.backend.run = counted  # type: ignore[method-assign]
        good = np.zeros((8, 8), np.uint8)
        bad = {
            "float pixel values must lie in \\[0, 1\\], got 2 to 2": np.full((8, 8), 2.0),
            "the 200x200 result is over the limit of 10000 output pixels": np.zeros((100, 100, 3), np.uint8),
            "expected a non-empty image, got 0x0": Image.new("L", (0, 0)),
            "expected a non-empty \\(H, W\\) .* got shape \\(0, 5\\)": np.zeros((0, 5), np.uint8),
            "expected uint8, uint16 or float pixels, got bool": np.zeros((8, 8), bool),
            "expected uint8, uint16 or float pixels, got object": np.empty((4, 4), object),
        }
        for cause, item in bad.items():
            with pytest.raises((ImageError, UsageError), match=f"<image 2>: {cause}"):
                upscaler.upscale([good, good[:4], item, good], 2, max_output_pixels=10_000)
            assert not calls, cause
        with pytest.raises(UsageError, match="not an image array"):
            upscaler.upscale([[0.0, 1.0], [1.0]], 2)  # type: ignore[arg-type]
        assert upscaler.upscale([good, good], 2)[1].shape == (16, 16) and calls


def test_a_pil_image_over_the_limit_is_refused_before_it_is_converted(tiny_model: dict[str, Path]) -> None:
    import tracemalloc

    with Upscaler(tiny_model["onnx"], "onnxruntime-cpu") as upscaler:
        tracemalloc.start()
        try:
            with pytest.raises(ImageError, match="over the limit of 100 output pixels"):
                upscaler.upscale(Image.new("RGB", (1000, 1000)), 2, max_output_pixels=100)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000  # a float copy of the image would be 12 MB


def test_api_arguments_that_cannot_be_used_are_usage_errors(tiny_model: dict[str, Path]) -> None:
    image = np.zeros((8, 8), np.uint8)
    with pytest.raises(UsageError, match="Expected a model name or path, got int 123"):
        Upscaler(123)  # type: ignore[arg-type]
    with Upscaler(PathLikeOnly(tiny_model["onnx"]), "onnxruntime-cpu") as given:  # type: ignore[arg-type]
        assert given.model.name == tiny_model["onnx"].stem  # any os.PathLike, as pathlib takes it
    with Upscaler(tiny_model["onnx"], "onnxruntime-cpu") as upscaler:
        for limit in (None, "100", float("nan"), True, 0):
            with pytest.raises(UsageError, match="max_output_pixels"):
                upscaler.upscale(image, 2, max_output_pixels=limit)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="got a very large integer"):
            upscaler.upscale(image, 10**400)
        for pixels, cause in (
            (np.zeros((8, 8), np.float32), "Expected \\(H, W, C\\) pixels"),
            (np.zeros((8, 8, 5), np.float32), "Expected \\(H, W, C\\) pixels"),
            (np.zeros((8, 8, 3), np.uint8), "Expected float pixels in \\[0, 1\\], got uint8"),
            ([[0.5]], "Expected \\(H, W, C\\) pixels as a numpy array, got list"),
        ):
            with pytest.raises(UsageError, match=cause):
                upscaler.upscale_pixels(pixels, 2)  # type: ignore[arg-type]
        with pytest.raises(ImageError, match=r"got 0 to 1.0000000000000002 \("):  # not "got 0 to 1"
            upscaler.upscale(np.array([[0.0, 1.0000000000000002]]), 2)


def test_model_auto_names_list_items_by_their_place_and_takes_int8() -> None:
    lines: list[str] = []
    with Upscaler(precision="int8", log=lines.append) as upscaler:  # vdsr_real has no int8 graph: auto for it
        assert any("vdsr_real has no int8 graph" in line for line in lines)
        photo, clean = jpeg_image((10, 12, 3)), np.zeros((10, 12, 3), np.uint8)
        with pytest.raises(ImageError, match="<image 2>: float pixel values"):
            upscaler.upscale([photo, clean, np.full((8, 8), 2.0)], 2)
        bands: list[float] = []
        upscaler.upscale_pixels(np.zeros((9, 9, 3), np.float32), 1.5, on_band=bands.append)  # to vdsr_real
        assert bands and bands[-1] == 1.0
