"""The VDSR paper's evaluation protocol for one ground-truth image (Kim, Lee & Lee, CVPR 2016, section 4, and the
MATLAB scripts it was evaluated with), and its degradation, which the training data, the int8 calibration and
validation use too:

1. modcrop the HR image to a multiple of the scale;
2. ground-truth Y: BT.601 for RGB images, rounded to an integer as MATLAB's rgb2ycbcr does for uint8 input;
   the gray value itself for single-channel images (MATLAB's scripts only call rgb2ycbcr on 3-channel images);
3. LR = imresize(Y, 1/s), ILR = imresize(LR, s), MATLAB bicubic, kept in float64 (no rounding);
4. the method's output on Y/255 is clipped to [0, 1] and scaled by 255 (not rounded);
5. PSNR and SSIM on Y after shaving s pixels from every border.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vdsr.bench.metrics import SSIM_WINDOW, psnr, ssim
from vdsr.errors import UsageError
from vdsr.runtime.color import rgb_to_y
from vdsr.runtime.resize import imresize, modcrop


def parse_scales(values: Iterable[str]) -> list[int]:
    """'2,3,4' or repeated --scale values -> [2, 3, 4]; the protocol (modcrop, shave) needs integer scales >= 2."""
    scales: list[int] = []
    for value in values:
        for part in value.split(","):
            try:
                scale = int(part.strip())
            except ValueError:
                scale = 0
            if scale < 2:
                raise UsageError(f"--scale: scale must be an integer >= 2, got {part.strip()!r}")
            if scale not in scales:
                scales.append(scale)
    return scales


def scorable(shape: tuple[int, ...], scale: int) -> bool:
    """Whether an (H, W, ...) image can be scored at `scale`: after modcrop and shaving, an SSIM window must fit."""
    return min(n - n % scale for n in shape[:2]) - 2 * scale >= SSIM_WINDOW


def round_half_away(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """MATLAB's rounding (half away from zero); numpy's np.round rounds half to even."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def ground_truth_y(color: NDArray[np.floating], scale: int) -> NDArray[np.float64]:
    """(H, W, 1) gray or (H, W, 3) RGB in [0, 1] -> modcropped integer-valued Y in 0..255.

    The protocol is defined on 8-bit images: 16-bit files are quantised to 8-bit levels, and alpha is not passed in
    (MATLAB's imread drops it too).
    """
    if color.ndim != 3 or color.shape[-1] not in (1, 3):
        raise ValueError(f"Expected (H, W, 1) or (H, W, 3) colour pixels, got shape {color.shape}")
    levels = np.rint(modcrop(color, scale).astype(np.float64) * 255.0)  # exact 8-bit levels again
    if levels.shape[-1] == 1:
        return levels[..., 0]
    return round_half_away(rgb_to_y(levels, peak=255.0))


def low_resolution(gt_y: NDArray[np.float64], scale: int) -> NDArray[np.floating]:
    """LR luminance on 0..1, MATLAB imresize(Y, 1/s, 'bicubic') in float64."""
    return imresize(gt_y / 255.0, 1.0 / scale)


@dataclass(frozen=True)
class Degraded:
    """One ground-truth image through the protocol's degradation at one scale: HR -> LR -> ILR."""

    hr_y: NDArray[np.float64]  # modcropped ground-truth Y, integer values in 0..255
    lr_y: NDArray[np.floating]  # its bicubic reduction by the scale, 0..1
    scale: int

    def ilr(self) -> NDArray[np.floating]:
        """The network's input: LR enlarged back by MATLAB's bicubic, 0..1, float64, computed on each call (the
        benchmark does not call it: a method's runner makes its own ILR from lr_y, and is timed doing it)."""
        return imresize(self.lr_y, self.scale)


def degrade(color: NDArray[np.floating], scale: int) -> Degraded:
    """The protocol's HR -> LR for (H, W, 1) gray or (H, W, 3) RGB pixels in [0, 1] (see ground_truth_y)."""
    hr_y = ground_truth_y(color, scale)
    return Degraded(hr_y=hr_y, lr_y=low_resolution(hr_y, scale), scale=scale)


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float


def score(sr_y: NDArray[np.floating], gt_y: NDArray[np.float64], scale: int) -> Score:
    """sr_y is the method's output on 0..1; it is clipped and scaled to 0..255 (not rounded) before scoring."""
    if sr_y.shape != gt_y.shape:
        raise ValueError(f"Method output shape {sr_y.shape} differs from ground truth {gt_y.shape}")
    sr = np.clip(sr_y.astype(np.float64), 0.0, 1.0) * 255.0
    return Score(psnr=psnr(sr, gt_y, border=scale), ssim=ssim(sr, gt_y, border=scale))
