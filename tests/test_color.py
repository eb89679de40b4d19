from __future__ import annotations

import numpy as np
import pytest

from vdsr.runtime.color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb


def test_reference_points_of_bt601_studio_range() -> None:
    black, white = rgb_to_ycbcr(np.array([[0.0, 0, 0], [255, 255, 255]]), peak=255)
    assert np.allclose(black, [16, 128, 128]) and np.allclose(white, [235, 128, 128])
    red = rgb_to_ycbcr(np.array([255.0, 0, 0]), peak=255)
    assert np.allclose(red, [16 + 65.481, 128 - 37.797, 128 + 112.0])


def test_round_trip_on_both_scales(rng: np.random.Generator) -> None:
    rgb = rng.random((16, 16, 3))
    assert np.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-12)
    assert np.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb * 255, peak=255), peak=255), rgb * 255, atol=1e-9)


def test_y_alone_equals_first_channel_and_scales_with_peak(rng: np.random.Generator) -> None:
    rgb = rng.random((5, 7, 3))
    assert np.allclose(rgb_to_y(rgb), rgb_to_ycbcr(rgb)[..., 0], atol=1e-15)
    assert np.allclose(rgb_to_y(rgb * 255, peak=255), rgb_to_y(rgb) * 255, atol=1e-12)


def test_wrong_channel_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="3 channels"):
        rgb_to_ycbcr(np.zeros((4, 4, 4)))
