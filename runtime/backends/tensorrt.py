"""TensorRT: FP16 engines built from this package's ONNX graphs (engines are built where they run), and the backend
that runs them with torch CUDA tensors as I/O. For users with TensorRT and an NVIDIA GPU.

Not executed in this project's own environment: TensorRT's builder cannot be installed there (its libraries come only
from NVIDIA's index). CI type-checks this module against tensorrt-stubs; nothing here is mocked.

- TensorRT 10: the fp32 graph with BuilderFlag.FP16 (TensorRT picks fp16 kernels), or the fp16 graph strongly typed.
- TensorRT 11 is strongly typed only (no FP16 flag): the fp16 graph (vdsr-export --fp16) is required.
- One optimisation profile, the windows the runtime will send (vdsr.runtime.backends.specs.profile_for: square, so
  portrait and landscape images fit alike; TensorRT tunes its kernels for exactly that shape).
- Engines are cached under the user cache dir, keyed by GPU name, compute capability, TensorRT version, ONNX SHA-256
  and profile, written atomically with a JSON sidecar; a timing cache per GPU and TensorRT version speeds up rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_cache_dir

from vdsr._version import __version__
from vdsr.errors import BackendError, UsageError, VdsrError
from vdsr.files import atomic_write, atomic_write_bytes, atomic_write_text
from vdsr.onnx_file import read_self_contained
from vdsr.runtime.backends.base import Backend, check_batch
from vdsr.runtime.backends.specs import GPU_BATCH, Profile, Shape, TensorRT

log = logging.getLogger(__name__)


class TensorRTUnavailable(VdsrError, RuntimeError):
    """TensorRT or a CUDA GPU is missing; the message says which and what to install. (Backend selection turns it
    into BackendUnavailable; for vdsr-export --engine it is a failed output, exit 1.)"""


class EngineBuildError(VdsrError, RuntimeError):
    """TensorRT's parser or builder failed on a graph; the message holds every parser error."""


