"""Validation of a model in training through the exact bench protocol (vdsr.bench), on the runtime's PyTorch backend."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vdsr.bench.datasets import Dataset
from vdsr.bench.harness import CellResult, backend_runner, run_bench
from vdsr.errors import DatasetError
from vdsr.networks import SRCNN, VDSR
from vdsr.runtime.backends.pytorch import TorchBackend


def validate(
    model: VDSR | SRCNN, name: str, *, datasets: Sequence[Dataset], scales: Sequence[int], device: torch.device
) -> list[CellResult]:
    """PSNR/SSIM of `model` (fp32, on `device`, left in the mode it was in) per data set and scale. DatasetError
    naming the images that could not be scored."""
    was_training = model.training
    model.eval()
    try:
        with TorchBackend(model, str(device), scales=tuple(scales), precision="fp32") as backend:
            run = run_bench(datasets, scales, [backend_runner(backend, name)])
    finally:
        model.train(was_training)
    if run.failures:
        raise DatasetError(f"Validation images failed: {'; '.join(f.error for f in run.failures)}")
    return run.cells
