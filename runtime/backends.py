"""Inference backends. A backend is a callable on a (N, 1, H, W) float array of ILR luminance in [0, 1] that returns
the super-resolved luminance, same shape, float32. ONNX Runtime needs no PyTorch: it is the default CPU path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray


class OnnxRuntimeBackend:
    """An ONNX Runtime session on one of this package's graphs (fp32 or fp16 I/O, converted here)."""

    def __init__(self, model: Path, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 0) -> None:
        import onnxruntime as ort  # the `cpu` or `gpu` extra
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: one per physical core
        # ORT's own exception types derive from Exception directly; these are the ones loading a model raises
        load_errors = (OSError, ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.NoSuchFile,
                       ort_errors.InvalidGraph, ort_errors.InvalidProtobuf, ort_errors.NotImplemented,
                       ort_errors.RuntimeException)  # fmt: skip
        try:
            self.session = ort.InferenceSession(str(model), options, providers=list(providers))
        except load_errors as error:
            raise ValueError(f"{model}: ONNX Runtime cannot load it ({error})") from error
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.dtype = np.float16 if graph_input.type == "tensor(float16)" else np.float32
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        # get_available_providers() lists what was compiled in, not what works: report what the session runs on
        self.providers: list[str] = list(self.session.get_providers())

    def __call__(self, batch: NDArray[np.floating]) -> NDArray[np.float32]:
        if batch.ndim != 4 or batch.shape[1] != 1:
            raise ValueError(f"Expected a (N, 1, H, W) batch, got shape {batch.shape}")
        (out,) = self.session.run(None, {self.input_name: batch.astype(self.dtype, copy=False)})
        result: NDArray[np.float32] = np.asarray(out).astype(np.float32, copy=False)
        return result
