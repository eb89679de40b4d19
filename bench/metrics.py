"""PSNR and SSIM on luminance, as the VDSR paper's evaluation scripts compute them.

SSIM is Wang, Bovik, Sheikh & Simoncelli (IEEE TIP 2004), their `ssim_index.m`: an 11x11 Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03, L = peak, statistics over 'valid' window positions only, the mean of the SSIM map.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def shave(image: NDArray[np.generic], border: int) -> NDArray[np.generic]:
    """Drop `border` pixels from every edge (the paper shaves `scale` pixels before scoring)."""
    if border < 0 or 2 * border >= min(image.shape[:2]):
        raise ValueError(f"Cannot shave {border} px from every edge of an image of shape {image.shape}")
    return image[border : image.shape[0] - border, border : image.shape[1] - border]


def _pair(
    a: NDArray[np.generic], b: NDArray[np.generic], border: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"Expected two 2-D images of the same shape, got {a.shape} and {b.shape}")
    return shave(a, border).astype(np.float64), shave(b, border).astype(np.float64)


def psnr(a: NDArray[np.generic], b: NDArray[np.generic], *, peak: float = 255.0, border: int = 0) -> float:
    """10 log10(peak^2 / MSE) after shaving `border` px; inf for identical images."""
    x, y = _pair(a, b, border)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> NDArray[np.float64]:
    """1-D normalised Gaussian; its outer product is MATLAB's fspecial('gaussian', size, sigma)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    window: NDArray[np.float64] = g / g.sum()
    return window


def _filter_valid(image: NDArray[np.float64], g: NDArray[np.float64]) -> NDArray[np.float64]:
    """Separable correlation with window g on both axes, 'valid' positions only (MATLAB filter2(w, x, 'valid'))."""
    n = len(g)
    rows = image.shape[0] - n + 1
    cols = image.shape[1] - n + 1
    vertical: NDArray[np.float64] = g[0] * image[0:rows]
    for k in range(1, n):
        vertical += g[k] * image[k : k + rows]
    out: NDArray[np.float64] = g[0] * vertical[:, 0:cols]
    for k in range(1, n):
        out += g[k] * vertical[:, k : k + cols]
    return out


def ssim(a: NDArray[np.generic], b: NDArray[np.generic], *, peak: float = 255.0, border: int = 0) -> float:
    """Mean SSIM after shaving `border` px; images must be at least 11x11 after shaving."""
    x, y = _pair(a, b, border)
    if min(x.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after shaving, got {x.shape}")
    g = gaussian_window()
    c1 = (SSIM_K1 * peak) ** 2
    c2 = (SSIM_K2 * peak) ** 2
    mu_x = _filter_valid(x, g)
    mu_y = _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x * mu_x
    var_y = _filter_valid(y * y, g) - mu_y * mu_y
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())
