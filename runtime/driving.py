"""Pictures' steps driven through one backend (vdsr.runtime.batching.drive) in the backend's own arrays: numpy for
ONNX Runtime, torch tensors on the device for the torch and TensorRT backends (windows cut on the host and sent
there for videos), optionally through the geometric self-ensemble (vdsr.runtime.ensemble)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import BackendError, ImageError, first_line
from vdsr.runtime.api_inputs import check_values
from vdsr.runtime.backends.base import Backend
from vdsr.runtime.batching import Failed, drive
from vdsr.runtime.ensemble import self_ensemble
from vdsr.runtime.picture import picture_steps
from vdsr.runtime.resize import output_shape_for
from vdsr.runtime.tiling import Network, Steps, window_shape


def drive_on(
    backend: Backend,
    steps: list[Steps[NDArray[Any]]],
    *,
    batch: int,
    host: bool = False,
    tta: bool = False,
    network: Network | None = None,
) -> list[NDArray[Any] | Failed]:
    """`steps` through `backend`, `batch` windows a call; `host`: windows cut on the host, sent to the device and
    back (video); `tta`: each call is the 8-way self-ensemble; `network`: run instead of `backend.run` (a service
    joining the windows of concurrent requests), on the backend's arrays. BackendError when the backend (or torch
    around it on the device: out of memory, a lost device) fails."""
    network = network or backend.run
    network = self_ensemble(network) if tta else network
    if backend.arrays == "numpy":
        return drive(steps, network, batch=batch)
    import torch  # a backend on torch tensors: torch is loaded

    def from_host(windows: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(network(torch.from_numpy(windows).to(backend.device)).cpu().numpy(), np.float32)

    try:
        if host:
            return drive(steps, from_host, batch=batch)
        return drive(steps, network, batch=batch, concat=torch.cat)
    except BackendError:
        raise
    except RuntimeError as error:
        raise BackendError(f"{backend.name} on {backend.device}: {first_line(error)}") from error


def steps_on(
    backend: Backend,
    pixels: NDArray[np.floating],
    scale: float,
    *,
    dtype: Any,
    tile: int,
    name: Path | str,
    on_band: Callable[[float], None] | None,
) -> Steps[NDArray[Any]]:
    """One picture's steps on `backend` (vdsr.runtime.picture; on the device for backends on torch tensors) in tiles
    of `tile`. ImageError naming `name`: values outside [0, 1] or not finite, or a result smaller than the
    backend's smallest input."""
    check_values(pixels, name)
    window = window_shape(output_shape_for(pixels.shape[:2], scale), tile, backend.halo)
    if window[0] < backend.min_input[1] or window[1] < backend.min_input[2]:
        low = f"{backend.min_input[2]}x{backend.min_input[1]}"
        raise ImageError(
            name, f"the result is smaller than {backend.name}'s smallest input ({low}); use another --backend"
        )
    options = {"halo": backend.halo, "tile": tile, "dtype": dtype, "name": name, "on_band": on_band}
    if backend.arrays == "torch":
        from vdsr.runtime.picture_torch import picture_steps_torch  # imports torch, which this backend has loaded

        return (yield from picture_steps_torch(pixels, scale, device=backend.device, **options))
    return (yield from picture_steps(pixels, scale, **options))
