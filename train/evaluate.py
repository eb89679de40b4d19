"""Validation and benchmarking of a PyTorch model through the exact bench protocol (vdsr.bench)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from vdsr.bench.datasets import Dataset
from vdsr.bench.harness import CellResult, MethodRunner, run_bench
from vdsr.runtime.resize import imresize


def torch_runner(
    model: torch.nn.Module, name: str, device: torch.device, scales: Sequence[int] | None = None
) -> MethodRunner:
    """LR luminance -> MATLAB-exact bicubic ILR (numpy, float64) -> model in fp32 on `device` -> SR luminance.
    `scales`: those the model was trained for (the bench leaves out the others); None: any."""

    def upscale(lr_y: NDArray[np.floating], scale: int) -> NDArray[np.floating]:
        ilr = torch.from_numpy(imresize(lr_y, scale).astype(np.float32))[None, None].to(device)
        with torch.inference_mode():
            sr = model(ilr)
        out: NDArray[np.floating] = sr[0, 0].double().cpu().numpy()
        return out

    trained = tuple(scales) if scales is not None else None
    return MethodRunner(name=name, backend=f"torch-{device.type}", precision="fp32", upscale=upscale, scales=trained)


def validate(
    model: torch.nn.Module, name: str, datasets: Sequence[Dataset], scales: Sequence[int], device: torch.device
) -> list[CellResult]:
    was_training = model.training
    model.eval()
    try:
        run = run_bench(datasets, scales, [torch_runner(model, name, device)])
    finally:
        model.train(was_training)
    if run.failures:
        raise ValueError(f"Validation images failed: {'; '.join(f.error for f in run.failures)}")
    return run.cells
