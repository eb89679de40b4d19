"""The VDSR paper's evaluation protocol for one ground-truth image (Kim, Lee & Lee, CVPR 2016, section 4, and the
MATLAB scripts it was evaluated with), and its degradation, which the training data, the int8 calibration and
validation use too:

1. modcrop the HR image to a multiple of the scale (a scale between integers, 2.5 = 5/2: of its numerator, 5);
2. ground-truth Y: BT.601 for RGB images, rounded to an integer as MATLAB's rgb2ycbcr does for uint8 input;
   the gray value itself for single-channel images (MATLAB's scripts only call rgb2ycbcr on 3-channel images);
3. LR = imresize(Y, 1/s), ILR = imresize(LR, s), MATLAB bicubic, kept in float64 (no rounding);
4. the method's output on Y/255 is clipped to [0, 1] and scaled by 255 (not rounded);
5. PSNR and SSIM on Y after shaving s pixels from every border (ceil(s) between integers).

`Degradation` adds real-world small images (JPEG-compressed, noisy) beside the paper's; the default is the paper's.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vdsr.bench.metrics import SSIM_WINDOW, psnr, shave, ssim
from vdsr.errors import UsageError
from vdsr.runtime.color import rgb_to_y
from vdsr.runtime.resize import imresize, modcrop


def crop_multiple(scale: float) -> int:
    """What HR is cropped to a multiple of, so that the LR has an integer size: the scale's numerator (2.5 = 5/2:
    5; an integer scale: itself)."""
    return Fraction(scale).limit_denominator(4).numerator


def border(scale: float) -> int:
    """The border shaved before scoring (vdsr.bench.metrics.shave), in pixels: the scale, rounded up (2.5: 3)."""
    return math.ceil(scale)


def scorable(shape: tuple[int, ...], scale: float) -> bool:
    """Whether an (H, W, ...) image can be scored at `scale`: after the crop and shaving, an SSIM window must fit."""
    multiple = crop_multiple(scale)
    return min(n - n % multiple for n in shape[:2]) - 2 * border(scale) >= SSIM_WINDOW


def flat(gt_y: NDArray[np.floating], scale: float) -> bool:
    """Whether the scored part of a ground truth (after shaving) is one value. PSNR is not defined for it: every
    method reproduces it up to floating-point error, which scores 300 dB or more and would swamp a mean."""
    part = shave(gt_y, border(scale))
    return bool(part.max() == part.min())


def round_half_away(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """MATLAB's rounding (half away from zero); numpy's np.round rounds half to even."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def ground_truth_y(color: NDArray[np.floating], scale: float) -> NDArray[np.float64]:
    """(H, W, 1) gray or (H, W, 3) RGB in [0, 1] -> integer-valued Y in 0..255, cropped to crop_multiple(scale).

    The protocol is defined on 8-bit images: 16-bit files are quantised to 8-bit levels, and alpha is not passed in
    (MATLAB's imread drops it too).
    """
    if color.ndim != 3 or color.shape[-1] not in (1, 3):
        raise ValueError(f"Expected (H, W, 1) or (H, W, 3) colour pixels, got shape {color.shape}")
    levels = np.rint(modcrop(color, crop_multiple(scale)).astype(np.float64) * 255.0)  # exact 8-bit levels again
    if levels.shape[-1] == 1:
        return levels[..., 0]
    return round_half_away(rgb_to_y(levels, peak=255.0))


def low_resolution(gt_y: NDArray[np.float64], scale: float) -> NDArray[np.floating]:
    """LR luminance on 0..1, MATLAB imresize(Y, 1/s, 'bicubic') in float64, to the size HR / s (an integer: HR is
    cropped to a multiple of the scale's numerator)."""
    if float(scale).is_integer():
        return imresize(gt_y / 255.0, 1.0 / scale)
    size = (round(gt_y.shape[0] / scale), round(gt_y.shape[1] / scale))
    return imresize(gt_y / 255.0, output_shape=size)  # MATLAB's imresize(Y, [rows cols])


@dataclass(frozen=True)
class Degraded:
    """One ground-truth image through the protocol's degradation at one scale: HR -> LR -> ILR."""

    hr_y: NDArray[np.float64]  # modcropped ground-truth Y, integer values in 0..255
    lr_y: NDArray[np.floating]  # its bicubic reduction by the scale, 0..1
    scale: float

    def ilr(self) -> NDArray[np.floating]:
        """The network's input: LR enlarged back by MATLAB's bicubic, 0..1, float64, computed on each call (the
        benchmark does not call it: a method's runner makes its own ILR from lr_y, and is timed doing it)."""
        rows, cols = self.hr_y.shape[:2]
        return imresize(self.lr_y, output_shape=(rows, cols))


