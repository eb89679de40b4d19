"""Choosing a backend for a model: which engines can run here, which of the model's graphs (precision), and why.

- onnxruntime-cpu / onnxruntime-cuda: an ONNX graph on ONNX Runtime. No PyTorch: the default CPU path. By default the
  int8 graph on CPUs where int8 is faster (int8 dot products, or x86 AVX2) if its measured cost is within the bar
  (vdsr-export --int8 records both), else fp32.
- torch-cpu / torch-cuda: the safetensors weights on PyTorch; on CUDA in fp16, channels_last, replayed as CUDA graphs.
- tensorrt: an engine built from the ONNX graph (not executed in this project's environment: TensorRT cannot be
  installed there). Its I/O buffers are torch CUDA tensors.

The engine modules for PyTorch and TensorRT import torch (and tensorrt) when loaded, so they are imported here only
when their backend is tried, after the checks that need neither.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from vdsr.catalogue import GRAPH_PRECISIONS, ModelFiles, model_files
from vdsr.errors import BackendUnavailable, ModelError, UsageError, VdsrError, first_line
from vdsr.runtime.backends.base import Backend
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend, cuda_providers
from vdsr.runtime.machine import int8_speedup_reason, nvidia_driver_present


class BackendChoice(str, Enum):
    """What --backend takes: auto (tries the others in this order), or one backend by name."""

    auto = "auto"
    tensorrt = "tensorrt"
    onnxruntime_cuda = "onnxruntime-cuda"
    torch_cuda = "torch-cuda"
    onnxruntime_cpu = "onnxruntime-cpu"
    torch_cpu = "torch-cpu"


class PrecisionChoice(str, Enum):
    """What --precision takes: auto, or one of the graphs a model ships (vdsr.catalogue.GRAPH_PRECISIONS)."""

    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


BACKENDS = tuple(choice.value for choice in BackendChoice)[1:]
GPU_BACKENDS = ("tensorrt", "onnxruntime-cuda", "torch-cuda")
PRECISIONS = tuple(choice.value for choice in PrecisionChoice)
assert PRECISIONS[1:] == GRAPH_PRECISIONS, "PrecisionChoice lists the shipped graph precisions"


def parse_device(device: str | None) -> tuple[str | None, int]:
    """'auto' or None (any backend), 'cpu', 'cuda' or 'cuda:N' -> (kind or None, GPU index). UsageError otherwise."""
    if device in (None, "auto"):
        return None, 0
    kind, colon, index = str(device).partition(":")
    if kind == "cpu" and not colon:
        return "cpu", 0
    if kind == "cuda" and (not colon or index.isdigit()):
        return "cuda", int(index or 0)
    raise UsageError(f"Unknown device {device!r}; expected auto, cpu, cuda or cuda:N")


def _graph(files: ModelFiles, choice: str, precision: str) -> Path:
    """The ONNX graph a backend runs: fp16 on GPUs; on CPUs int8 where it is faster (its cost is checked on opening)."""
    if "given" in files.graphs:
        if precision != "auto":
            raise BackendUnavailable(f"--precision {precision} picks among shipped graphs; {files.graphs['given']} "
                                     "runs as it is")  # fmt: skip
        return files.graphs["given"]
    if precision == "int8" and choice != "onnxruntime-cpu":
        raise BackendUnavailable("the int8 graph runs on onnxruntime-cpu only")
    gpu = choice in GPU_BACKENDS
    fast = int8_speedup_reason() is not None
    cpu_order = ("int8", "fp32") if fast else ("fp32",)
    order = (precision,) if precision != "auto" else ("fp16", "fp32") if gpu else cpu_order
    if precision == "int8" and not fast:
        warnings.warn("this CPU has neither AVX2 nor int8 dot-product instructions: the int8 graph may be slower than "
                      "fp32", stacklevel=2)  # fmt: skip
    for candidate in order:
        if candidate in files.graphs:
            return files.graphs[candidate]
    raise BackendUnavailable(f"no {'/'.join(order)} ONNX graph of {files.name}")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _torch_cuda() -> None:
    if not _installed("torch"):
        raise BackendUnavailable("PyTorch is not installed")
    import torch  # heavy: only once a GPU backend is tried on a machine with an NVIDIA driver

    if not torch.cuda.is_available():
        raise BackendUnavailable(f"PyTorch {torch.__version__} sees no CUDA GPU")


def _open_torch(files: ModelFiles, gpu: bool, precision: str, *, gpu_index: int = 0) -> Backend:
    if files.weights is None:
        raise BackendUnavailable(f"needs .safetensors weights for {files.name}; the model given is ONNX only")
    if precision not in ("auto", "fp16" if gpu else "fp32"):  # GPUs run the fp16 path (CUDA graphs), CPUs fp32
        raise BackendUnavailable(f"runs {'fp16' if gpu else 'fp32'} only, not {precision}")
    if gpu:
        _torch_cuda()
    elif not _installed("torch"):
        raise BackendUnavailable("PyTorch is not installed (pip install 'vdsr[train]')")
    from vdsr.runtime.backends.pytorch import TorchBackend  # imports torch

    try:
        return TorchBackend(files.weights, f"cuda:{gpu_index}" if gpu else "cpu")
    except (RuntimeError, OSError) as error:  # CUDA cannot start, or is out of memory, before any image
        raise BackendUnavailable(f"PyTorch could not start ({first_line(error)})") from error


def _open_tensorrt(graph: Path, *, gpu_index: int = 0) -> Backend:
    if gpu_index != 0:
        raise BackendUnavailable("runs on the first visible GPU only: pick another with CUDA_VISIBLE_DEVICES")
    if not _installed("tensorrt"):
        raise BackendUnavailable("TensorRT is not installed (pip install 'vdsr[trt]')")
    _torch_cuda()
    from vdsr.runtime.backends.tensorrt import TensorRTBackend  # imports onnx, then tensorrt and torch

    try:
        return TensorRTBackend(graph)
    except (VdsrError, RuntimeError, OSError) as error:  # no builder, a failed build, the engine cache, CUDA
        raise BackendUnavailable(f"TensorRT could not start ({first_line(error)})") from error


def _open_onnxruntime(
    files: ModelFiles, graph: Path, *, gpu: bool, precision: str, gpu_index: int = 0, cpu_threads: int = 0
) -> Backend:
    if not _installed("onnxruntime"):
        raise BackendUnavailable("ONNX Runtime is not installed (pip install 'vdsr[cpu]' or 'vdsr[gpu]')")
    if gpu:
        import onnxruntime as ort  # the `gpu` extra

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable("this onnxruntime has no CUDA provider (pip install 'vdsr[gpu]')")
        backend = OnnxRuntimeBackend(graph, cuda_providers(gpu_index))
        if backend.name != "onnxruntime-cuda":
            backend.close()
            raise BackendUnavailable("the CUDA provider did not load (CUDA/cuDNN libraries missing?)")
        return backend
    backend = OnnxRuntimeBackend(graph, threads=cpu_threads)
    if precision != "auto" or "given" in files.graphs:
        return backend
    reason = int8_speedup_reason()
    if backend.precision == "int8" and backend.metadata.get("int8_within_bar") != "true" and "fp32" in files.graphs:
        backend.close()  # not worth its cost (a graph written with --force, or before the bar): fp32
        backend = OnnxRuntimeBackend(files.graphs["fp32"], threads=cpu_threads)
        backend.why = "the int8 graph is not within its PSNR cost bar"
    elif backend.precision == "int8" and backend.metadata.get("int8_within_bar") == "true":
        backend.why = f"{reason}; PSNR cost within the bar"
    elif backend.precision == "int8":
        backend.why = f"{reason}; no fp32 graph, though the int8 one is not within its PSNR cost bar"
    elif reason is None:
        backend.why = "int8 not known to be faster on this CPU (no AVX2, VNNI or dotprod)"
    return backend


def _open(choice: str, files: ModelFiles, precision: str, *, gpu_index: int = 0, cpu_threads: int = 0) -> Backend:
    """One backend, or BackendUnavailable saying why not. A model file this backend cannot load (a ModelError) is a
    reason too: the next backend may run another of the model's files (its graph rather than its weights)."""
    gpu = choice in GPU_BACKENDS
    if gpu and not nvidia_driver_present():
        raise BackendUnavailable("no NVIDIA GPU driver found")
    try:
        if choice.startswith("torch"):
            return _open_torch(files, gpu, precision, gpu_index=gpu_index)
        if not files.graphs:
            raise BackendUnavailable(f"needs an ONNX graph of {files.name}; the model given is safetensors only")
        graph = _graph(files, choice, precision)
        if choice == "tensorrt":
            return _open_tensorrt(graph, gpu_index=gpu_index)
        return _open_onnxruntime(files, graph, gpu=gpu, precision=precision, gpu_index=gpu_index,
                                 cpu_threads=cpu_threads)  # fmt: skip
    except ModelError as error:
        raise BackendUnavailable(str(error)) from error


