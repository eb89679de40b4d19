"""ONNX Runtime: one of this package's ONNX graphs in a session on the CPU (the default path: no PyTorch) or CUDA."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import BackendError, ModelError, first_line
from vdsr.runtime.backends.base import CPU_BATCH, GPU_BATCH, Backend, check_batch, model_facts
from vdsr.runtime.onnx_file import read_self_contained

Providers = Sequence[str | tuple[str, dict[str, object]]]  # ONNX Runtime's: names, or (name, options)
CPU_PROVIDERS: Providers = ("CPUExecutionProvider",)


def _device_id(providers: Providers) -> object:
    """The GPU index given to the CUDA provider (0 unless its options say)."""
    for provider in providers:
        if isinstance(provider, tuple) and provider[0] == "CUDAExecutionProvider":
            return provider[1].get("device_id", 0)
    return 0


def cpu_bytes_per_pixel(metadata: dict[str, str]) -> int:
    """The CPU session's working memory per window pixel: 64 + 14 x the widest layer's channels bytes, 960 for the
    shipped models (peak resident growth measured on ONNX Runtime 1.32, arena included, fp32 and int8, windows of
    0.25-4 MP: VDSR-64 534-811, SRCNN 469-497, an 8-channel VDSR 106-174, so about 15% to spare;
    bench/results/window_memory_cpu.md). 64 channels without a config."""
    try:
        channels = json.loads(metadata["config"])["channels"]
        widest = max(channels) if isinstance(channels, list) else int(channels)
    except (KeyError, ValueError, TypeError):
        widest = 64
    return 64 + 14 * max(1, widest)


def cuda_providers(gpu_index: int = 0) -> Providers:
    """CUDA on GPU `gpu_index`, with the CPU for what CUDA does not run."""
    return (("CUDAExecutionProvider", {"device_id": gpu_index}), "CPUExecutionProvider")


class OnnxRuntimeBackend(Backend):
    """An ONNX Runtime session on one graph (fp32, fp16 or int8; fp16 I/O converted here). `require_halo=False`
    accepts a graph without a recorded halo, for callers that never tile (the benchmark runs whole images)."""

    arrays: Literal["numpy", "torch"] = "numpy"

    def __init__(
        self, model: Path, providers: Providers = CPU_PROVIDERS, *, threads: int = 0, require_halo: bool = True
    ) -> None:
        import onnxruntime as ort  # the `cpu` or `gpu` extra
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: one per physical core
        # ORT's own exception types derive from Exception directly; these are the ones loading a model raises
        load_errors = (OSError, ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.NoSuchFile,
                       ort_errors.InvalidGraph, ort_errors.InvalidProtobuf, ort_errors.NotImplemented,
                       ort_errors.RuntimeException, getattr(ort_errors, "EPFail", ort_errors.Fail))  # fmt: skip
        try:
            graph = read_self_contained(model)  # refuses external data, whatever this ONNX Runtime would allow
            self.session: Any = ort.InferenceSession(graph, options, providers=list(providers))
        except load_errors as error:
            raise ModelError(f"{model}: ONNX Runtime cannot load it ({error})") from error
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.dtype = np.float16 if graph_input.type == "tensor(float16)" else np.float32
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        # get_available_providers() lists what was compiled in, not what works: report what the session runs on
        self.providers: list[str] = list(self.session.get_providers())
        self.name = "onnxruntime-" + self.providers[0].removesuffix("ExecutionProvider").lower()
        self.device = "cpu" if self.name == "onnxruntime-cpu" else f"cuda:{_device_id(providers)}"
        self.preferred_batch = CPU_BATCH if self.device == "cpu" else GPU_BATCH
        self.precision = self.metadata.get("precision", "fp32")
        self.architecture = self.metadata.get("architecture")
        self.halo, self.scales = (
            model_facts(self.metadata, model) if require_halo or "halo" in self.metadata else (0, [])
        )
        if self.device == "cpu":
            self.window_bytes_per_pixel = cpu_bytes_per_pixel(self.metadata)
        self._errors = (ort_errors.Fail, ort_errors.RuntimeException, ort_errors.InvalidArgument,
                        getattr(ort_errors, "EPFail", ort_errors.Fail))  # fmt: skip

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
