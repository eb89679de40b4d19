"""Inference backends, and choosing one.

A backend is a callable on a (N, 1, H, W) float array of ILR luminance in [0, 1] that returns the super-resolved
luminance, same shape, float32. Each also says what it runs (`name`, `precision`), the halo its model needs and the
scales it was trained for, and the largest input it accepts (`max_input`, N x H x W, or None for any).

- onnxruntime-cpu / onnxruntime-cuda: an ONNX graph on ONNX Runtime. No PyTorch: the default CPU path. On CPUs with
  int8 dot products (VNNI) the int8 graph (vdsr-export --int8, its PSNR cost measured and recorded) by default.
- torch-cpu / torch-cuda: the safetensors weights on PyTorch; on CUDA in fp16, channels_last, replayed as CUDA graphs.
- tensorrt: an engine built from the ONNX graph by vdsr.export.tensorrt (not executed in this project's environment:
  TensorRT cannot be installed there). Its I/O buffers are torch CUDA tensors.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from vdsr import shipped

BACKENDS = ("tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime-cpu", "torch-cpu")  # auto tries them in order
MODELS = ("vdsr", "srcnn", "srcnn_x3", "srcnn_x4")  # shipped; SRCNN: one model per scale (srcnn is x2)
PRECISIONS = ("auto", "fp32", "fp16", "int8")
INT8_AUTO_BAR_DB = 0.05  # auto runs an int8 graph only if its recorded PSNR cost (vdsr-export --int8) is at most this


class Backend(Protocol):
    name: str
    precision: str
    halo: int
    scales: list[int]
    max_input: tuple[int, int, int] | None

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]: ...


class BackendUnavailable(RuntimeError):
    """This backend cannot run here; the message says why (shown when --backend auto skips it)."""


def _check_batch(batch: NDArray[np.floating]) -> None:
    if batch.ndim != 4 or batch.shape[1] != 1:
        raise ValueError(f"Expected a (N, 1, H, W) batch, got shape {batch.shape}")


def _model_facts(metadata: dict[str, str], source: Path) -> tuple[int, list[int]]:
    """(halo, trained scales) from a graph's metadata_props."""
    try:
        return int(metadata["halo"]), [int(s) for s in json.loads(metadata.get("scales", "[]"))]
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{source}: no valid 'halo' in the model's metadata; export it with vdsr-export") from error


class OnnxRuntimeBackend:
    """An ONNX Runtime session on one of this package's graphs (fp32 or fp16 I/O, converted here)."""

    def __init__(
        self, model: Path, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 0,
        require_halo: bool = True,
    ) -> None:  # fmt: skip
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
            self.session = ort.InferenceSession(str(model), options, providers=list(providers))
        except load_errors as error:
            raise ValueError(f"{model}: ONNX Runtime cannot load it ({error})") from error
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.dtype = np.float16 if graph_input.type == "tensor(float16)" else np.float32
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        # get_available_providers() lists what was compiled in, not what works: report what the session runs on
        self.providers: list[str] = list(self.session.get_providers())
        self.name = "onnxruntime-" + self.providers[0].removesuffix("ExecutionProvider").lower()
        self.precision = self.metadata.get("precision", "fp32")
        self.max_input: tuple[int, int, int] | None = None
        # tiling needs the halo; the benchmark, which runs whole images, does not (require_halo=False)
        self.halo, self.scales = (
            _model_facts(self.metadata, model) if require_halo or "halo" in self.metadata else (0, [])
        )
        self._errors = (ort_errors.Fail, ort_errors.RuntimeException, ort_errors.InvalidArgument,
                        getattr(ort_errors, "EPFail", ort_errors.Fail))  # fmt: skip

    def __call__(self, batch: NDArray[np.floating]) -> NDArray[np.float32]:
        _check_batch(batch)
        try:
            (out,) = self.session.run(None, {self.input_name: batch.astype(self.dtype, copy=False)})
        except self._errors as error:  # ORT's exceptions are not RuntimeErrors: make them one for the callers
            raise RuntimeError(f"ONNX Runtime failed on a batch of shape {batch.shape}: {error}") from error
        result: NDArray[np.float32] = np.asarray(out).astype(np.float32, copy=False)
        return result


