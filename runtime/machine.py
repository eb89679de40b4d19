"""What this machine has: CPU model and instruction-set flags, NVIDIA driver and GPUs. Found without importing torch
(the CPU path must not load it). Backends choose by these facts, the trainer picks bf16 by them, and benchmark
results record them."""

from __future__ import annotations

import ctypes.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path

# Instruction-set flags that decide what runs fast (Linux /proc/cpuinfo names), recorded with benchmark results
NOTABLE_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                     "asimddp")  # fmt: skip
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})  # x86 VNNI/AMX, Arm dotprod
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


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


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or platform.machine()  # not Linux: what platform knows


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
