from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vdsr.runtime.resize import contributions, imresize, modcrop, output_shape_for

# MATLAB's bicubic (a = -0.5) taps for x2 enlargement at its half-pixel phase: the classic (-3, 29, 111, -9) / 128.
UP2_TAPS = np.array([-3, 29, 111, -9]) / 128
# MATLAB's antialiased kernel for x1/2: the cubic stretched by 2 and halved, sampled at +-0.5, +-1.5, +-2.5, +-3.5.
DOWN2_TAPS = np.array(
    [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]
)

sizes = st.integers(min_value=1, max_value=40)
scales = st.sampled_from([1 / 4, 1 / 3, 0.4, 1 / 2, 0.75, 1.5, 2, 2.5, 3, 4])


def loop_imresize(image: np.ndarray, out_shape: tuple[int, int], scales: tuple[float, float]) -> np.ndarray:
    """MATLAB's imresize.m written pixel by pixel (no vectorisation shared with the code under test)."""

    def along(x: np.ndarray, out_len: int, scale: float) -> np.ndarray:  # resize axis 0
        n = x.shape[0]
        out = np.zeros((out_len,) + x.shape[1:])
        for i in range(1, out_len + 1):
            u = i / scale + 0.5 * (1 - 1 / scale)
            width = 4 / min(scale, 1)
            taps = [
                (j, min(scale, 1) * cubic_kernel(min(scale, 1) * (u - j)))
                for j in range(int(np.floor(u - width / 2)), int(np.floor(u - width / 2)) + int(np.ceil(width)) + 2)
            ]
            total = sum(w for _, w in taps)
            for j, w in taps:
                k = j - 1  # 0-based, then mirror: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...
                k = k % (2 * n)
                k = k if k < n else 2 * n - 1 - k
                out[i - 1] += (w / total) * x[k]
        return out

    first, second = (0, 1) if scales[0] <= scales[1] else (1, 0)
    result = image.astype(np.float64)
    for axis in (first, second):
        result = np.moveaxis(along(np.moveaxis(result, axis, 0), out_shape[axis], scales[axis]), 0, axis)
    return result


def cubic_kernel(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (5, 7), (16, 11)])
@pytest.mark.parametrize("scale", [0.3, 1 / 3, 0.5, 0.75, 1.5, 2, 2.5, 3.7])
def test_matches_pixel_by_pixel_reference(shape: tuple[int, int], scale: float) -> None:
    image = np.random.default_rng(shape[0] * 7 + shape[1]).random(shape) * 255
    expected = loop_imresize(image, output_shape_for(shape, scale), (scale, scale))
    assert np.abs(imresize(image, scale) - expected).max() < 1e-10


@pytest.mark.parametrize("out_shape", [(1, 1), (3, 20), (20, 3), (11, 8)])
def test_output_shape_matches_pixel_by_pixel_reference(out_shape: tuple[int, int]) -> None:
    image = np.random.default_rng(5).random((9, 13)) * 255
    scales = (out_shape[0] / 9, out_shape[1] / 13)
    assert np.abs(imresize(image, output_shape=out_shape) - loop_imresize(image, out_shape, scales)).max() < 1e-10


def test_x2_interior_weights_are_matlabs() -> None:
    weights, _ = contributions(16, 32, 2.0)
    # 1-based output 11 samples u = 11/2 + 0.25 = 5.75: inputs 4..7 at distances 1.75, 0.75, -0.25, -1.25;
    # output 12 samples u = 6.25: inputs 5..8 at distances 1.25, 0.25, -0.75, -1.75, the mirrored taps.
    assert np.allclose(weights[10], UP2_TAPS, atol=1e-15)
    assert np.allclose(weights[11], UP2_TAPS[::-1], atol=1e-15)


def test_x2_matches_convolution_of_symmetric_padding(rng: np.random.Generator) -> None:
    row = rng.random(13)
    padded = np.pad(row, 2, mode="symmetric")  # MATLAB pads by mirroring, edge sample repeated
    expected = np.empty(26)
    for k in range(13):  # output 2k sits 0.25 px left of input k, output 2k+1 0.25 px right of it
        expected[2 * k] = padded[k : k + 4] @ UP2_TAPS
        expected[2 * k + 1] = padded[k + 1 : k + 5] @ UP2_TAPS[::-1]
    assert np.allclose(imresize(row[None, :], 2)[0], expected, atol=1e-14)


def test_half_matches_antialiased_convolution(rng: np.random.Generator) -> None:
    row = rng.random(20)
    padded = np.pad(row, 3, mode="symmetric")
    expected = np.array([padded[2 * k : 2 * k + 8] @ DOWN2_TAPS for k in range(10)])
    assert np.allclose(imresize(row[None, :], 0.5)[0], expected, atol=1e-14)


@settings(max_examples=60, deadline=None)
@given(h=sizes, w=sizes, scale=scales, value=st.floats(-10, 300))
def test_constant_image_stays_constant(h: int, w: int, scale: float, value: float) -> None:
    out = imresize(np.full((h, w), value), scale)
    assert out.shape == output_shape_for((h, w), scale)
    assert np.allclose(out, value, rtol=0, atol=1e-9 * max(1.0, abs(value)))


@settings(max_examples=30, deadline=None)
@given(h=sizes, w=sizes, channels=st.sampled_from([None, 1, 3, 4]))
def test_scale_one_is_identity(h: int, w: int, channels: int | None) -> None:
    shape = (h, w) if channels is None else (h, w, channels)
    image = np.random.default_rng(h * 100 + w).random(shape)
    assert np.array_equal(imresize(image, 1), image)


