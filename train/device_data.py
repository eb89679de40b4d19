"""Training batches made on the device each step (`vdsr-train --data device`, the GPU recipe): no patch cache, no
Python loop per patch. The training images' ground-truth Y (the protocol's, vdsr.bench.protocol) sit on the device
as one flat uint8 array; a step's crops are one gather from it (random images weighted by their area, random
corners), each flipped and transposed at random (the 8 rotations and reflections), and the protocol's degradation
(MATLAB bicubic down by the scale, then up) is two matrix products per side with vdsr.runtime.resize's weights. The
batch mixes the training scales in equal parts. Each step's batch is a pure function of (seed, step), as the patch
set's is (vdsr.train.data.batch_for_step), so a resumed run sees the batches a straight run would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vdsr.bench.datasets import Dataset
from vdsr.bench.protocol import ground_truth_y
from vdsr.errors import UsageError
from vdsr.runtime.images import load_image
from vdsr.runtime.resize_torch import resize_matrix
from vdsr.train.data import VARIANTS, Mix, patch_key


def dihedral(patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each square patch (B, P, P) flipped and transposed at random: the 8 rotations and reflections."""
    masks = torch.rand((3, patches.shape[0], 1, 1), generator=generator, device=patches.device) < 0.5
    patches = torch.where(masks[0], patches.flip(-1), patches)
    patches = torch.where(masks[1], patches.flip(-2), patches)
    return torch.where(masks[2], patches.transpose(-1, -2), patches)


class DeviceBatches:
    """Random (ILR, HR) batches of `patch` x `patch` crops at `scales`, made on `device` from the images of
    `datasets`; `key` names the images and settings (a checkpoint of other data is refused)."""

    def __init__(
        self, datasets: Sequence[Dataset], scales: tuple[float, ...], *, patch: int, device: torch.device, seed: int
    ) -> None:
        if any(not float(s).is_integer() or patch % int(s) for s in scales):
            raise UsageError(
                f"--data device: every scale must be an integer dividing the patch size ({patch}), got "
                f"{', '.join(f'{s:g}' for s in scales)}"
            )
        files = [f for d in datasets for f in d.files]
        planes = [ground_truth_y(load_image(path).color, 1).astype(np.uint8) for path in files]
        shapes = np.array([p.shape for p in planes], dtype=np.int64).reshape(-1, 2)
        offsets = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])[:-1]])
        index = np.column_stack([offsets, shapes])[(shapes[:, 0] >= patch) & (shapes[:, 1] >= patch)]
        if not len(index):
            raise UsageError(f"--data device: no training image of at least {patch}x{patch} pixels")
        self.patch, self.device, self.seed, self.scales = patch, device, seed, tuple(int(s) for s in scales)
        self.key = patch_key(files, Mix(scales=scales), patch, stride=patch) + "-device"
        self.flat = torch.from_numpy(np.concatenate([p.ravel() for p in planes])).to(device)
        self.index = torch.from_numpy(index).to(device)
        area = (self.index[:, 1] - patch + 1) * (self.index[:, 2] - patch + 1)
        self.weights = area.double() / area.sum()
        self.crops = int((shapes[:, 0] // patch * (shapes[:, 1] // patch)).sum())  # an epoch: every crop's place
        self.grid = torch.arange(patch, device=device)
        self.matrices = {
            s: (
                torch.from_numpy(resize_matrix(patch, patch // s, 1 / s)).float().to(device),
                torch.from_numpy(resize_matrix(patch // s, patch, s)).float().to(device),
            )
            for s in self.scales
        }

    def steps_per_epoch(self, batch_size: int) -> int:
        """An epoch as the patch set's: as many (crop, variant) pairs as the images hold non-overlapping crops."""
        return max(1, self.crops * VARIANTS // batch_size)

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (ILR, HR) batch of `step`, (size, 1, P, P) each on the device."""
        generator = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + step)
        rows = self.index[torch.multinomial(self.weights, size, replacement=True, generator=generator)]
        offset, height, width = rows[:, 0], rows[:, 1], rows[:, 2]
        top = (torch.rand(size, generator=generator, device=self.device) * (height - self.patch + 1)).long()
        left = (torch.rand(size, generator=generator, device=self.device) * (width - self.patch + 1)).long()
        where = (
            offset[:, None, None]
            + (top[:, None, None] + self.grid[None, :, None]) * width[:, None, None]
            + left[:, None, None]
            + self.grid[None, None, :]
        )
        hr = dihedral(self.flat[where].float() / 255, generator)
        parts = hr.chunk(len(self.scales))
        ilr = torch.cat(
            [
                up @ (down @ part @ down.T) @ up.T
                for part, (down, up) in zip(parts, (self.matrices[s] for s in self.scales), strict=False)
            ]
        )
        return ilr[:, None], hr[:, None]