def described(backend: Backend) -> str:
    """'int8: int8 dot products (avx512_vnni); ...', or the precision alone when there was no choice to explain."""
    return f"{backend.precision}: {backend.why}" if backend.why else backend.precision


def open_backend(
    choice: str = "auto",
    model: str | Path | None = None,
    log: Callable[[str], None] = lambda line: None,
    *,
    precision: str = "auto",
    device: str | None = None,
    cpu_threads: int = 0,
) -> Backend:
    """The backend `choice` (one of BACKENDS), or with 'auto' the first of BACKENDS that works here; `log` gets one
    line saying what was chosen and why the others were skipped. `precision` (auto, fp32, fp16, int8) picks among a
    shipped model's graphs; auto: fp16 on GPUs, int8 on CPUs where it is faster if within its cost bar, else fp32.
    `device` (auto, cpu, cuda, cuda:N) limits the backends to that device; a GPU backend runs on GPU N.
    `cpu_threads`: ONNX Runtime's threads on CPUs (0: one per physical core; a Ray actor's share of the machine).

    UsageError when the choice cannot be served: an unknown backend or precision, a model that is not there, the
    backend asked for (or, with auto, every one) unavailable here, a model file none can load included."""
    if choice != "auto" and choice not in BACKENDS:
        raise UsageError(f"Unknown backend {choice!r}; expected auto or one of: {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise UsageError(f"Unknown precision {precision!r}; expected one of: {', '.join(PRECISIONS)}")
    kind, gpu_index = parse_device(device)
    allowed = [b for b in BACKENDS if kind is None or (b in GPU_BACKENDS) == (kind == "cuda")]
    if choice != "auto" and choice not in allowed:
        raise UsageError(f"Backend {choice} does not run on device {device}")
    try:
        files = model_files(model)
    except ModelError as error:  # a shipped model missing from the installation
        raise UsageError(str(error)) from error
    if choice != "auto":
        try:
            backend = _open(choice, files, precision, gpu_index=gpu_index, cpu_threads=cpu_threads)
        except BackendUnavailable as error:
            raise UsageError(f"Backend {choice} is not available: {error}") from error
        log(f"backend {backend.name} ({described(backend)}) for {files.name}")
        return backend
    skipped = []
    for candidate in allowed:
        try:
            backend = _open(candidate, files, precision, gpu_index=gpu_index, cpu_threads=cpu_threads)
        except BackendUnavailable as error:
            skipped.append(f"{candidate}: {error}")
            continue
        log(f"backend {backend.name} ({described(backend)}) for {files.name}; skipped: {'; '.join(skipped) or 'none'}")
        return backend
    raise UsageError("No backend can run here: " + "; ".join(skipped))
