"""Choosing a backend: a pure function of (model, machine facts, request), testable on a table of machines.

- tensorrt: an engine built from the model's ONNX graph for the windows the runtime will send (not executed in this
  project's environment: TensorRT cannot be installed there).
- onnxruntime-cuda / onnxruntime-cpu: an ONNX graph on ONNX Runtime. No PyTorch: the default CPU path. By default the
  int8 graph on CPUs where int8 is faster (int8 dot products, or x86 AVX2) if its measured cost is within the bar
  (vdsr-export --int8 records both), else fp32; fp16 on GPUs.
- torch-cuda / torch-cpu: the safetensors weights on PyTorch.

`plan_backends` lists every backend the request allows, in the order auto tries them, each with the spec that would
run (and why that precision) or the reason it cannot run here; `choose_backend` is the first that can.
"""

from __future__ import annotations

from dataclasses import dataclass

from vdsr.model import Model
from vdsr.runtime.backends.specs import (
    BACKENDS,
    DEFAULT_TILE,
    GPU_BACKENDS,
    GPU_BATCH,
    BackendSpec,
    OrtCpu,
    OrtCuda,
    Request,
    TensorRT,
    TorchCpu,
    TorchCuda,
    profile_for,
)
from vdsr.runtime.machine import Machine, int8_speedup_reason


@dataclass(frozen=True)
class Option:
    """One backend for a request: the spec that would run and why that precision ("" when there was no choice to
    explain), or no spec and the reason it cannot run here."""

    backend: str
    spec: BackendSpec | None
    reason: str


class Unavailable(Exception):
    """Why one backend cannot run (internal to the choice: an Option's reason)."""


def plan_backends(model: Model, machine: Machine, request: Request) -> list[Option]:
    """Every backend `request` allows, in the order auto tries them (BACKENDS), with its spec or why not."""
    options = []
    for name in BACKENDS:
        if not request.allows(name):
            continue
        try:
            spec, why = _spec(name, model, machine=machine, request=request)
        except Unavailable as error:
            options.append(Option(name, None, str(error)))
            continue
        options.append(Option(name, spec, why))
    return options


def choose_backend(model: Model, machine: Machine, request: Request) -> tuple[BackendSpec | None, str]:
    """The first backend of plan_backends that can run, and why that precision; (None, every reason) if none can."""
    options = plan_backends(model, machine, request)
    for option in options:
        if option.spec is not None:
            return option.spec, option.reason
    return None, "; ".join(f"{o.backend}: {o.reason}" for o in options)


def _spec(name: str, model: Model, *, machine: Machine, request: Request) -> tuple[BackendSpec, str]:
    gpu = name in GPU_BACKENDS
    if gpu and not machine.nvidia_driver:
        raise Unavailable("no NVIDIA GPU driver found")
    index = request.gpu_index
    if name.startswith("torch"):
        if model.weights is None:
            raise Unavailable(f"needs .safetensors weights for {model.name}; the model given is ONNX only")
        if request.precision not in ("auto", "fp16" if gpu else "fp32"):  # GPUs run fp16 (CUDA graphs), CPUs fp32
            raise Unavailable(f"runs {'fp16' if gpu else 'fp32'} only, not {request.precision}")
        if "torch" not in machine.installed:
            raise Unavailable("PyTorch is not installed" + ("" if gpu else " (pip install 'vdsr[train]')"))
        if gpu:
            _torch_cuda(machine)
            return TorchCuda(model, device=index), ""
        return TorchCpu(model), ""
    if not model.graphs:
        raise Unavailable(f"needs an ONNX graph of {model.name}; the model given is safetensors only")
    precision = _graph_precision(model, name, precision=request.precision, flags=machine.cpu_flags)
    if name == "tensorrt":
        if index != 0:
            raise Unavailable("runs on the first visible GPU only: pick another with CUDA_VISIBLE_DEVICES")
        if "tensorrt" not in machine.installed:
            raise Unavailable("TensorRT is not installed (pip install 'vdsr[trt]')")
        _torch_cuda(machine)
        tile, batch = request.tile or DEFAULT_TILE, request.batch or GPU_BATCH
        return TensorRT(model, precision, profile_for(tile, batch, model.halo or 0)), ""
    if "onnxruntime" not in machine.installed:
        raise Unavailable("ONNX Runtime is not installed (pip install 'vdsr[cpu]' or 'vdsr[gpu]')")
    if gpu:
        if "CUDAExecutionProvider" not in machine.ort_providers:
            raise Unavailable("this onnxruntime has no CUDA provider (pip install 'vdsr[gpu]')")
        return OrtCuda(model, precision, device=index), ""
    return _ort_cpu(model, precision, request=request, flags=machine.cpu_flags)


def _torch_cuda(machine: Machine) -> None:
    if "torch" not in machine.installed:
        raise Unavailable("PyTorch is not installed")
    if machine.torch_cuda is None or machine.torch_cuda:
        raise Unavailable(machine.torch_cuda or "PyTorch sees no CUDA GPU")


def _graph_precision(model: Model, name: str, *, precision: str, flags: frozenset[str]) -> str:
    """The graph a backend runs: as asked; by default fp16 on GPUs, on CPUs int8 where it is faster (its cost is
    weighed by _ort_cpu), else fp32. A graph given by path runs as it is."""
    if model.given:
        if precision != "auto":
            path = next(iter(model.graphs.values())).path
            raise Unavailable(f"--precision {precision} picks among shipped graphs; {path} runs as it is")
        return next(iter(model.graphs))
    if precision == "int8" and name != "onnxruntime-cpu":
        raise Unavailable("the int8 graph runs on onnxruntime-cpu only")
    cpu_order = ("int8", "fp32") if int8_speedup_reason(flags) is not None else ("fp32",)
    order = (precision,) if precision != "auto" else ("fp16", "fp32") if name in GPU_BACKENDS else cpu_order
    for candidate in order:
        if candidate in model.graphs:
            return candidate
    raise Unavailable(f"no {'/'.join(order)} ONNX graph of {model.name}")


def _ort_cpu(model: Model, precision: str, *, request: Request, flags: frozenset[str]) -> tuple[BackendSpec, str]:
    """ONNX Runtime on the CPU, and why its precision: an int8 graph runs by default only within its cost bar."""
    spec = OrtCpu(model, precision, request.cpu_threads)
    if request.precision != "auto" or model.given:
        return spec, ""
    reason = int8_speedup_reason(flags)
    within = model.graphs[precision].int8_within_bar
    if precision == "int8" and not within and "fp32" in model.graphs:  # not worth its cost (written with --force)
        return OrtCpu(model, "fp32", request.cpu_threads), "the int8 graph is not within its PSNR cost bar"
    if precision == "int8" and within:
        return spec, f"{reason}; PSNR cost within the bar"
    if precision == "int8":
        return spec, f"{reason}; no fp32 graph, though the int8 one is not within its PSNR cost bar"
    if reason is None:
        return spec, "int8 not known to be faster on this CPU (no AVX2, VNNI or dotprod)"
    return spec, ""
