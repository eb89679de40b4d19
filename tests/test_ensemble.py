"""The geometric self-ensemble (`Upscaler(tta=True)`, `vdsr-run --tta`): the mean of the 8 flips and rotations,
exact with tiles, the same on numpy and torch backends."""

from __future__ import annotations

import numpy as np
import pytest

from vdsr import Upscaler
from vdsr.runtime.ensemble import TURNS, self_ensemble


def picture(height: int, width: int) -> np.ndarray:
    """A smooth gray picture with edges in every direction (so no turn of it is another), in [0.25, 0.75]: no result
    is clipped (the mean of clipped passes is not the clipped mean)."""
    y, x = np.mgrid[0:height, 0:width] / 7.0
    return (0.25 + (np.sin(x * 1.3 + y * 0.4) + np.cos(x * x * 0.05 - y) + 2) / 8)[..., None].astype(np.float32)


def turned(image: np.ndarray, quarter: int, *, flip: bool) -> np.ndarray:
    out = np.rot90(image, quarter, axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def back(image: np.ndarray, quarter: int, *, flip: bool) -> np.ndarray:
    return np.rot90(image[:, ::-1] if flip else image, -quarter, axes=(0, 1))


def test_the_ensemble_is_the_mean_of_the_8_turned_pictures_exact_with_tiles() -> None:
    image = picture(37, 52)  # not square: the quarter turns give windows of the other shape
    with Upscaler("srcnn", "onnxruntime-cpu", tile=1000) as plain:
        by_hand = np.mean(
            [back(plain.upscale_pixels(turned(image, q, flip=f), 2), q, flip=f) for q, f in TURNS], axis=0
        )
        alone = plain.upscale_pixels(image, 2)
    with Upscaler("srcnn", "onnxruntime-cpu", tile=1000, tta=True) as whole:
        ensemble = whole.upscale_pixels(image, 2)
    with Upscaler("srcnn", "onnxruntime-cpu", tile=24, tta=True) as tiles:  # 4 x 5 tiles, windows of two shapes
        tiled = tiles.upscale_pixels(image, 2)
    assert ensemble.shape == (74, 104, 1)
    np.testing.assert_allclose(ensemble, by_hand, atol=2e-6)
    np.testing.assert_allclose(tiled, ensemble, atol=2e-6)
    assert np.abs(ensemble - alone).max() > 1e-3  # control: the ensemble is not the plain pass


def test_the_same_ensemble_on_torch_tensors() -> None:
    pytest.importorskip("torch", reason="the torch backend is the `train` extra")
    image = picture(30, 41)
    with Upscaler("srcnn", "onnxruntime-cpu", tile=16, tta=True) as numpy_path:
        expected = numpy_path.upscale_pixels(image, 3)
    with Upscaler("srcnn", "torch-cpu", tile=16, tta=True) as torch_path:
        got = torch_path.upscale_pixels(image, 3)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_each_turn_is_undone() -> None:
    """The ensemble of a network that ignores orientation (pointwise) is that network: every turn comes back."""
    windows = np.random.default_rng(0).random((2, 1, 5, 9), dtype=np.float32)
    np.testing.assert_allclose(self_ensemble(lambda w: w * 2)(windows), windows * 2, rtol=1e-6)
    seen: list[tuple[int, ...]] = []
    self_ensemble(lambda w: seen.append(w.shape) or w)(windows)
    assert sorted(seen) == [(2, 1, 5, 9)] * 4 + [(2, 1, 9, 5)] * 4
