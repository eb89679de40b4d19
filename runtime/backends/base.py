"""The one interface every inference backend implements (ONNX Runtime, PyTorch, TensorRT).

A backend runs one model on (N, 1, H, W) ILR luminance in [0, 1] and returns the super-resolved luminance, same
shape, float32. It says what callers need to drive it: its name, precision and device; whether it takes numpy arrays
or torch tensors on its device (`arrays`); the model's halo and trained scales; the smallest and largest input it
accepts (N x H x W); its preferred batch and tile. It holds sessions, engines or device memory, so it is a context
manager: `with open_backend(spec) as backend:` releases them (or call close()). Its facts come from the model it
runs (vdsr.model.Model) and the spec it was opened from (vdsr.runtime.backends.specs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from vdsr.runtime.backends.specs import CPU_BATCH, DEFAULT_TILE, Shape

ANY_SIZE: Shape = (1, 1, 1)


def check_batch(batch: Any) -> None:
    if batch.ndim != 4 or batch.shape[1] != 1:
        raise ValueError(f"Expected a (N, 1, H, W) batch, got shape {tuple(batch.shape)}")


class Backend(ABC):
    """See the module docstring. Subclasses set the attributes in __init__ and implement run() and close()."""

    name: str  # onnxruntime-cpu, onnxruntime-cuda, torch-cpu, torch-cuda, tensorrt
    precision: str  # fp32, fp16, int8
    device: str  # cpu, cuda, cuda:1 ...
    arrays: Literal["numpy", "torch"]  # what run() takes and returns: numpy arrays, or torch tensors on `device`
    architecture: str  # vdsr or srcnn
    halo: int  # the model's receptive-field radius: tiles must overlap by this much
    scales: list[float]  # the scales the model was trained for (empty: not recorded)
    min_input: Shape = ANY_SIZE
    max_input: Shape | None = None  # None: any size
    preferred_batch: int = CPU_BATCH
    preferred_tile: int = DEFAULT_TILE
    window_bytes_per_pixel: int | None = None  # working memory per window pixel where measured: sizes CPU tiles

    @abstractmethod
    def run(self, batch: Any) -> Any:
        """The network on an (N, 1, H, W) batch in this backend's arrays (numpy: any float dtype; torch: float32 on
        `device`); float32 result, same shape. Raises BackendError when the engine fails."""

    def __call__(self, batch: NDArray[np.floating]) -> NDArray[np.float32]:
        """The network on a host numpy batch (any float dtype), whatever arrays the backend runs on."""
        check_batch(batch)
        if self.arrays == "numpy":  # cast once, to the model's own input type (fp16 graphs take fp16)
            return np.asarray(self.run(batch), dtype=np.float32)
        import torch  # a torch backend: torch is already loaded

        host = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        result: NDArray[np.float32] = self.run(host.to(self.device)).cpu().numpy()
        return result

    @abstractmethod
    def close(self) -> None:
        """Release sessions, engines and device memory; the backend cannot run afterwards."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
