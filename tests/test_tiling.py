"""Tiled output equals whole-image output when the halo covers the receptive field: a property, not a hope."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vdsr.networks import VDSR, VDSRConfig
from vdsr.runtime.batching import tiled
from vdsr.runtime.tiling import network_pixels, tile_windows

torch.manual_seed(0)
MODEL = VDSR(VDSRConfig(depth=5, channels=8)).eval()  # receptive-field radius 5; outputs within about [-1.3, 1.4]


def backend(batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = MODEL(torch.from_numpy(batch)).numpy()
    return out


def whole(image: np.ndarray) -> np.ndarray:
    return backend(image[None, None].astype(np.float32))[0, 0]


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 60),
    w=st.integers(1, 60),
    tile=st.sampled_from([3, 8, 16, 64]),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_tiled_equals_whole_image(h: int, w: int, tile: int, batch: int, seed: int) -> None:
    image = np.random.default_rng(seed).random((h, w), dtype=np.float32)
    assert np.abs(tiled(backend, image, tile=tile, halo=MODEL.halo, batch=batch) - whole(image)).max() <= 1e-6


@pytest.mark.parametrize("shape", [(1, 157), (157, 1), (3, 3), (200, 130)])
def test_strips_tiny_and_many_tiles(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    assert np.abs(tiled(backend, image, tile=16, halo=MODEL.halo, batch=3) - whole(image)).max() <= 1e-6


def test_too_small_halo_shows_seams() -> None:  # the control: the property test can fail
    image = np.random.default_rng(2).random((64, 64), dtype=np.float32)
    assert np.abs(tiled(backend, image, tile=16, halo=MODEL.halo - 1, batch=4) - whole(image)).max() > 1e-2


def test_windows_cover_the_axis_with_equal_windows() -> None:
    spans = tile_windows(50, 16, 5)
    assert [(c0, c1) for _, _, c0, c1 in spans] == [(0, 16), (16, 32), (32, 48), (48, 50)]
    assert {w1 - w0 for w0, w1, _, _ in spans} == {26} and spans[-1][1] == 50  # last window shifted inward
    assert tile_windows(7, 16, 5) == [(0, 7, 0, 7)]  # smaller than a tile: one window, the whole axis
    with pytest.raises(ValueError, match="tile >= 1"):
        tile_windows(10, 0, 5)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 90), w=st.integers(1, 90), tile=st.sampled_from([3, 8, 16, 64]), batch=st.integers(1, 5))
def test_network_pixels_are_the_pixels_the_network_is_given(h: int, w: int, tile: int, batch: int) -> None:
    given: list[int] = []  # what the service's admission counts as a request's work (vdsr.runtime.serve.limits)

    def counting(windows: np.ndarray) -> np.ndarray:
        given.append(windows.size)
        return windows

    tiled(counting, np.zeros((h, w), np.float32), tile=tile, halo=MODEL.halo, batch=batch)
    assert network_pixels((h, w), tile, MODEL.halo) == sum(given)


def test_backend_returning_the_wrong_shape_is_an_error() -> None:
    with pytest.raises(ValueError, match="Backend returned shape"):
        tiled(lambda b: b[:, :, :-1], np.zeros((10, 10), np.float32), tile=4, halo=2)
