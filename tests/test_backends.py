"""Backends behind one interface, choosing one, and the Python API on top."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vdsr import Upscaler
from vdsr.architectures import VDSRConfig
from vdsr.errors import (
    EXIT_BACKEND,
    EXIT_FAILED,
    EXIT_USAGE,
    BackendError,
    BackendUnavailable,
    ImageError,
    ModelError,
    UsageError,
    exit_code,
)
from vdsr.model import Model
from vdsr.runtime import machine
from vdsr.runtime.backends import opening
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend
from vdsr.runtime.backends.opening import open_chosen
from vdsr.runtime.backends.pytorch import TorchBackend
from vdsr.runtime.backends.specs import OrtCuda, Request, parse_device
from vdsr.runtime.resize import output_shape_for

CPU_MACHINE = machine.Machine(frozenset({"avx2", "fma"}), installed=frozenset({"onnxruntime", "torch"}))
GPU_MACHINE = machine.Machine(
    frozenset({"avx2", "fma"}),
    nvidia_driver=True,
    installed=frozenset({"onnxruntime", "torch"}),
    ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
    torch_cuda="",
)


def open_backend(
    choice: str, model: str | Path, log: object = lambda line: None, *, machine: machine.Machine | None = None
) -> object:
    """What the runtime opens for `choice` (the old test helper's signature, over the new API)."""
    return open_chosen(Model.load(model), Request(choice), log, machine=machine)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(1, 1, 17, 33), (3, 1, 64, 48), (1, 1, 1, 1)])
def test_onnx_runtime_and_torch_agree(tiny_model: dict[str, Path], shape: tuple[int, ...]) -> None:
    batch = np.random.default_rng(0).random(shape, dtype=np.float32)
    ort_backend, torch_backend = OnnxRuntimeBackend(tiny_model["onnx"]), TorchBackend(tiny_model["weights"])
    assert np.abs(ort_backend(batch) - torch_backend(batch)).max() <= 1e-5
    assert ort_backend.halo == torch_backend.halo == 4  # from the graph's metadata and from the weights
    assert ort_backend.scales == torch_backend.scales == [2, 3, 4]


def test_auto_without_a_gpu_picks_onnx_runtime_and_says_why(tiny_model: dict[str, Path]) -> None:
    lines: list[str] = []
    backend = open_backend("auto", tiny_model["onnx"], lines.append, machine=CPU_MACHINE)  # as on CI
    assert backend.name == "onnxruntime-cpu" and len(lines) == 1  # type: ignore[attr-defined]
    assert "skipped: tensorrt: no NVIDIA GPU driver found" in lines[0] and "torch-cuda" in lines[0]
    lines.clear()  # weights only: ONNX Runtime cannot run them, PyTorch can
    assert open_backend("auto", tiny_model["weights"], lines.append, machine=CPU_MACHINE).name == "torch-cpu"  # type: ignore[attr-defined]
    assert "onnxruntime-cpu: needs an ONNX graph" in lines[0]


