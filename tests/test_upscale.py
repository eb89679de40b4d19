"""Colour handling around the luminance network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vdsr.runtime.picture import upscale_picture as upscale_pixels
from vdsr.runtime.resize import imresize, output_shape_for
from vdsr.scale import check_scale


def identity(batch: np.ndarray) -> np.ndarray:  # a network that returns its ILR: the result must be plain bicubic
    return batch.astype(np.float32)


def brighten(batch: np.ndarray) -> np.ndarray:  # a network that changes luminance only
    return (batch + 0.05).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("scale", [1.5, 2, 2.5, 3, 4])
def test_identity_network_gives_bicubic_of_every_channel(channels: int, scale: float) -> None:
    pixels = np.random.default_rng(channels).uniform(0.1, 0.9, (13, 17, channels)).astype(np.float32)
    out = upscale_pixels(pixels, scale, identity, halo=2, tile=8)
    assert out.shape == (*output_shape_for((13, 17), scale), channels) and out.dtype == np.float32
    expected = np.clip(imresize(pixels.astype(np.float64), scale), 0, 1)
    assert np.abs(out - expected).max() < 1e-5  # colour conversion and resize are linear: they commute


def test_gray_stays_gray_and_gray_rgb_stays_gray() -> None:
    gray = np.random.default_rng(0).uniform(0.1, 0.9, (12, 10, 1)).astype(np.float32)
    out_gray = upscale_pixels(gray, 2, brighten, halo=1, tile=8)
    out_rgb = upscale_pixels(np.repeat(gray, 3, axis=-1), 2, brighten, halo=1, tile=8)
    assert out_gray.shape[-1] == 1
    assert np.abs(out_rgb - out_rgb[..., :1]).max() < 1e-5  # R = G = B in, R = G = B out
    assert np.abs(out_rgb[..., :1] - out_gray).max() < 1e-5  # and the same as the gray path
    # +0.05 in Y (studio range) is +0.05 * 255/219 in full-range gray
    assert (
        np.abs(
            out_gray - np.clip(imresize(gray[..., 0].astype(np.float64), 2)[..., None] + 0.05 * 255 / 219, 0, 1)
        ).max()
        < 1e-5
    )


def test_alpha_is_bicubic_and_untouched_by_the_network() -> None:
    rgba = np.random.default_rng(3).uniform(0.1, 0.9, (9, 9, 4)).astype(np.float32)
    out = upscale_pixels(rgba, 3, brighten, halo=1, tile=4)
    assert np.abs(out[..., 3] - np.clip(imresize(rgba[..., 3].astype(np.float64), 3), 0, 1)).max() < 1e-5


def test_output_is_clipped() -> None:
    white = np.ones((6, 6, 3), np.float32)
    assert upscale_pixels(white, 2, brighten, halo=1).max() == 1.0


@pytest.mark.parametrize("scale", [1, 0, -1, float("nan"), float("inf"), 8.5, 100, True, "2"])
def test_bad_scales(scale: float) -> None:
    """Checked once where a scale comes in (vdsr.scale), then trusted."""
    with pytest.raises(ValueError, match="1 < scale <= 8"):
        check_scale(scale)


def test_numpy_scalars_are_scales() -> None:
    scales = check_scale(np.int64(2)), check_scale(np.float32(1.5))
    assert scales == (2.0, 1.5) and all(type(s) is float for s in scales)
    assert upscale_pixels(np.zeros((4, 4, 1), np.float32), scales[0], identity, halo=1).shape == (8, 8, 1)
    assert upscale_pixels(np.zeros((4, 4, 1), np.float32), scales[1], identity, halo=1).shape == (6, 6, 1)


def test_bad_channel_count() -> None:
    with pytest.raises(ValueError, match="C in 1..4"):
        upscale_pixels(np.zeros((4, 4, 5), np.float32), 2, identity, halo=1)


def test_non_finite_network_output_is_never_an_image() -> None:
    """A window that comes back NaN or inf fails the image; every window doing so is the backend's failure."""
    from vdsr.errors import BackendError, ImageError

    calls: list[int] = []

    def first_window_nan(batch: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.full_like(batch, np.nan) if len(calls) == 1 else batch

    pixels = np.random.default_rng(0).random((20, 20, 3)).astype(np.float32)
    with pytest.raises(ImageError, match=r"photo.png: the network's output is NaN or inf in 3 of 9 tiles"):
        upscale_pixels(pixels, 2, first_window_nan, halo=1, tile=16, name=Path("photo.png"))
    with pytest.raises(BackendError, match="NaN or inf everywhere"):
        upscale_pixels(pixels, 2, lambda b: b * np.inf, halo=1, tile=16)
