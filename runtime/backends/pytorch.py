"""PyTorch: safetensors weights (or a module in memory) as fp32 eager on the CPU, fp16 channels_last CUDA graphs on a
GPU. Importing this module imports torch: backend selection loads it only when this backend is tried."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from vdsr.errors import BackendError, UsageError, first_line
from vdsr.networks import SRCNN, VDSR, architecture_of
from vdsr.runtime.backends.base import Backend, check_batch
from vdsr.runtime.backends.specs import CPU_BATCH, GPU_BATCH
from vdsr.weights import load_weights


class TorchBackend(Backend):
    """`weights`: a .safetensors path, or a VDSR/SRCNN module already in memory (trained for `scales`), which is
    moved to `device` in its precision as it is (a model in training keeps training afterwards in fp32). precision:
    auto (fp16 on CUDA, fp32 on the CPU), fp32 or fp16 (CUDA only). fp16 runs channels_last and replays one CUDA graph
    per input shape."""

    MAX_GRAPHS = 16  # one CUDA graph per input shape; tiles share a shape, so few are needed
    arrays: Literal["numpy", "torch"] = "torch"

    def __init__(
        self,
        weights: Path | VDSR | SRCNN,
        device: str = "cpu",
        *,
        scales: tuple[float, ...] = (),
        precision: str = "auto",
    ) -> None:
        model, self.scales = load_weights(weights) if isinstance(weights, Path) else (weights, list(scales))
        torch_device = torch.device(device)
        cuda = torch_device.type == "cuda"
        self.precision = ("fp16" if cuda else "fp32") if precision == "auto" else precision
        if self.precision not in ("fp32", "fp16") or (self.precision == "fp16" and not cuda):
            raise UsageError(f"The PyTorch backend runs fp32, or fp16 on CUDA; not {precision} on {device}")
        self.device = str(torch_device)
        self.name = f"torch-{torch_device.type}"
        self.preferred_batch = GPU_BATCH if cuda else CPU_BATCH
        self.halo = model.halo
        self.architecture = architecture_of(model)
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.model: torch.nn.Module | None = model.to(device=torch_device, dtype=self.dtype)
        self.graphed = self.precision == "fp16"
        if self.graphed:  # Module.to takes memory_format, but torch's stubs do not say so
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}  # shape -> (graph, static input, static output)
        self.pool = torch.cuda.graph_pool_handle() if self.graphed else None  # one memory pool for all the graphs

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a (N, 1, H, W) float32 tensor on this backend's device; float32 result on the device."""
        check_batch(x)
        if self.model is None:
            raise BackendError(f"{self.name}: the backend is closed")
        try:
            with torch.inference_mode():
                if not self.graphed:
                    out: torch.Tensor = self.model(x.to(self.dtype))
                    return out.float()
                x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
                return self._replay(self.model, x).float()
        except RuntimeError as error:  # out of memory, a lost device, a kernel failure: every later call would fail
            cause = first_line(error)
            raise BackendError(f"PyTorch failed on a batch of shape {tuple(x.shape)}: {cause}") from error

    def _replay(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run through a CUDA graph captured for x's shape (kernel launches replayed at once), eager past MAX_GRAPHS."""
        key = tuple(x.shape)
        if key not in self.graphs:
            if len(self.graphs) >= self.MAX_GRAPHS:
                out: torch.Tensor = model(x)
                return out
            static_in = x.clone()
            side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # warm up on a side stream before capture, as torch.cuda.graphs requires
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                model(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                static_out = model(static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        replayed: torch.Tensor = static_out
        return replayed

    def close(self) -> None:
        captured = bool(self.graphs)
        self.graphs.clear()
        self.model, self.pool = None, None
        if captured:
            torch.cuda.empty_cache()  # give the graphs' memory pool back to the driver
