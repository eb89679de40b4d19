"""Opening backends: a spec into a Backend (`open_backend`), and the runtime's way in (`open_chosen`): the first
backend of the choice (vdsr.runtime.backends.choice) that opens here, with one log line saying which and why.

The PyTorch engine module imports torch when loaded, so it is imported here only when its backend is opened (the
TensorRT one imports tensorrt and torch only as an engine is built), and `skipped` lists why the others were not.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from vdsr.errors import BackendUnavailable, ModelError, UsageError, VdsrError, first_line
from vdsr.model import Model
from vdsr.runtime.backends.base import Backend
from vdsr.runtime.backends.choice import plan_backends
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend, cuda_providers
from vdsr.runtime.backends.specs import (
    GPU_BACKENDS,
    BackendSpec,
    OrtCpu,
    OrtCuda,
    Request,
    TensorRT,
    TorchCpu,
    TorchCuda,
)
from vdsr.runtime.backends.tensorrt import TensorRTBackend  # tensorrt and torch are imported when it is opened
from vdsr.runtime.machine import Machine, int8_speedup_reason, probe_machine


def open_backend(spec: BackendSpec) -> Backend:
    """The backend of `spec`, ready to run; BackendUnavailable saying why it cannot start here (a model file it
    cannot load, CUDA or its libraries missing, TensorRT unable to build)."""
    try:
        if isinstance(spec, OrtCpu | OrtCuda):
            return _open_onnxruntime(spec)
        if isinstance(spec, TorchCpu | TorchCuda):
            return _open_torch(spec)
        return _open_tensorrt(spec)
    except ModelError as error:  # the next backend may run another of the model's files
        raise BackendUnavailable(str(error)) from error


def _open_onnxruntime(spec: OrtCpu | OrtCuda) -> Backend:
    if isinstance(spec, OrtCpu):
        if spec.precision == "int8" and int8_speedup_reason() is None:
            warnings.warn(
                "this CPU has neither AVX2 nor int8 dot-product instructions: the int8 graph may be slower than fp32",
                stacklevel=3,
            )
        return OnnxRuntimeBackend(spec.model, spec.precision, threads=spec.threads)
    backend = OnnxRuntimeBackend(spec.model, spec.precision, providers=cuda_providers(spec.device))
    if backend.name != "onnxruntime-cuda":  # get_available_providers() lists what was compiled in, not what works
        backend.close()
        raise BackendUnavailable("the CUDA provider did not load (CUDA/cuDNN libraries missing?)")
    return backend


def _open_torch(spec: TorchCpu | TorchCuda) -> Backend:
    from vdsr.runtime.backends.pytorch import TorchBackend  # imports torch

    assert spec.model.weights is not None  # the choice gives torch specs to models with weights only
    device = f"cuda:{spec.device}" if isinstance(spec, TorchCuda) else "cpu"
    try:
        return TorchBackend(spec.model.weights, device, precision=spec.precision)
    except (RuntimeError, OSError) as error:  # CUDA cannot start, or is out of memory, before any image
        raise BackendUnavailable(f"PyTorch could not start ({first_line(error)})") from error


def _open_tensorrt(spec: TensorRT) -> Backend:
    try:
        return TensorRTBackend(spec)
    except (VdsrError, RuntimeError, OSError) as error:  # no builder, a failed build, the engine cache, CUDA
        raise BackendUnavailable(f"TensorRT could not start ({first_line(error)})") from error


def open_chosen(
    model: Model,
    request: Request,
    log: Callable[[str], None] = lambda line: None,
    *,
    machine: Machine | None = None,
) -> Backend:
    """The backend `request` asks for, or with auto the first of plan_backends that opens here; `log` gets one line
    saying what runs and why that precision, and (auto) why the backends before it were skipped. UsageError when the
    request cannot be served: the backend asked for, or with auto every one, unavailable here; ModelError when what
    stopped it was the model's file (unreadable, NaN weights)."""
    skipped: list[str] = []
    broken: list[ModelError] = []  # the model's own file could not be loaded: said as that, not as the machine's lack
    gpu = any(request.allows(name) for name in GPU_BACKENDS)
    for option in plan_backends(model, machine or probe_machine(gpu=gpu), request):
        reason = option.reason
        if option.spec is not None:
            try:
                backend = open_backend(option.spec)
            except BackendUnavailable as error:
                reason = str(error)
                if isinstance(error.__cause__, ModelError):
                    broken.append(error.__cause__)
            else:
                said = f"{backend.precision}: {option.reason}" if option.reason else backend.precision
                tried = "" if request.backend != "auto" else f"; skipped: {'; '.join(skipped) or 'none'}"
                log(f"backend {backend.name} ({said}) for {model.name}{tried}")
                return backend
        if broken and request.backend != "auto":
            raise broken[0]
        if request.backend != "auto":
            raise UsageError(f"Backend {request.backend} is not available: {reason}")
        skipped.append(f"{option.backend}: {reason}")
    if broken:
        raise broken[0]
    raise UsageError("No backend can run here: " + "; ".join(skipped))