def test_backend_choices_that_cannot_work_are_clear_errors(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Backend torch-cpu is not available: needs .safetensors"):
        open_backend("torch-cpu", tiny_model["onnx"])
    with pytest.raises(ValueError, match="Backend tensorrt is not available"):
        open_backend("tensorrt", tiny_model["onnx"])
    with pytest.raises(ValueError, match="Unknown backend 'cuda'"):
        open_backend("cuda", tiny_model["onnx"])
    (tmp_path / "model.pt").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="expected an .onnx graph or .safetensors"):
        Model.load(tmp_path / "model.pt")
    with pytest.raises(
        ValueError, match=r"expected a shipped model \(vdsr, vdsr_real, srcnn, srcnn_x3, srcnn_x4\) or an existing"
    ):
        Model.load(tmp_path / "missing.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="broken.onnx: not a well-formed ONNX file"):  # refused as it is loaded
        Model.load(tmp_path / "broken.onnx")


def test_default_cpu_path_imports_no_torch(tiny_model: dict[str, Path]) -> None:
    code = (
        "import sys, numpy as np\n"
        "import vdsr.runtime.machine as m\n"
        "m.nvidia_driver_present = lambda: False  # a CPU machine, even where a driver is installed\n"
        "from vdsr import Upscaler\n"
        "import vdsr.runtime.cli\n"
        f"u = Upscaler({str(tiny_model['onnx'])!r})\n"
        "assert u.upscale(np.zeros((8, 8, 3), np.uint8), 2).shape == (16, 16, 3)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'tensorrt')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_upscaler_types_in_and_out(tiny_model: dict[str, Path]) -> None:
    lines: list[str] = []
    upscaler = Upscaler(tiny_model["onnx"], log=lines.append)
    rgb = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    out = upscaler.upscale(rgb, 2)
    assert out.dtype == np.uint8 and out.shape == (18, 14, 3)
    as_float = upscaler.upscale(rgb.astype(np.float32) / 255, 2)
    assert as_float.dtype == np.float32 and np.abs(as_float * 255 - out).max() <= 0.5 + 1e-3  # the same, unrounded
    gray16 = np.random.default_rng(2).integers(0, 65536, (5, 6), dtype=np.uint16)
    assert upscaler.upscale(gray16, 2.5).dtype == np.uint16 and upscaler.upscale(gray16, 2.5).shape == (13, 15)
    assert Image.fromarray(upscaler.upscale(gray16[..., 0:3].astype(np.uint8), 2)).mode == "L"  # (H, W) in and out
    image = Image.fromarray(rgb)
    image.info["icc_profile"] = b"profile"
    big = upscaler.upscale(image, 3)
    assert isinstance(big, Image.Image) and big.size == (21, 27) and big.mode == "RGB"
    assert big.info["icc_profile"] == b"profile" and np.array_equal(np.asarray(big), upscaler.upscale(rgb, 3))
    assert upscaler.upscale(Image.fromarray(rgb).convert("LA"), 2).mode == "LA"
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.info["icc_profile"] = b"a CMYK profile"
    assert "icc_profile" not in upscaler.upscale(cmyk, 2).info  # it does not describe the RGB result
    with pytest.raises(ValueError, match="uint8, uint16 or float"):
        upscaler.upscale(rgb.astype(np.int32), 2)
    assert not any("warning" in line for line in lines)
    upscaler.upscale(rgb, 1.5)  # below the trained scales: works, with a warning once
    upscaler.upscale(rgb, 1.5)
    warned = [line for line in lines if "outside the scales the model was trained for" in line]
    assert len(warned) == 1 and "worse than bicubic" in warned[0]
    assert warned[0].endswith("models trained for x1.5: vdsr_real")  # the shipped one that is
    upscaler.upscale(rgb[:8, :8], 5)  # above them: nothing measured, and said so
    assert "not measured" in lines[-1] and "x5 is outside" in lines[-1]


def test_upscaler_output_matches_the_whole_image_network(tiny_model: dict[str, Path]) -> None:
    """Tiles of 8 with the model's halo give what one pass over the whole ILR gives (140 rows: more than the 64 rows
    converted back to RGB at a time)."""
    rgb = np.random.default_rng(3).random((70, 31, 3)).astype(np.float32)
    small_tiles = Upscaler(tiny_model["onnx"], tile=8, batch=3).upscale(rgb, 2)
    one_tile = Upscaler(tiny_model["onnx"], tile=1000).upscale(rgb, 2)
    assert small_tiles.shape == (*output_shape_for((70, 31), 2), 3)
    assert np.abs(small_tiles - one_tile).max() <= 1e-6


@pytest.mark.parametrize(("channels", "column_chunk"), [(1, 2048), (2, 2048), (3, 2048), (4, 7)])
def test_device_pipeline_equals_the_numpy_pipeline(
    tiny_model: dict[str, Path], channels: int, column_chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Torch backends run colour, bicubic ILR, tiles and rounding on their device (vdsr.runtime.picture_torch); on
    the CPU that path must give what ONNX Runtime with the numpy path gives (one product for all output columns, or
    many: a wide image's)."""
    from vdsr.runtime import picture_torch

    monkeypatch.setattr(picture_torch, "COLUMN_CHUNK", column_chunk)
    pixels = np.random.default_rng(channels).random((27, 21, channels)).astype(np.float32)
    on_device = Upscaler(tiny_model["weights"], "torch-cpu", tile=24, batch=3)
    numpy_path = Upscaler(tiny_model["onnx"], "onnxruntime-cpu", tile=24, batch=3)
    for scale in (2.5, 3):
        a, b = on_device.upscale(pixels, scale), numpy_path.upscale(pixels, scale)
        assert a.shape == b.shape == (*output_shape_for((27, 21), scale), channels)
        assert np.abs(a - b).max() < 1e-5
    as_uint8 = np.rint(pixels * 255).astype(np.uint8)
    assert np.abs(on_device.upscale(as_uint8, 2).astype(int) - numpy_path.upscale(as_uint8, 2)).max() <= 1


def test_backends_say_what_callers_need_and_release_it(tiny_model: dict[str, Path]) -> None:
    batch = np.zeros((2, 1, 9, 7), np.float32)
    with OnnxRuntimeBackend(tiny_model["onnx"]) as ort_backend, TorchBackend(tiny_model["weights"]) as torch_backend:
        for backend, arrays in ((ort_backend, "numpy"), (torch_backend, "torch")):
            assert (backend.device, backend.arrays, backend.architecture) == ("cpu", arrays, "vdsr")
            assert backend.min_input == (1, 1, 1) and backend.max_input is None
            assert backend.preferred_batch == 1 and backend.preferred_tile == 512
            assert backend(batch).shape == batch.shape
    for backend in (ort_backend, torch_backend):  # closed on leaving the block: nothing left to run on
        with pytest.raises(BackendError, match="closed"):
            backend(batch)
    with Upscaler(tiny_model["onnx"]) as upscaler:
        assert upscaler.batch == 1 and upscaler.tile == 512  # the backend's preferred ones
    with pytest.raises(BackendError, match="closed"):
        upscaler.upscale(np.zeros((4, 4, 3), np.uint8), 2)


def test_auto_selection_skips_unavailable_backends_only(
    tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = opening.open_backend

    def bug_in_gpu_backend(spec: object) -> object:
        if isinstance(spec, OrtCuda):
            raise TypeError("a bug, not an unavailable backend")
        if spec.name != "onnxruntime-cpu":  # type: ignore[attr-defined]
            raise BackendUnavailable("no GPU here")
        return real_open(spec)  # type: ignore[arg-type]

    monkeypatch.setattr(opening, "open_backend", bug_in_gpu_backend)
    with pytest.raises(TypeError, match="a bug"):  # never read as "skipped"
        open_backend("auto", tiny_model["onnx"], machine=GPU_MACHINE)


def test_errors_map_to_exit_codes_in_one_table() -> None:
    assert exit_code(UsageError("x")) == exit_code(BackendUnavailable("x")) == EXIT_USAGE == 2
    assert exit_code(BackendError("x")) == EXIT_BACKEND == 4
    assert exit_code(ImageError(Path("a.png"), "x")) == exit_code(ModelError("x")) == EXIT_FAILED == 1
    assert isinstance(ImageError(Path("a.png"), "x"), ValueError) and not isinstance(BackendError("x"), ValueError)


def test_images_smaller_than_the_backends_smallest_input_fail_one_by_one(
    tiny_model: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(folder / "tiny.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "big.png")
    with Upscaler(tiny_model["onnx"]) as upscaler:
        upscaler.backend.min_input = (1, 32, 32)  # as a TensorRT engine's profile would say
        report = upscaler.upscale_folder(folder, 2, tmp_path / "out")
    assert [p.name for p in report.written] == ["big.png"] and len(report.failed) == 1
    assert f"{folder / 'tiny.png'}: the result is smaller than onnxruntime-cpu's smallest input" in str(
        report.failed[0]
    )


def test_a_backend_that_cannot_start_is_skipped_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA failing as PyTorch starts (out of memory, a busy device) is a reason to try the next backend, said once."""
    from vdsr.runtime.backends import pytorch

    def cuda_fails(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")

    monkeypatch.setattr(pytorch.TorchBackend, "__init__", cuda_fails)
    lines: list[str] = []
    without_cuda_provider = dataclasses.replace(GPU_MACHINE, ort_providers=("CPUExecutionProvider",))
    with open_backend("auto", "srcnn", lines.append, machine=without_cuda_provider) as backend:  # type: ignore[attr-defined]
        assert backend.name == "onnxruntime-cpu"  # shipped: a graph and weights
    assert "torch-cuda: PyTorch could not start (CUDA error: out of memory)" in lines[0]
    with pytest.raises(UsageError, match="Backend torch-cpu is not available: PyTorch could not start"):
        open_backend("torch-cpu", "srcnn", machine=CPU_MACHINE)


def test_a_model_file_that_is_not_one_is_refused_before_any_backend(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match=r"broken.onnx: not a well-formed ONNX file"):
        Upscaler(tmp_path / "broken.onnx")


def test_device_pipeline_failures_stop_the_run(
    tiny_model: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch allocates around the network too (the upload, the ILR): out of memory there is the backend's failure."""
    from vdsr.runtime import picture_torch

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(picture_torch, "picture_steps_torch", out_of_memory)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    with Upscaler(tiny_model["weights"], "torch-cpu") as upscaler:
        with pytest.raises(BackendError, match="torch-cpu on cpu: CUDA out of memory"):
            upscaler.upscale(np.zeros((8, 8, 3), np.uint8), 2)
        report = upscaler.upscale_folder(tmp_path, 2, tmp_path.parent / "out")
    assert report.stopped and "a.png" in report.stopped and not report.written and not report.failed


def test_the_api_refuses_pixels_it_cannot_take_before_any_work(tiny_model: dict[str, Path]) -> None:
    with Upscaler(tiny_model["onnx"]) as upscaler:
        on_255 = np.full((4, 4, 3), 200.0, np.float32)  # an 8-bit image as floats: would come out white
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got 200 to 200"):
            upscaler.upscale(on_255, 2)
        with pytest.raises(ValueError, match="NaN or inf"):
            upscaler.upscale(np.array([[np.nan, 0.5], [0.5, 0.5]], np.float32), 2)
        with pytest.raises(ValueError, match="NaN or inf"):
            upscaler.upscale(np.full((3, 3), np.inf), 2)
        huge = np.broadcast_to(np.zeros(1, np.uint8), (20_000, 20_000, 3))  # 1.2 GB as an array: not allocated here
        with pytest.raises(ValueError, match="the 160000x160000 result is over the limit of 2147483648 output pixels"):
            upscaler.upscale(huge, 8)
        with pytest.raises(ValueError, match="over the limit of 100 output pixels"):
            upscaler.upscale(np.zeros((8, 8), np.uint8), 2, max_output_pixels=100)
        assert upscaler.upscale(np.zeros((8, 8), np.uint8), 2, max_output_pixels=256).shape == (16, 16)


def test_device_limits_the_backends_and_names_the_gpu(tiny_model: dict[str, Path]) -> None:
    """Upscaler(device=...) picks where to run: cpu runs a CPU backend even where a GPU is; cuda:N names GPU N."""
    from vdsr.runtime.backends.onnx_runtime import cuda_providers

    with Upscaler(tiny_model["onnx"], device="cpu") as upscaler:
        assert upscaler.backend.device == "cpu"
    with pytest.raises(UsageError, match="Backend onnxruntime-cpu does not run on device cuda:1"):
        Upscaler(tiny_model["onnx"], "onnxruntime-cpu", device="cuda:1")
    with pytest.raises(UsageError, match="Unknown device 'gpu'"):
        Upscaler(tiny_model["onnx"], device="gpu")
    if not machine.nvidia_driver_present():
        with pytest.raises(UsageError, match="No backend can run here: tensorrt: no NVIDIA GPU driver"):
            Upscaler(tiny_model["onnx"], device="cuda:1")
    assert cuda_providers(1)[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert parse_device("cuda:3") == ("cuda", 3) and parse_device(None) == (None, 0)


def test_a_list_of_images_comes_back_as_a_list_with_tiles_batched_across_them(
    tiny_model: dict[str, Path], rng: np.random.Generator
) -> None:
    images = [
        rng.integers(0, 256, (6, 5, 3), dtype=np.uint8),
        np.full((4, 4), 0.5, np.float32),
        rng.integers(0, 256, (6, 5, 3), dtype=np.uint8),
        Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)),
    ]
    with Upscaler(tiny_model["onnx"], batch=4) as upscaler:
        one_by_one = [upscaler.upscale(image, 2) for image in images]
        batches: list[int] = []
        run = upscaler.backend.run
        upscaler.backend.run = lambda batch: batches.append(len(batch)) or run(batch)  # type: ignore[method-assign]
        out = upscaler.upscale(images, 2)
        assert [np.shape(o) for o in out[:3]] == [(12, 10, 3), (8, 8), (12, 10, 3)] and out[0].dtype == np.uint8
        for got, expected in zip(out, one_by_one, strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
        assert batches == [3, 1]  # the three 12x10 results' windows in one call, the 8x8 one in another
        with pytest.raises(ValueError, match="float pixel values must lie in"):
            upscaler.upscale([np.full((4, 4), 200.0)], 2)  # 0..255 floats: one line, not a white image


def test_cpu_tiles_are_sized_to_the_memory_budget() -> None:
    """Whole images when their window and band fit the budget (no halo recomputed); else the largest tiles whose
    windows (a batch of them) and band of rows fit; never below 2 x halo."""
    from vdsr.runtime.tiling import BAND_BYTES_PER_PIXEL, tile_for_memory, working_memory

    def fitted(shape: tuple[int, int], budget: int, batch: int = 1) -> int:
        side = tile_for_memory(shape, budget=budget, bytes_per_pixel=832, halo=20, batch=batch)
        assert working_memory(shape, side, bytes_per_pixel=832, halo=20, batch=batch) <= budget
        if side < max(shape):  # the next size up would not fit
            assert working_memory(shape, side + 1, bytes_per_pixel=832, halo=20, batch=batch) > budget
        return side

    assert fitted((1536, 2048), 4 << 30) == 2048  # 2.8 GB with its band: whole
    assert working_memory((1536, 2048), 2048, bytes_per_pixel=832, halo=20) == 1536 * 2048 * (832 + 64)
    assert 1000 < fitted((1536, 2048), 1 << 30) < 1100
    assert 500 < fitted((1536, 2048), 1 << 30, batch=4) < 560  # four windows share the budget
    wide = fitted((600, 30_000), 256 << 20)  # a wide image: its band of rows counts too
    assert (wide + 40) * 30_000 * BAND_BYTES_PER_PIXEL < 256 << 20 and wide < 400
    assert fitted((40, 40), 1 << 30) == 40
    assert tile_for_memory((1000, 1000), budget=1, bytes_per_pixel=832, halo=20) == 40  # never below 2 x halo
    assert tile_for_memory((1000, 1000), budget=1, bytes_per_pixel=832, halo=0) == 1


def test_the_upscaler_fits_tiles_to_its_budget_on_cpus(tiny_model: dict[str, Path]) -> None:
    per_pixel = Model.load(tiny_model["onnx"]).window_bytes_per_pixel
    assert per_pixel == 64 + 14 * 8 and Model.load("srcnn").window_bytes_per_pixel == 960  # SRCNN: 64 and 32
    assert Model("given", "vdsr", VDSRConfig(channels=8), (), 4).window_bytes_per_pixel == 64 + 14 * 8
    lines: list[str] = []
    rgb = np.random.default_rng(4).random((60, 45, 3)).astype(np.float32)
    whole = Upscaler(tiny_model["onnx"], "onnxruntime-cpu", memory_budget=8 << 20, log=lines.append)
    assert whole.backend.window_bytes_per_pixel == per_pixel and whole.tile_for((120, 90)) == 120
    assert "tiles: whole images up to 0.035 MP of network input" in lines[-1] and "0.0078 GiB" in lines[-1]
    small = Upscaler(tiny_model["onnx"], "onnxruntime-cpu", memory_budget=1 << 20)
    assert 50 < small.tile_for((120, 90)) < 90  # 1 MiB: tiles
    assert small.tile_for((20, 30)) == 30  # a small image still runs whole
    assert np.abs(whole.upscale(rgb, 2) - small.upscale(rgb, 2)).max() <= 1e-6  # seamless either way
    given = Upscaler(tiny_model["onnx"], "onnxruntime-cpu", tile=16, memory_budget=8 << 20)
    assert given.tile_for((120, 90)) == 16  # a tile given is kept
    with Upscaler(tiny_model["weights"], "torch-cpu") as eager:
        assert eager.tile_for((4000, 4000)) == 512  # not measured: its preferred tile
    for upscaler in (whole, small, given):
        upscaler.close()
    with pytest.raises(UsageError, match="at least 1 MiB"):
        Upscaler(tiny_model["onnx"], memory_budget=1000)


@pytest.mark.parametrize(
    ("memory", "budget"), [(None, 1 << 30), (512 << 20, 256 << 20), (8 << 30, 2 << 30), (64 << 30, 4 << 30)]
)
def test_the_default_budget_is_a_quarter_of_memory_within_bounds(
    memory: int | None, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(machine, "physical_memory", lambda: memory)
    assert machine.default_memory_budget() == budget


def test_onnx_runtime_threads_on_cpus_can_be_limited(tiny_model: dict[str, Path]) -> None:
    """A Ray actor asks for its share of the machine (vdsr.runtime.ray_data), not one thread per core."""
    with Upscaler(tiny_model["onnx"], "onnxruntime-cpu", cpu_threads=1) as limited:
        assert limited.backend.session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]
    with Upscaler(tiny_model["onnx"], "onnxruntime-cpu") as default:
        assert default.backend.session.get_session_options().intra_op_num_threads == 0  # type: ignore[attr-defined]
