from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vdsr.bench.metrics import psnr, shave, ssim
from vdsr.runtime.resize import imresize


def oracle_ssim(a: np.ndarray, b: np.ndarray) -> float:
    # scikit-image filters the whole image with reflected borders, then averages only the positions whose 11x11
    # window lies inside the image: the same 'valid' mean as Wang's ssim_index.m.
    return float(
        structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    )


def image_pair(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A natural-ish image (smooth plus texture) and a blurred, noisy copy of it, both on 0..255."""
    clean = np.clip(imresize(rng.random((shape[0] // 4 + 1, shape[1] // 4 + 1)), output_shape=shape) * 255, 0, 255)
    clean = clean + rng.normal(0, 8, shape)
    degraded = imresize(imresize(clean, 0.5), output_shape=shape) + rng.normal(0, 3, shape)
    return clean, degraded


@pytest.mark.parametrize("shape", [(11, 11), (40, 57), (128, 96)])
def test_ssim_matches_scikit_image(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    a, b = image_pair(rng, shape)
    assert ssim(a, b) == pytest.approx(oracle_ssim(a, b), abs=1e-10)


def test_ssim_with_shave_matches_oracle_on_shaved_images(rng: np.random.Generator) -> None:
    a, b = image_pair(rng, (64, 80))
    assert ssim(a, b, border=3) == pytest.approx(oracle_ssim(a[3:-3, 3:-3], b[3:-3, 3:-3]), abs=1e-10)


def test_psnr_matches_scikit_image(rng: np.random.Generator) -> None:
    a, b = image_pair(rng, (50, 60))
    expected = peak_signal_noise_ratio(a[4:-4, 4:-4], b[4:-4, 4:-4], data_range=255)
    assert psnr(a, b, border=4) == pytest.approx(expected, abs=1e-10)


def test_identical_images() -> None:
    a = np.arange(30 * 30, dtype=np.float64).reshape(30, 30) % 256
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_known_psnr() -> None:
    a = np.zeros((10, 10))
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-12)


def test_shave_and_errors() -> None:
    assert shave(np.zeros((10, 12)), 2).shape == (6, 8)
    with pytest.raises(ValueError, match="shave"):
        shave(np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((12, 12)), np.zeros((12, 12)), border=1)
