"""Pictures' steps driven through one backend (vdsr.runtime.batching.drive) in the backend's own arrays: numpy for
ONNX Runtime, torch tensors on the device for the torch and TensorRT backends (windows cut on the host and sent
there for videos), optionally through the geometric self-ensemble (vdsr.runtime.ensemble)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import BackendError, first_line
from vdsr.runtime.backends.base import Backend
from vdsr.runtime.batching import Failed, drive
from vdsr.runtime.ensemble import self_ensemble
from vdsr.runtime.tiling import Steps


def drive_on(
    backend: Backend, steps: list[Steps[NDArray[Any]]], *, batch: int, host: bool = False, tta: bool = False
) -> list[NDArray[Any] | Failed]:
    """`steps` through `backend`, `batch` windows a call; `host`: windows cut on the host, sent to the device and
    back (video); `tta`: each call is the 8-way self-ensemble. BackendError when the backend (or torch around it on
    the device: out of memory, a lost device) fails."""
    network = self_ensemble(backend.run) if tta else backend.run
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