@dataclass(frozen=True)
class Degradation:
    """How the small image is made: the paper's `bicubic` (LR from the ground-truth Y), or a real-world small image:
    `jpeg:Q` (the LR made in RGB, rounded to 8 bits, saved as a JPEG of quality Q with Pillow's default 4:2:0 chroma,
    decoded) or `noise:SIGMA` (Gaussian noise of SIGMA levels on the 8-bit RGB LR, rounded and clipped; seeded per
    image, so runs repeat). Then the LR's Y and ILR as usual."""

    kind: str = "bicubic"
    amount: float = 0.0

    def __str__(self) -> str:
        return self.kind if self.kind == "bicubic" else f"{self.kind}:{self.amount:g}"


BICUBIC = Degradation()


def parse_degradation(text: str) -> Degradation:
    """'bicubic', 'jpeg:75' (quality 1..95) or 'noise:5' (sigma in 8-bit levels, 0..64); UsageError otherwise."""
    kind, _, value = text.strip().partition(":")
    try:
        amount = float(value) if value else 0.0
    except ValueError:
        amount = -1.0
    if kind == "bicubic" and not value:
        return BICUBIC
    if not math.isfinite(amount):
        amount = -1.0
    if kind == "jpeg" and amount == int(amount) and 1 <= amount <= 95:
        return Degradation("jpeg", amount)
    if kind == "noise" and 0 <= amount <= 64:
        return Degradation("noise", amount)
    raise UsageError(f"--degradation: expected bicubic, jpeg:Q (Q 1..95) or noise:SIGMA (0..64), got {text!r}")


def degrade(
    color: NDArray[np.floating],
    scale: float,
    degradation: Degradation | Sequence[Degradation] = BICUBIC,
    *,
    seed: int = 0,
) -> Degraded:
    """The protocol's HR -> LR for (H, W, 1) gray or (H, W, 3) RGB pixels in [0, 1] (see ground_truth_y), or a
    real-world small image: `degradation`, or several applied in turn to the 8-bit small image (noise, then JPEG, as a
    camera makes them); `seed` makes the noise."""
    hr_y = ground_truth_y(color, scale)
    steps = [d for d in ((degradation,) if isinstance(degradation, Degradation) else degradation) if d != BICUBIC]
    if not steps:
        return Degraded(hr_y=hr_y, lr_y=low_resolution(hr_y, scale), scale=scale)
    levels = np.rint(modcrop(color, crop_multiple(scale)).astype(np.float64) * 255.0)
    size = (round(levels.shape[0] / scale), round(levels.shape[1] / scale))
    reduced = np.asarray(imresize(levels / 255.0, output_shape=size), dtype=np.float64) * 255.0
    small = np.clip(round_half_away(reduced), 0, 255).astype(np.uint8)
    noise = np.random.default_rng(seed)
    for step in steps:
        if step.kind == "jpeg":
            buffer = io.BytesIO()
            image = Image.fromarray(small if small.shape[-1] == 3 else small[..., 0])
            image.save(buffer, "JPEG", quality=int(step.amount))
            small = np.asarray(Image.open(buffer)).reshape(small.shape)
        else:
            small = np.clip(round_half_away(small + noise.normal(0.0, step.amount, small.shape)), 0, 255)
            small = small.astype(np.uint8)
    lr = small.astype(np.float64)
    lr_y = lr[..., 0] if lr.shape[-1] == 1 else round_half_away(rgb_to_y(lr, peak=255.0))
    return Degraded(hr_y=hr_y, lr_y=lr_y / 255.0, scale=scale)


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float


def score(sr_y: NDArray[np.floating], gt_y: NDArray[np.float64], scale: float) -> Score:
    """sr_y is the method's output on 0..1; it is clipped and scaled to 0..255 (not rounded) before scoring, with
    border(scale) pixels shaved from every border."""
    if sr_y.shape != gt_y.shape:
        raise ValueError(f"Method output shape {sr_y.shape} differs from ground truth {gt_y.shape}")
    sr = np.clip(sr_y.astype(np.float64), 0.0, 1.0) * 255.0
    return Score(psnr=psnr(sr, gt_y, border=border(scale)), ssim=ssim(sr, gt_y, border=border(scale)))
