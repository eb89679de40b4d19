"""The crops an int8 graph's activation ranges are calibrated on: the export's calibration (vdsr.export.quantize)
and quantisation-aware training with calibrated ranges (vdsr.train.qat) read the same ones, so that training rounds
over the ranges the graph will have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vdsr.bench.datasets import Dataset, resolve_dataset
from vdsr.bench.protocol import BICUBIC, Degradation, degrade
from vdsr.errors import DatasetError
from vdsr.runtime.images import load_image

CALIBRATION_SET = "T91"  # training images: activation ranges
NOISY = Degradation("noise", 15.0)
CROP = 64  # calibration crops (ILR pixels)
CALIBRATION_EVERY = 3  # one image in 3
CANDIDATES = 6  # crops looked at per image and scale, of which the flattest and the most textured are kept


def conditions() -> tuple[Degradation, ...]:
    """The input kinds the int8 bar covers: the paper's bicubic LR, and LR with Gaussian noise."""
    return BICUBIC, NOISY


def calibration_batches(data_dir: Path | None, scales: list[float]) -> list[NDArray[np.float32]]:
    """calibration_crops of CALIBRATION_SET as found in `data_dir`."""
    return calibration_crops(resolve_dataset(CALIBRATION_SET, data_dir), scales)


def calibration_crops(
    dataset: Dataset, scales: list[float], *, every: int = CALIBRATION_EVERY, batch: int = 8, seed: int = 0
) -> list[NDArray[np.float32]]:
    """ILR crops (CROP x CROP) of every `every`-th image of `dataset` at every scale: of CANDIDATES random crops, the
    flattest and the most textured, each clean and noisy; stacked `batch` at a time as (N, 1, CROP, CROP)."""
    rng = np.random.default_rng(seed)
    crops = []
    for index, path in enumerate(dataset.files[::every]):
        color = load_image(path).color
        for scale in scales:
            for kind in conditions():
                ilr = degrade(color, scale, kind, seed=seed + index).ilr().astype(np.float32)
                if min(ilr.shape[:2]) < CROP:
                    continue
                tops = rng.integers(0, ilr.shape[0] - CROP + 1, CANDIDATES)
                lefts = rng.integers(0, ilr.shape[1] - CROP + 1, CANDIDATES)
                found = [ilr[t : t + CROP, x : x + CROP] for t, x in zip(tops, lefts, strict=True)]
                found.sort(key=lambda crop: float(crop.std()))
                crops += [found[0], found[-1]]
    if not crops:
        raise DatasetError(f"{dataset.name}: no image of at least {CROP}x{CROP} pixels at any scale to calibrate on")
    return [np.stack(crops[i : i + batch])[:, None] for i in range(0, len(crops), batch)]
