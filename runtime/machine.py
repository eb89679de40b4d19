"""What this machine has: CPU model and instruction-set flags, NVIDIA driver and GPUs, the inference libraries.
Found without importing torch where there is no NVIDIA driver (the CPU path must not load it). Backends are chosen
by these facts (`Machine`, vdsr.runtime.backends.choice), the trainer picks bf16 by them, and benchmark results
record them."""

from __future__ import annotations

import ctypes.util
import importlib.util
import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from vdsr.errors import UsageError

# Instruction-set flags that decide what runs fast (Linux /proc/cpuinfo names), recorded with benchmark results
NOTABLE_CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "asimddp",
)
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})  # x86 VNNI/AMX, Arm dotprod
INT8_AVX2_SPEEDUP = 1.6  # ONNX Runtime int8 over fp32 on AVX2-only CPUs (2-core EPYC: 1.62-1.70; Zen 3: 1.7)


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""  # not Linux: no flags known


def cpu_features() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (avx2, avx512_vnni, amx_bf16, asimddp, ...); empty elsewhere."""
    flags: set[str] = set()
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, Arm
            flags.update(value.split())
    return frozenset(flags)


def int8_speedup_reason(flags: frozenset[str] | None = None) -> str | None:
    """Why ONNX Runtime's int8 kernels beat its fp32 ones on a CPU with these flags (default: this one), or None
    where that is not known: int8 dot products (x86 VNNI/AMX, Arm dotprod), or x86 AVX2 (u8 x s8 pairs summed in 16
    bits, then 32)."""
    flags = cpu_features() if flags is None else flags
    if flags & INT8_DOT_PRODUCT_FLAGS:
        return f"int8 dot products ({', '.join(sorted(flags & INT8_DOT_PRODUCT_FLAGS))})"
    if "avx2" in flags:
        return f"AVX2, where int8 ran {INT8_AVX2_SPEEDUP}x fp32 or more (AVX2-only AMD CPUs without VNNI)"
    return None


def _cpuinfo_field(name: str) -> str | None:
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()  # not Linux: what platform knows


def bf16_training_faster() -> bool:
    """Whether bf16 autocast trains faster than fp32 on this CPU (VDSR, 2 threads, python -m
    vdsr.bench.scripts.train_speed and the training runs): AMX 185 patches/s against 48; an AMD EPYC with
    AVX-512-BF16 53 against 27; an Intel Xeon with AVX-512-BF16 but no AMX 20 against 27 (slower); without
    either, bf16 is emulated (slower)."""
    flags = cpu_features()
    amd = _cpuinfo_field("vendor_id") == "AuthenticAMD"
    return "amx_bf16" in flags or ("avx512_bf16" in flags and amd)


def physical_memory() -> int | None:
    """Bytes of memory this process may use: physical memory (POSIX sysconf), or a container's smaller limit (cgroup
    v2 memory.max, v1 memory.limit_in_bytes); None where none is known."""
    known = []
    try:
        known.append(int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE")))
    except (AttributeError, OSError, ValueError):
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            known.append(int(Path(limit).read_text(encoding="ascii").strip()))
        except (OSError, ValueError):  # absent, or "max": no limit
            continue
    return min(known) if known else None


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is installed (native, or WSL2's GPU paravirtualisation)."""
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia/version").exists() or Path("/dev/dxg").exists()
    return ctypes.util.find_library("nvcuda" if sys.platform == "win32" else "cuda") is not None


def gpu_names() -> list[str]:
    """NVIDIA GPUs as nvidia-smi reports them (name, driver); empty when there is no nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
    try:
        result = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []  # a broken driver install: report no GPU rather than fail the benchmark
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class Machine:
    """The facts a backend is chosen by: no probing happens while choosing, so the choice can be tested on a table of
    machines (vdsr.runtime.backends.choice)."""

    cpu_flags: frozenset[str] = frozenset()
    nvidia_driver: bool = False
    installed: frozenset[str] = frozenset()  # of onnxruntime, torch, tensorrt: the ones importable here
    ort_providers: tuple[str, ...] = ("CPUExecutionProvider",)  # compiled into this onnxruntime (not all may work)
    torch_cuda: str | None = None  # why torch's CUDA cannot run ("": it can); None: not asked (no driver)


def probe_machine(*, gpu: bool = True) -> Machine:
    """This machine's facts. torch and onnxruntime's providers are looked at only where an NVIDIA driver is installed
    and `gpu` backends may run: a CPU machine, or a request for the CPU, loads neither here."""
    installed = frozenset(m for m in ("onnxruntime", "torch", "tensorrt") if importlib.util.find_spec(m) is not None)
    driver = gpu and nvidia_driver_present()
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    torch_cuda = None
    if driver and "onnxruntime" in installed:
        import onnxruntime  # the `gpu` extra lists CUDAExecutionProvider (compiled in; whether it loads is seen later)

        providers = tuple(onnxruntime.get_available_providers())
    if driver and "torch" in installed:
        import torch  # heavy: only where a GPU backend could run

        torch_cuda = "" if torch.cuda.is_available() else f"PyTorch {torch.__version__} sees no CUDA GPU"
    return Machine(cpu_features(), driver, installed, providers, torch_cuda)


GIB = 1 << 30


def default_memory_budget() -> int:
    """The network's working memory on CPUs when not given: a quarter of the memory this process may use (a
    container's limit included), between 256 MiB and 4 GiB (1 GiB where the OS does not say)."""
    total = physical_memory()
    return GIB if total is None else min(4 * GIB, max(GIB // 4, total // 4))


def checked_memory_budget(budget: object) -> int:
    """A memory budget in bytes: a finite number of at least 1 MiB (a float is taken whole), else UsageError."""
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not math.isfinite(budget):
        raise UsageError(f"Expected a memory budget in bytes, a finite number; got {budget!r}")
    if budget < 1 << 20:
        raise UsageError(f"Expected a memory budget of at least 1 MiB, got {budget:g} bytes")
    return int(budget)