class TorchBackend:
    """The safetensors weights on PyTorch: fp32 eager on CPU; fp16 channels_last CUDA graphs on a GPU."""

    MAX_GRAPHS = 16  # one CUDA graph per input shape; tiles share a shape, so few are needed

    def __init__(self, weights: Path | Any, device: str = "cpu", scales: tuple[int, ...] = ()) -> None:
        """`weights`: a .safetensors path, or a VDSR/SRCNN module already in memory (trained for `scales`)."""
        import torch

        from vdsr.train.weights import load_weights

        model, self.scales = load_weights(weights) if isinstance(weights, Path) else (weights, list(scales))
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.float16 if self.cuda else torch.float32
        self.model = model.to(device=self.device, dtype=self.dtype)
        if self.cuda:  # Module.to takes memory_format, but torch's stubs do not say so
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.halo = model.halo
        self.name = f"torch-{self.device.type}"
        self.precision = "fp16" if self.cuda else "fp32"
        self.max_input: tuple[int, int, int] | None = None
        self.graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}  # shape -> (graph, static input, static output)
        self.pool = torch.cuda.graph_pool_handle() if self.cuda else None  # one memory pool for all the graphs

    def __call__(self, batch: NDArray[np.floating]) -> NDArray[np.float32]:
        import torch

        _check_batch(batch)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, non_blocking=True)
        result: NDArray[np.float32] = self.run_device(x).cpu().numpy()
        return result

    def run_device(self, x: Any) -> Any:
        """The network on a (N, 1, H, W) float32 tensor on this backend's device; float32 result on the device."""
        import torch

        with torch.inference_mode():
            if not self.cuda:
                return self.model(x)
            x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
            return self._replay(x).float()

    def _replay(self, x: Any) -> Any:
        """Run through a CUDA graph captured for x's shape (kernel launches replayed at once), eager past MAX_GRAPHS."""
        import torch

        key = tuple(x.shape)
        if key not in self.graphs:
            if len(self.graphs) >= self.MAX_GRAPHS:
                return self.model(x)
            static_in = x.clone()
            side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # warm up on a side stream before capture, as torch.cuda.graphs requires
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.model(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                static_out = self.model(static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out


class TensorRTBackend:
    """A TensorRT engine (built or reused from the cache by vdsr.export.tensorrt) with torch CUDA tensors as I/O.

    Not executed in this project's environment (no TensorRT there); type-checked against tensorrt-stubs in CI.
    """

    def __init__(self, onnx_path: Path) -> None:
        import onnx

        from vdsr.export.tensorrt import DEFAULT_PROFILE, TensorRTUnavailable, build_engine

        try:
            engine_path = build_engine(onnx_path, DEFAULT_PROFILE)  # checks the GPU, then TensorRT
        except TensorRTUnavailable as error:
            raise BackendUnavailable(str(error)) from error
        import tensorrt as trt
        import torch

        metadata = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
        self.halo, self.scales = _model_facts(metadata, onnx_path)
        self.precision = metadata.get("precision", "fp32")
        self.name = "tensorrt"
        self.max_input: tuple[int, int, int] | None = DEFAULT_PROFILE.max
        self.profile = DEFAULT_PROFILE
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_path}: TensorRT could not deserialize the engine (see TensorRT's log)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise RuntimeError(f"{engine_path}: expected one input and one output, got {inputs} and {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        half = self.engine.get_tensor_dtype(self.input_name) == trt.DataType.HALF
        if self.engine.get_tensor_dtype(self.output_name) != self.engine.get_tensor_dtype(self.input_name):
            raise RuntimeError(f"{engine_path}: input and output types differ; expected one of this package's graphs")
        self.dtype = torch.float16 if half else torch.float32
        self.stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        self.device = torch.device("cuda")

    def __call__(self, batch: NDArray[np.floating]) -> NDArray[np.float32]:
        import torch

        _check_batch(batch)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to("cuda", non_blocking=True)
        result: NDArray[np.float32] = self.run_device(x).cpu().numpy()
        return result

    def run_device(self, batch: Any) -> Any:
        """The engine on a (N, 1, H, W) float32 CUDA tensor; float32 result on the GPU."""
        import torch

        shape = (batch.shape[0], batch.shape[2], batch.shape[3])
        low, high = self.profile.min, self.profile.max
        if not all(lo <= n <= hi for lo, n, hi in zip(low, shape, high, strict=True)):
            raise ValueError(f"Batch {batch.shape} is outside the engine's profile {low}..{high} (N x H x W); "
                             "images smaller than the profile's minimum need another backend")  # fmt: skip
        self.stream.wait_stream(torch.cuda.current_stream())  # the input was made on the current stream
        with torch.cuda.stream(self.stream):
            x = batch.to(self.dtype).contiguous()
            out = torch.empty_like(x)
            ready = (self.context.set_input_shape(self.input_name, tuple(x.shape))
                     and self.context.set_tensor_address(self.input_name, x.data_ptr())
                     and self.context.set_tensor_address(self.output_name, out.data_ptr()))  # fmt: skip
            if not ready:  # a stale shape or address would make TensorRT read or write past these buffers
                raise RuntimeError(f"TensorRT refused the shape or buffers of a batch of shape {tuple(x.shape)}")
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT execute_async_v3 failed for a batch of shape {tuple(x.shape)}")
            result = out.float()
        torch.cuda.current_stream().wait_stream(self.stream)  # callers use the result on the current stream
        return result


@dataclass(frozen=True)
class ModelFiles:
    """The files one model comes as: ONNX graphs by precision (fp32, fp16, int8), safetensors weights (or None).
    A graph given by path is filed under "given": it runs as it is."""

    name: str
    graphs: dict[str, Path]
    weights: Path | None


def model_files(model: str | Path | None = None) -> ModelFiles:
    """A shipped model by name (see MODELS; 'vdsr' by default), or the path of an .onnx graph or .safetensors file."""
    model = model or "vdsr"
    if str(model) in MODELS:
        names = {"fp32": f"{model}.onnx", "fp16": f"{model}_fp16.onnx", "int8": f"{model}_int8.onnx"}
        graphs = {precision: shipped(name) for precision, name in names.items() if shipped(name).is_file()}
        weights = shipped(f"{model}.safetensors")
        if not graphs and not weights.is_file():
            raise ValueError(f"No shipped {model} model in {shipped('')}: reinstall vdsr, or give --model PATH")
        return ModelFiles(str(model), graphs, weights if weights.is_file() else None)
    path = Path(model)
    if not path.is_file():
        raise ValueError(
            f"--model {model}: expected a shipped model ({', '.join(MODELS)}) or an existing .onnx or .safetensors file"
        )
    if path.suffix == ".onnx":
        return ModelFiles(path.stem, {"given": path}, None)
    if path.suffix == ".safetensors":
        return ModelFiles(path.stem, {}, path)
    raise ValueError(f"--model {path}: expected an .onnx graph or .safetensors weights")


def int8_is_fast() -> bool:
    """Whether this CPU has int8 dot-product instructions (x86 VNNI, Arm dotprod). Without them ONNX Runtime's int8
    kernels are slower, and on AVX2/AVX-512 without VNNI its u8s8 arithmetic can saturate."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(f.read().split())
    except OSError:
        return False  # not Linux: stay with fp32
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})


def _graph(files: ModelFiles, choice: str, precision: str) -> Path:
    """The ONNX graph a backend runs: fp16 on GPUs; on CPUs int8 where it is fast (its cost is measured at export)."""
    if "given" in files.graphs:
        if precision != "auto":
            raise BackendUnavailable(f"--precision {precision} picks among shipped graphs; {files.graphs['given']} "
                                     "runs as it is")  # fmt: skip
        return files.graphs["given"]
    if precision == "int8" and choice != "onnxruntime-cpu":
        raise BackendUnavailable("the int8 graph runs on onnxruntime-cpu only")
    gpu = choice != "onnxruntime-cpu"
    cpu_order = ("int8", "fp32") if int8_is_fast() else ("fp32",)
    order = (precision,) if precision != "auto" else ("fp16", "fp32") if gpu else cpu_order
    if precision == "int8" and not int8_is_fast():
        warnings.warn("this CPU has no int8 dot-product instructions (VNNI): the int8 graph may be slow, and ONNX "
                      "Runtime's u8s8 arithmetic can saturate on AVX2/AVX-512 without VNNI", stacklevel=2)  # fmt: skip
    for candidate in order:
        if candidate in files.graphs:
            return files.graphs[candidate]
    raise BackendUnavailable(f"no {'/'.join(order)} ONNX graph of {files.name}")


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is installed, found without importing torch (the CPU path must not load it)."""
    if sys.platform.startswith("linux"):  # native driver, or WSL2's GPU paravirtualisation
        return Path("/proc/driver/nvidia/version").exists() or Path("/dev/dxg").exists()
    return ctypes.util.find_library("nvcuda" if sys.platform == "win32" else "cuda") is not None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _torch_cuda() -> None:
    if not _installed("torch"):
        raise BackendUnavailable("PyTorch is not installed")
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable(f"PyTorch {torch.__version__} sees no CUDA GPU")


def _open(choice: str, files: ModelFiles, precision: str) -> Backend:
    """One backend, or BackendUnavailable saying why not."""
    gpu = choice in ("tensorrt", "onnxruntime-cuda", "torch-cuda")
    if gpu and not nvidia_driver_present():
        raise BackendUnavailable("no NVIDIA GPU driver found")
    if choice.startswith("torch"):
        if files.weights is None:
            raise BackendUnavailable(f"needs .safetensors weights for {files.name}; the model given is ONNX only")
        if precision not in ("auto", "fp16" if gpu else "fp32"):
            raise BackendUnavailable(f"runs {'fp16' if gpu else 'fp32'} only, not {precision}")
        if gpu:
            _torch_cuda()
        elif not _installed("torch"):
            raise BackendUnavailable("PyTorch is not installed (pip install 'vdsr[train]')")
        return TorchBackend(files.weights, "cuda" if gpu else "cpu")
    if not files.graphs:
        raise BackendUnavailable(f"needs an ONNX graph of {files.name}; the model given is safetensors only")
    graph = _graph(files, choice, precision)
    if choice == "tensorrt":
        if not _installed("tensorrt"):
            raise BackendUnavailable("TensorRT is not installed (pip install 'vdsr[trt]')")
        _torch_cuda()
        return TensorRTBackend(graph)
    if not _installed("onnxruntime"):
        raise BackendUnavailable("ONNX Runtime is not installed (pip install 'vdsr[cpu]' or 'vdsr[gpu]')")
    if gpu:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable("this onnxruntime has no CUDA provider (pip install 'vdsr[gpu]')")
        backend = OnnxRuntimeBackend(graph, ("CUDAExecutionProvider", "CPUExecutionProvider"))
        if backend.name != "onnxruntime-cuda":
            raise BackendUnavailable("the CUDA provider did not load (CUDA/cuDNN libraries missing?)")
        return backend
    backend = OnnxRuntimeBackend(graph)
    cost = float(backend.metadata.get("int8_max_cost_db", "inf")) if backend.precision == "int8" else 0.0
    if precision == "auto" and cost > INT8_AUTO_BAR_DB and "fp32" in files.graphs:  # not worth its cost: fp32
        return OnnxRuntimeBackend(files.graphs["fp32"])
    return backend


def open_backend(
    choice: str = "auto", model: str | Path | None = None, log: Callable[[str], None] = lambda line: None,
    precision: str = "auto",
) -> Backend:  # fmt: skip
    """The backend `choice` (one of BACKENDS), or with 'auto' the first of BACKENDS that works here; `log` gets one
    line saying what was chosen and why the others were skipped. `precision` (auto, fp32, fp16, int8) picks among a
    shipped model's graphs; auto: fp16 on GPUs, int8 on CPUs with int8 dot products, else fp32."""
    if choice != "auto" and choice not in BACKENDS:
        raise ValueError(f"Unknown backend {choice!r}; expected auto or one of: {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; expected one of: {', '.join(PRECISIONS)}")
    files = model_files(model)
    if choice != "auto":
        try:
            backend = _open(choice, files, precision)
        except (BackendUnavailable, RuntimeError, ImportError, OSError) as error:  # e.g. a TensorRT build failure
            raise ValueError(f"Backend {choice} is not available: {error}") from error
        log(f"backend {backend.name} ({backend.precision}) for {files.name}")
        return backend
    skipped = []
    for candidate in BACKENDS:
        try:
            backend = _open(candidate, files, precision)
        except Exception as error:  # noqa: BLE001  (any failed start: say so, try the next)
            skipped.append(f"{candidate}: {error}")
            continue
        reasons = "; ".join(skipped) or "none"
        log(f"backend {backend.name} ({backend.precision}) for {files.name}; skipped: {reasons}")
        return backend
    raise ValueError("No backend can run here: " + "; ".join(skipped))
