"""Backends as typed values: one spec per engine, the precision a field, each naming the model it runs.

A spec says what would run; vdsr.runtime.backends.choice picks one for a model on a machine (a pure function),
vdsr.runtime.backends.opening opens it into a Backend. A `Request` is what a caller asks for (the API's and
vdsr-run's options), checked when it is made.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from vdsr.errors import UsageError
from vdsr.metadata import GRAPH_PRECISIONS
from vdsr.model import Model

Shape = tuple[int, int, int]  # (batch, height, width) of an (N, 1, H, W) input
DEFAULT_TILE = 512  # output pixels per tile side: 16% recomputed halo for VDSR; memory stays small
CPU_BATCH = 1  # on CPUs larger batches only cost memory
GPU_BATCH = 4  # on GPUs a few tiles per call fill the device
SMALLEST_ENGINE_INPUT = 32  # TensorRT profiles start here: a result smaller than this runs on another backend


class BackendChoice(str, Enum):
    """What --backend takes: auto (tries the others in this order), or one backend by name."""

    auto = "auto"
    tensorrt = "tensorrt"
    onnxruntime_cuda = "onnxruntime-cuda"
    torch_cuda = "torch-cuda"
    onnxruntime_cpu = "onnxruntime-cpu"
    torch_cpu = "torch-cpu"


class PrecisionChoice(str, Enum):
    """What --precision takes: auto, or one of the graphs a model can come as (vdsr.metadata.GRAPH_PRECISIONS)."""

    auto = "auto"
    fp32 = GRAPH_PRECISIONS[0]
    fp16 = GRAPH_PRECISIONS[1]
    int8 = GRAPH_PRECISIONS[2]


BACKENDS = tuple(choice.value for choice in BackendChoice)[1:]
GPU_BACKENDS = ("tensorrt", "onnxruntime-cuda", "torch-cuda")
PRECISIONS = tuple(choice.value for choice in PrecisionChoice)


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


@dataclass(frozen=True)
class Request:
    """What a caller asks for: a backend (auto: the fastest that runs here), a precision (auto: fp16 on GPUs, int8
    on CPUs where it is faster and within its bar, else fp32), a device (auto, cpu, cuda, cuda:N), ONNX Runtime's
    threads on CPUs (0: one per physical core), and the tile and batch the runtime will send (None: the backend's
    own), which a TensorRT engine is built for. UsageError for a choice that does not exist."""

    backend: str = "auto"
    precision: str = "auto"
    device: str | None = None
    cpu_threads: int = 0
    tile: int | None = None
    batch: int | None = None

    def __post_init__(self) -> None:
        if self.backend != "auto" and self.backend not in BACKENDS:
            raise UsageError(f"Unknown backend {self.backend!r}; expected auto or one of: {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"Unknown precision {self.precision!r}; expected one of: {', '.join(PRECISIONS)}")
        kind, _ = parse_device(self.device)
        if self.backend != "auto" and kind is not None and (self.backend in GPU_BACKENDS) != (kind == "cuda"):
            raise UsageError(f"Backend {self.backend} does not run on device {self.device}")
        for name, value, least in (
            ("tile", self.tile, 1),
            ("batch", self.batch, 1),
            ("cpu_threads", self.cpu_threads, 0),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least
            ):
                raise UsageError(f"Expected {name} a whole number >= {least}, got {value!r}")

    @property
    def gpu_index(self) -> int:
        return parse_device(self.device)[1]

    def allows(self, backend: str) -> bool:
        """Whether `backend` is one this request may run: the one asked for, or with auto any on the device."""
        kind, _ = parse_device(self.device)
        on_device = kind is None or (backend in GPU_BACKENDS) == (kind == "cuda")
        return on_device and self.backend in ("auto", backend)


@dataclass(frozen=True)
class Profile:
    """A TensorRT optimisation profile, (batch, height, width) of the input at its smallest, the shape TensorRT tunes
    its kernels for (opt), and its largest."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        if not all(1 <= lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max, strict=True)):
            raise UsageError(f"Expected 1 <= min <= opt <= max in every dimension, got {self}")


def profile_for(tile: int, batch: int, halo: int) -> Profile:
    """The profile of the windows the runtime sends: `batch` windows of tile + 2 x halo a side (the engine is tuned
    for exactly those), smaller ones down to SMALLEST_ENGINE_INPUT for images smaller than a window."""
    window = tile + 2 * halo
    low = min(SMALLEST_ENGINE_INPUT, window)
    return Profile(min=(1, low, low), opt=(batch, window, window), max=(batch, window, window))


@dataclass(frozen=True)
class OrtCpu:
    """ONNX Runtime on the CPU: one of the model's graphs (fp32, fp16 or int8), with `threads` (0: one per core)."""

    model: Model
    precision: str
    threads: int = 0
    name: ClassVar[str] = "onnxruntime-cpu"


@dataclass(frozen=True)
class OrtCuda:
    """ONNX Runtime's CUDA provider on GPU `device`: one of the model's graphs (fp16 by default)."""

    model: Model
    precision: str
    device: int = 0
    name: ClassVar[str] = "onnxruntime-cuda"


@dataclass(frozen=True)
class TorchCpu:
    """The model's safetensors weights on PyTorch, fp32 eager on the CPU."""

    model: Model
    precision: str = "fp32"
    name: ClassVar[str] = "torch-cpu"


@dataclass(frozen=True)
class TorchCuda:
    """The model's safetensors weights on PyTorch on GPU `device`: fp16, channels_last, replayed as CUDA graphs."""

    model: Model
    precision: str = "fp16"
    device: int = 0
    name: ClassVar[str] = "torch-cuda"


@dataclass(frozen=True)
class TensorRT:
    """A TensorRT engine built from one of the model's graphs for `profile` (the windows the runtime will send), on
    the first visible GPU."""

    model: Model
    precision: str
    profile: Profile
    name: ClassVar[str] = "tensorrt"


BackendSpec = OrtCpu | OrtCuda | TorchCpu | TorchCuda | TensorRT