def test_downscale_of_upscale_of_smooth_image_stays_close() -> None:
    y, x = np.mgrid[0:48, 0:64]
    smooth = np.sin(x / 7.0) * np.cos(y / 9.0) + 0.1 * x / 64
    for scale in (2, 3, 4, 2.5):
        back = imresize(imresize(smooth, scale), output_shape=smooth.shape)
        assert np.abs(back - smooth)[4:-4, 4:-4].max() < 2e-3, scale


@pytest.mark.parametrize(
    ("shape", "scale", "expected"),
    [
        ((255, 255), 1 / 3, (85, 85)),
        ((17, 33), 2.5, (43, 83)),  # ceil(42.5), ceil(82.5)
        ((5, 7), 0.5, (3, 4)),
        ((7, 5), 1 / 3, (3, 2)),
        ((1, 1), 4, (4, 4)),
        ((3, 9), 1.5, (5, 14)),
        ((512, 512), 0.25, (128, 128)),
    ],
)
def test_output_shape_follows_matlab(shape: tuple[int, int], scale: float, expected: tuple[int, int]) -> None:
    assert imresize(np.zeros(shape), scale).shape == expected


def test_output_shape_argument() -> None:
    out = imresize(np.ones((10, 20, 3)), output_shape=(7, 41))
    assert out.shape == (7, 41, 3)
    assert np.allclose(out, 1)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(2, 30), w=st.integers(2, 30), scale=scales)
def test_float32_agrees_with_float64(h: int, w: int, scale: float) -> None:
    image = np.random.default_rng(h * 31 + w).random((h, w))
    f64 = imresize(image, scale)
    f32 = imresize(image.astype(np.float32), scale, dtype=np.float32)
    assert f32.dtype == np.float32 and f64.dtype == np.float64
    assert np.abs(f32 - f64).max() < 1e-5


def test_channels_are_resized_independently(rng: np.random.Generator) -> None:
    image = rng.random((9, 11, 3))
    together = imresize(image, 1 / 3)
    for c in range(3):
        assert np.allclose(together[..., c], imresize(image[..., c], 1 / 3), atol=1e-15)


@pytest.mark.parametrize("scale", [0, -1, float("nan"), float("inf")])
def test_bad_scale_is_rejected(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        imresize(np.zeros((4, 4)), scale)


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        imresize(np.zeros((0, 4)), 2)
    with pytest.raises(ValueError, match="shape"):
        imresize(np.zeros(4), 2)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(np.zeros((4, 4)), 2, output_shape=(8, 8))


def test_bad_dtype_and_output_shape_are_rejected() -> None:
    with pytest.raises(ValueError, match="floating-point dtype"):
        imresize(np.ones((4, 4)), 2, dtype=np.uint8)
    with pytest.raises(ValueError, match="integers >= 1"):
        imresize(np.ones((4, 4)), output_shape=(7.9, 3.2))  # type: ignore[arg-type]


def test_modcrop() -> None:
    assert modcrop(np.zeros((481, 321, 3)), 3).shape == (480, 321, 3)
    assert modcrop(np.zeros((481, 321)), 4).shape == (480, 320)


@pytest.mark.parametrize("shape,scale", [((13, 17), 2), ((9, 4), 3), ((1, 7), 4), ((20, 11), 2.5), ((16, 24), 0.5)])
def test_torch_resize_equals_numpy(shape: tuple[int, int], scale: float) -> None:
    """The device-side ILR (two matrix products) equals the numpy imresize: float64 to 1e-12, float32 to 1e-5."""
    import torch

    from vdsr.runtime.resize_torch import imresize_torch

    image = np.random.default_rng(0).random(shape)
    expected = imresize(image, scale)
    assert np.abs(imresize_torch(torch.from_numpy(image), scale).numpy() - expected).max() < 1e-12
    batch = torch.from_numpy(np.stack([image, 1 - image]).astype(np.float32))[:, None]  # (N, 1, H, W)
    out = imresize_torch(batch, scale)
    assert out.shape == (2, 1, *expected.shape) and np.abs(out[0, 0].numpy() - expected).max() < 1e-5
    assert np.abs(out[1, 0].numpy() - imresize(1 - image, scale)).max() < 1e-5


@pytest.mark.parametrize(("length", "scale"), [(40, 2.0), (33, 3.0), (9, 0.5), (1, 4.0)])
def test_resize_rows_is_the_full_matrix_band(length: int, scale: float) -> None:
    """A band's matrix covers just the inputs it reads, and equals the same rows of the whole resize matrix."""
    from vdsr.runtime.resize import contributions, output_shape_for
    from vdsr.runtime.resize_torch import resize_matrix, resize_rows

    out_length = output_shape_for((length, length), scale)[0]
    full = resize_matrix(length, out_length, scale)
    for start, stop in ((0, out_length), (0, 1), (out_length // 3, out_length // 2 + 1), (out_length - 1, out_length)):
        weights, source = contributions(length, out_length, scale)
        band, first = resize_rows(weights, source, start=start, stop=stop)
        assert np.array_equal(full[start:stop, first : first + band.shape[1]], band)
        assert not full[start:stop, :first].any() and not full[start:stop, first + band.shape[1] :].any()
        assert band.shape[1] <= (stop - start) / scale + weights.shape[1] + 1  # the band's inputs, not the image's
