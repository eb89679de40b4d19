"""Validation of a model in training through the exact bench protocol (vdsr.bench), on the runtime's PyTorch backend."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vdsr.bench.datasets import Dataset
from vdsr.bench.harness import CellResult, backend_runner, run_bench
from vdsr.bench.protocol import BICUBIC, Degradation
from vdsr.errors import DatasetError
from vdsr.networks import SRCNN, VDSR
from vdsr.runtime.backends.pytorch import TorchBackend


def validate(
    model: VDSR | SRCNN,
    name: str,
    *,
    datasets: Sequence[Dataset],
    scales: Sequence[float],
    device: torch.device,
    degradations: Sequence[Degradation] = (BICUBIC,),
) -> list[CellResult]:
    """PSNR/SSIM of `model` (fp32, on `device`, left in the mode it was in) per data set, scale and way of making the
    small image. DatasetError naming the images that could not be scored."""
    was_training = model.training
    model.eval()
    cells: list[CellResult] = []
    try:
        with TorchBackend(model, str(device), scales=tuple(scales), precision="fp32") as backend:
            for degradation in degradations:
                run = run_bench(datasets, scales, [backend_runner(backend, name)], degradation=degradation)
                if run.failures:
                    raise DatasetError(f"Validation images failed: {'; '.join(f.error for f in run.failures)}")
                cells += run.cells
    finally:
        model.train(was_training)
    return cells
