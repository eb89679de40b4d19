"""Choosing a backend is a pure function of (model, machine, request): checked on a table of machines, no session
opened (vdsr.runtime.backends.choice)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vdsr.architectures import VDSRConfig
from vdsr.errors import UsageError
from vdsr.metadata import Int8Facts
from vdsr.model import Graph, Model
from vdsr.runtime.backends.choice import choose_backend, plan_backends
from vdsr.runtime.backends.specs import OrtCpu, OrtCuda, Profile, Request, TensorRT, TorchCpu, TorchCuda, profile_for
from vdsr.runtime.machine import Machine

WITHIN = Int8Facts(True, 0.01, {"Set5 x2 bicubic": 0.01}, {"bicubic": 0.02}, [], "MinMax", "")
OVER = Int8Facts(False, 0.03, {"Set5 x2 bicubic": 0.03}, {"bicubic": 0.02}, [], "MinMax", "")


def shipped_like(int8: Int8Facts | None = WITHIN, *, weights: bool = True) -> Model:
    """A model as a shipped one is: weights and fp32, fp16 and int8 graphs (files never opened here)."""
    graphs = {
        "fp32": Graph(Path("m.onnx"), "fp32"),
        "fp16": Graph(Path("m_fp16.onnx"), "fp16"),
        "int8": Graph(Path("m_int8.onnx"), "int8", int8=int8),
    }
    return Model("m", "vdsr", VDSRConfig(), (2, 3, 4), 20, Path("m.safetensors") if weights else None, graphs)


GIVEN = Model("g", "vdsr", VDSRConfig(), (2,), 20, None, {"fp16": Graph(Path("g.onnx"), "fp16")}, given=True)
ALL = frozenset({"onnxruntime", "torch", "tensorrt"})
CUDA = ("CUDAExecutionProvider", "CPUExecutionProvider")
AVX2 = frozenset({"avx2", "fma"})

MACHINES = {
    "AVX2 laptop, base install": Machine(AVX2, installed=frozenset({"onnxruntime"})),
    "old CPU, no AVX2": Machine(frozenset({"sse4_2", "avx"}), installed=frozenset({"onnxruntime"})),
    "Arm with dotprod": Machine(frozenset({"fp", "asimd", "asimddp"}), installed=frozenset({"onnxruntime"})),
    "VNNI server with torch": Machine(frozenset({"avx2", "avx512_vnni"}), installed=ALL - {"tensorrt"}),
    "GPU, everything": Machine(AVX2, nvidia_driver=True, installed=ALL, ort_providers=CUDA, torch_cuda=""),
    "GPU, no TensorRT": Machine(
        AVX2, nvidia_driver=True, installed=ALL - {"tensorrt"}, ort_providers=CUDA, torch_cuda=""
    ),
    "GPU driver, CPU torch": Machine(
        AVX2,
        nvidia_driver=True,
        installed=frozenset({"onnxruntime", "torch"}),
        torch_cuda="PyTorch 2.13.0+cpu sees no CUDA GPU",
    ),
    "torch only": Machine(AVX2, installed=frozenset({"torch"})),
}


@pytest.mark.parametrize(
    ("machine", "request_", "model", "expected", "why"),
    [
        ("AVX2 laptop, base install", Request(), shipped_like(), OrtCpu(shipped_like(), "int8"), "AVX2, where int8"),
        ("old CPU, no AVX2", Request(), shipped_like(), OrtCpu(shipped_like(), "fp32"), "int8 not known to be faster"),
        ("Arm with dotprod", Request(), shipped_like(), OrtCpu(shipped_like(), "int8"), "int8 dot products (asimddp)"),
        (
            "VNNI server with torch",
            Request(),
            shipped_like(OVER),
            OrtCpu(shipped_like(OVER), "fp32"),
            "the int8 graph is not within its PSNR cost bar",
        ),
        (
            "VNNI server with torch",
            Request(),
            shipped_like(None),
            OrtCpu(shipped_like(None), "fp32"),
            "not within its PSNR cost bar",
        ),  # an int8 graph written before the bar: never by default
        (
            "VNNI server with torch",
            Request(precision="int8"),
            shipped_like(OVER),
            OrtCpu(shipped_like(OVER), "int8"),
            "",
        ),  # asked for: given
        ("VNNI server with torch", Request("torch-cpu"), shipped_like(), TorchCpu(shipped_like()), ""),
        ("GPU, everything", Request(), shipped_like(), TensorRT(shipped_like(), "fp16", profile_for(512, 4, 20)), ""),
        (
            "GPU, everything",
            Request(tile=256, batch=2),
            shipped_like(),
            TensorRT(shipped_like(), "fp16", Profile((1, 32, 32), (2, 296, 296), (2, 296, 296))),
            "",
        ),
        ("GPU, no TensorRT", Request(), shipped_like(), OrtCuda(shipped_like(), "fp16"), ""),
        ("GPU, no TensorRT", Request(device="cuda:1"), shipped_like(), OrtCuda(shipped_like(), "fp16", 1), ""),
        (
            "GPU, no TensorRT",
            Request("torch-cuda", device="cuda:1"),
            shipped_like(),
            TorchCuda(shipped_like(), device=1),
            "",
        ),
        ("GPU, no TensorRT", Request(device="cpu"), shipped_like(), OrtCpu(shipped_like(), "int8"), "AVX2"),
        ("GPU driver, CPU torch", Request(), shipped_like(), OrtCpu(shipped_like(), "int8"), "AVX2"),
        ("torch only", Request(), shipped_like(), TorchCpu(shipped_like()), ""),
        ("GPU, everything", Request(), GIVEN, TensorRT(GIVEN, "fp16", profile_for(512, 4, 20)), ""),
        ("AVX2 laptop, base install", Request(), GIVEN, OrtCpu(GIVEN, "fp16"), ""),  # a given graph runs as it is
    ],
)
def test_the_choice_on_a_table_of_machines(
    machine: str, request_: Request, model: Model, expected: object, why: str
) -> None:
    spec, reason = choose_backend(model, MACHINES[machine], request_)
    assert spec == expected, machine
    assert why in reason and (why or not reason), reason


def test_every_backend_not_chosen_says_why() -> None:
    options = plan_backends(shipped_like(weights=False), MACHINES["GPU driver, CPU torch"], Request())
    reasons = {o.backend: o.reason for o in options if o.spec is None}
    assert reasons == {
        "tensorrt": "TensorRT is not installed (pip install 'vdsr[trt]')",
        "onnxruntime-cuda": "this onnxruntime has no CUDA provider (pip install 'vdsr[gpu]')",
        "torch-cuda": "needs .safetensors weights for m; the model given is ONNX only",
        "torch-cpu": "needs .safetensors weights for m; the model given is ONNX only",
    }
    no_driver = plan_backends(shipped_like(), MACHINES["AVX2 laptop, base install"], Request())
    assert [o.reason for o in no_driver[:3]] == ["no NVIDIA GPU driver found"] * 3
    assert no_driver[-1].reason == "PyTorch is not installed (pip install 'vdsr[train]')"
    spec, reasons_text = choose_backend(shipped_like(), MACHINES["GPU driver, CPU torch"], Request("torch-cuda"))
    assert spec is None and reasons_text == "torch-cuda: PyTorch 2.13.0+cpu sees no CUDA GPU"


def test_precisions_a_backend_cannot_run_are_reasons() -> None:
    avx2 = MACHINES["GPU, everything"]
    weights_only = Model("w", "vdsr", VDSRConfig(), (2,), 20, Path("w.safetensors"))
    cases = [
        (Request("onnxruntime-cuda", precision="int8"), shipped_like(), "the int8 graph runs on onnxruntime-cpu only"),
        (Request("torch-cpu", precision="fp16"), shipped_like(), "runs fp32 only, not fp16"),
        (Request("torch-cuda", precision="fp32"), shipped_like(), "runs fp16 only, not fp32"),
        (
            Request("onnxruntime-cpu", precision="int8"),
            GIVEN,
            "--precision int8 picks among shipped graphs; g.onnx runs as it is",
        ),
        (Request("onnxruntime-cpu"), weights_only, "needs an ONNX graph of w; the model given is safetensors only"),
        (
            Request("tensorrt", device="cuda:1"),
            shipped_like(),
            "runs on the first visible GPU only: pick another with CUDA_VISIBLE_DEVICES",
        ),
    ]
    for request, model, reason in cases:
        assert choose_backend(model, avx2, request) == (None, f"{request.backend}: {reason}")
    fp32_only = Model("f", "vdsr", VDSRConfig(), (2,), 20, None, {"fp32": Graph(Path("f.onnx"), "fp32")})
    assert choose_backend(fp32_only, avx2, Request("onnxruntime-cuda", precision="fp16"))[1].endswith(
        "no fp16 ONNX graph of f"
    )
    assert choose_backend(fp32_only, avx2, Request("onnxruntime-cuda"))[0] == OrtCuda(fp32_only, "fp32")


def test_requests_that_cannot_exist_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="Unknown backend 'cuda'"):
        Request("cuda")
    with pytest.raises(UsageError, match="Unknown precision 'int4'"):
        Request(precision="int4")
    with pytest.raises(UsageError, match="Backend onnxruntime-cpu does not run on device cuda:1"):
        Request("onnxruntime-cpu", device="cuda:1")
    with pytest.raises(UsageError, match="Unknown device 'gpu'"):
        Request(device="gpu")
    with pytest.raises(UsageError, match="tile a whole number >= 1, got 0"):
        Request(tile=0)
    with pytest.raises(UsageError, match="tile a whole number >= 1, got 2.5"):  # at once, not a TypeError in use
        Request(tile=2.5)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="batch a whole number >= 1, got True"):
        Request(batch=True)
    with pytest.raises(UsageError, match="cpu_threads a whole number >= 0, got -1"):
        Request(cpu_threads=-1)
    assert Request(tile=np.int64(64), batch=np.int32(2)).tile == 64  # numpy integers are whole numbers


def test_the_engine_profile_is_the_windows_the_runtime_sends() -> None:
    profile = profile_for(512, 4, 20)
    assert profile.opt == profile.max == (4, 552, 552) and profile.min == (1, 32, 32)  # tile + 2 x halo, square
    assert profile_for(8, 1, 0) == Profile((1, 8, 8), (1, 8, 8), (1, 8, 8))  # a window smaller than 32