def parse_shape(text: str) -> Shape:
    """'4x512x512' -> (4, 512, 512): batch x height x width."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdecimal() for p in parts):
        raise UsageError(f"Expected a shape NxHxW such as 4x512x512, got {text!r}")
    n, h, w = (int(p) for p in parts)
    return (n, h, w)


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str


def require_tensorrt() -> Gpu:
    """The GPU TensorRT will build for, once TensorRT is known to be usable. The GPU is checked first: without one,
    TensorRT can segfault."""
    try:
        import torch
    except ImportError as error:
        raise TensorRTUnavailable("TensorRT engines need PyTorch with CUDA: pip install 'vdsr[trt]'") from error
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("No CUDA GPU is visible, so no TensorRT engine can be built here")
    major, minor = torch.cuda.get_device_capability()
    gpu = Gpu(name=torch.cuda.get_device_name(), compute_capability=f"{major}.{minor}")
    try:
        import tensorrt as trt
    except ImportError as error:
        raise TensorRTUnavailable("TensorRT is not installed: pip install 'vdsr[trt]'") from error
    if not hasattr(trt, "Builder"):  # tensorrt-stubs or the lean runtime alone: importable, but cannot build
        raise TensorRTUnavailable("This tensorrt installation has no Builder (stubs or lean runtime only)")
    return gpu


def engine_key(gpu: Gpu, trt_version: str, onnx_sha256: str, *, profile: Profile) -> str:
    fields = {"gpu": asdict(gpu), "tensorrt": trt_version, "onnx": onnx_sha256, "profile": asdict(profile)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(user_cache_dir("vdsr")) / "tensorrt"


def build_engine(
    onnx_path: Path,
    profile: Profile,
    *,
    precision: str,
    destination: Path | None = None,
    cache_dir: Path | None = None,
    workspace_gib: int = 4,
) -> Path:
    """Build (or reuse from the cache) a TensorRT engine for `onnx_path`, a graph of `precision` (its model says
    which); copy it to `destination` if given.

    Returns the engine's path. Raises TensorRTUnavailable without TensorRT or a GPU, EngineBuildError when parsing
    or building fails (every parser error is logged and included in the message).
    """
    gpu = require_tensorrt()
    import tensorrt as trt  # only now: require_tensorrt() has made sure a GPU and the builder are there

    onnx_bytes = read_self_contained(onnx_path)
    onnx_sha256 = hashlib.sha256(onnx_bytes).hexdigest()
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    if precision != "fp16" and not has_fp16_flag:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} is strongly typed only: build from the fp16 graph "
            f"(vdsr-export --fp16), not {onnx_path}"
        )
    cache = cache_dir or default_cache_dir()
    key = engine_key(gpu, trt.__version__, onnx_sha256, profile=profile)
    engine_path = cache / "engines" / f"{key}.engine"
    sidecar = {
        "gpu": asdict(gpu),
        "tensorrt": trt.__version__,
        "onnx": str(onnx_path),
        "onnx_sha256": onnx_sha256,
        "precision": precision,
        "profile": asdict(profile),
        "vdsr": __version__,
    }
    if not engine_path.is_file():
        built = _build(
            onnx_bytes,
            onnx_path,
            precision=precision,
            profile=profile,
            cache=cache,
            gpu=gpu,
            workspace_gib=workspace_gib,
        )
        atomic_write_bytes(engine_path, built)
        atomic_write_text(sidecar_path(engine_path), json.dumps(sidecar, indent=1) + "\n")
    if destination is None:
        return engine_path
    with engine_path.open("rb") as source:
        atomic_write(destination, lambda f: shutil.copyfileobj(source, f))
    atomic_write_text(sidecar_path(destination), json.dumps(sidecar, indent=1) + "\n")
    return destination


def sidecar_path(engine: Path) -> Path:
    """`vdsr.engine` -> `vdsr.engine.json`: never `vdsr.json`, which is the model card beside the weights."""
    return engine.with_name(engine.name + ".json")


def _build(
    onnx_bytes: bytes, onnx_path: Path, *, precision: str, profile: Profile, cache: Path, gpu: Gpu, workspace_gib: int
) -> bytes:
    import tensorrt as trt  # build_engine has checked the GPU and the builder

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # the fp16 graph carries its precision in its types; the fp32 graph lets TensorRT 10 choose fp16 kernels
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if precision == "fp16" else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        for message in errors:
            log.error("TensorRT ONNX parser: %s: %s", onnx_path, message)
        raise EngineBuildError(
            f"{onnx_path}: TensorRT's ONNX parser failed with {len(errors)} errors: " + " | ".join(errors)
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if precision != "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    timing_path = (
        cache / "timing" / f"{gpu.name.replace(' ', '_')}-sm{gpu.compute_capability}-trt{trt.__version__}.cache"
    )
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    if not config.set_timing_cache(timing, ignore_mismatch=False):
        log.warning("TensorRT refused the timing cache %s; building without it", timing_path)
    optimisation = builder.create_optimization_profile()
    name = network.get_input(0).name
    low, mid, high = (trt.Dims([n, 1, h, w]) for n, h, w in (profile.min, profile.opt, profile.max))
    optimisation.set_shape(name, low, mid, high)
    config.add_optimization_profile(optimisation)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path} (see TensorRT's log above)")
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


class TensorRTBackend(Backend):
    """A TensorRT engine for one ONNX graph (built, or reused from the cache, by build_engine) with torch CUDA
    tensors as I/O. Not executed in this project's environment (no TensorRT there); type-checked against
    tensorrt-stubs in CI."""

    arrays: Literal["numpy", "torch"] = "torch"

    def __init__(self, spec: TensorRT) -> None:
        profile, model = spec.profile, spec.model
        engine_path = build_engine(model.graphs[spec.precision].path, profile, precision=spec.precision)
        import tensorrt as trt  # build_engine has checked the GPU, then TensorRT
        import torch

        self.halo, self.scales = model.halo or 0, list(model.scales)
        self.precision, self.architecture = spec.precision, model.architecture
        self.name, self.device = "tensorrt", "cuda"
        self.min_input, self.max_input = profile.min, profile.max  # callers keep to them (a shape outside: refused)
        self.preferred_batch = min(GPU_BATCH, profile.max[0])
        self.runtime: trt.Runtime | None = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine: trt.ICudaEngine | None = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise EngineBuildError(f"{engine_path}: TensorRT could not deserialize the engine (see TensorRT's log)")
        self.context: trt.IExecutionContext | None = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineBuildError(f"{engine_path}: expected one input and one output, got {inputs} and {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        half = self.engine.get_tensor_dtype(self.input_name) == trt.DataType.HALF
        if self.engine.get_tensor_dtype(self.output_name) != self.engine.get_tensor_dtype(self.input_name):
            raise EngineBuildError(f"{engine_path}: input and output types differ; not one of this package's graphs")
        self.dtype = torch.float16 if half else torch.float32
        self.stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def run(self, batch: Any) -> Any:
        """The engine on a (N, 1, H, W) float32 CUDA tensor; float32 result on the GPU."""
        import torch

        check_batch(batch)
        if self.context is None:
            raise BackendError("tensorrt: the backend is closed")
        self.stream.wait_stream(torch.cuda.current_stream())  # the input was made on the current stream
        with torch.cuda.stream(self.stream):
            x = batch.to(self.dtype).contiguous()
            out = torch.empty_like(x)
            ready = (
                self.context.set_input_shape(self.input_name, tuple(x.shape))
                and self.context.set_tensor_address(self.input_name, x.data_ptr())
                and self.context.set_tensor_address(self.output_name, out.data_ptr())
            )
            if not ready:  # a shape outside the profile, or a stale address, would read or write past these buffers
                raise BackendError(f"TensorRT refused the shape or buffers of a batch of shape {tuple(x.shape)}")
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError(f"TensorRT execute_async_v3 failed for a batch of shape {tuple(x.shape)}")
            result = out.float()
        torch.cuda.current_stream().wait_stream(self.stream)  # callers use the result on the current stream
        return result

    def close(self) -> None:
        """Context, engine, then runtime: TensorRT objects are released in the reverse order of their making."""
        self.context = None
        self.engine = None
        self.runtime = None
