"""ONNX Runtime: one of this package's ONNX graphs in a session on the CPU (the default path: no PyTorch) or CUDA."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import BackendError, ModelError, first_line
from vdsr.model import Model
from vdsr.runtime.backends.base import Backend, check_batch
from vdsr.runtime.backends.specs import CPU_BATCH, GPU_BATCH

Providers = Sequence[str | tuple[str, dict[str, object]]]  # ONNX Runtime's: names, or (name, options)
CPU_PROVIDERS: Providers = ("CPUExecutionProvider",)


def _device_id(providers: Providers) -> object:
    """The GPU index given to the CUDA provider (0 unless its options say)."""
    for provider in providers:
        if isinstance(provider, tuple) and provider[0] == "CUDAExecutionProvider":
            return provider[1].get("device_id", 0)
    return 0


def cuda_providers(gpu_index: int = 0) -> Providers:
    """CUDA on GPU `gpu_index`, with the CPU for what CUDA does not run."""
    return (("CUDAExecutionProvider", {"device_id": gpu_index}), "CPUExecutionProvider")


class OnnxRuntimeBackend(Backend):
    """An ONNX Runtime session on one of a model's graphs (`precision`: fp32, fp16 or int8; by default its only
    graph when given by path, else fp32), fp16 I/O converted here. `model`: a vdsr.model.Model, or what
    Model.load takes (a shipped name, a graph's path)."""

    arrays: Literal["numpy", "torch"] = "numpy"

    def __init__(
        self,
        model: Model | str | Path,
        precision: str | None = None,
        *,
        providers: Providers = CPU_PROVIDERS,
        threads: int = 0,
    ) -> None:
        import onnxruntime as ort  # the `cpu` or `gpu` extra
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        model = Model.load(model)
        precision = precision or ("fp32" if "fp32" in model.graphs or not model.graphs else next(iter(model.graphs)))
        if precision not in model.graphs:
            raise ModelError(f"no {precision} ONNX graph of {model.name}")
        graph = model.graphs[precision].path
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: one per physical core
        # ORT's own exception types derive from Exception directly; these are the ones loading a model raises
        load_errors = (
            OSError,
            ort_errors.Fail,
            ort_errors.InvalidArgument,
            ort_errors.NoSuchFile,
            ort_errors.InvalidGraph,
            ort_errors.InvalidProtobuf,
            ort_errors.NotImplemented,
            ort_errors.RuntimeException,
            getattr(ort_errors, "EPFail", ort_errors.Fail),
        )
        data = model.graph_bytes(precision)  # checked again as read: external data, the network it holds
        try:
            self.session: Any = ort.InferenceSession(data, options, providers=list(providers))
        except load_errors as error:
            raise ModelError(f"{graph}: ONNX Runtime cannot load it ({error})") from error
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.dtype = np.float16 if graph_input.type == "tensor(float16)" else np.float32
        # get_available_providers() lists what was compiled in, not what works: report what the session runs on
        self.providers: list[str] = list(self.session.get_providers())
        self.name = "onnxruntime-" + self.providers[0].removesuffix("ExecutionProvider").lower()
        self.device = "cpu" if self.name == "onnxruntime-cpu" else f"cuda:{_device_id(providers)}"
        self.preferred_batch = CPU_BATCH if self.device == "cpu" else GPU_BATCH
        self.precision = precision
        self.architecture = model.architecture
        self.halo, self.scales = model.halo or 0, list(model.scales)
        if self.device == "cpu":
            self.window_bytes_per_pixel = model.window_bytes_per_pixel
        self._errors = (
            ort_errors.Fail,
            ort_errors.RuntimeException,
            ort_errors.InvalidArgument,
            getattr(ort_errors, "EPFail", ort_errors.Fail),
        )

    def run(self, batch: NDArray[np.floating]) -> NDArray[np.float32]:
        check_batch(batch)
        if self.session is None:
            raise BackendError(f"{self.name}: the session is closed")
        try:
            (out,) = self.session.run(None, {self.input_name: batch.astype(self.dtype, copy=False)})
        except self._errors as error:  # ORT's exceptions derive from Exception directly
            cause = first_line(error)
            raise BackendError(f"ONNX Runtime failed on a batch of shape {batch.shape}: {cause}") from error
        result: NDArray[np.float32] = np.asarray(out).astype(np.float32, copy=False)
        return result

    def close(self) -> None:
        self.session = None  # ORT frees the session, its arena and its threads with the last reference
