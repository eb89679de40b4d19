"""GPU speed of VDSR in one run: backends against the measured matrix peak, the paper's timing table, 8K memory, the
fp16 PSNR cost. Writes bench/results/<gpu>-<date>.json and .md.

    python -m vdsr.bench.scripts.gpu_speed --data-dir ../shared/datasets --output-dir bench/results  # shipped weights
    python -m vdsr.bench.scripts.gpu_speed --dry-run --output-dir /tmp/dry    # CPU, tiny shapes: checks the script runs

Measured, for 1-channel inputs: torch eager fp32; torch fp16 channels_last with cudnn.benchmark; the same replayed as a
CUDA graph; torch.compile (max-autotune); ONNX Runtime CUDA on the fp16 graph when onnxruntime-gpu and --onnx-fp16 are
given. Each at a 1920x1080 frame and at the runtime's tile window (tile 512 + 2 x halo 20 = 552), batch 1..N:
megapixels/s, TFLOP/s (1.33 MFLOP per output pixel), the fraction of the measured fp16 matrix-product peak, and the
largest difference from fp32. The paper table times LR luminance in -> SR luminance out on the device (bicubic ILR as
two matrix products, network, clamp; decode and scoring excluded, as in the paper).
"""

from __future__ import annotations

import copy
import datetime
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from numpy.typing import NDArray

from vdsr.bench.datasets import DATA_DIR_ENV, find_set, resolve_dataset
from vdsr.bench.protocol import degrade, score
from vdsr.bench.report import environment
from vdsr.catalogue import shipped
from vdsr.files import atomic_write_text
from vdsr.networks import SRCNN, VDSR, VDSRConfig
from vdsr.runtime.backends.onnx_runtime import OnnxRuntimeBackend, cuda_providers
from vdsr.runtime.backends.pytorch import TorchBackend
from vdsr.runtime.console import Command, error_console, exit_on_errors, make_app
from vdsr.runtime.images import load_image
from vdsr.runtime.machine import gpu_names
from vdsr.runtime.resize_torch import imresize_torch
from vdsr.runtime.upscaler import Upscaler
from vdsr.weights import load_weights

app = make_app(__doc__)
Net = Callable[[torch.Tensor], torch.Tensor]
TILE_WINDOW = 552  # the runtime's default tile (512) plus twice VDSR's halo (20)


def flops_per_pixel(model: VDSR | SRCNN) -> float:
    """2 x multiply-adds of every convolution per output pixel (1.33 M for the paper's VDSR)."""
    return float(sum(2 * m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d)))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(run: Callable[[], object], device: torch.device, min_seconds: float, *, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < min_seconds:
        run()
        calls += 1
        synchronize(device)
    return (time.perf_counter() - start) / calls


def matmul_peak_tflops(device: torch.device, size: int, min_seconds: float) -> float:
    """The measured fp16 (bf16 on CPU) matrix-product rate: the ceiling the conv backends are compared with."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / seconds_per_call(lambda: a @ b, device, min_seconds) / 1e12


def variants(model: VDSR | SRCNN, device: torch.device, onnx_fp16: Path | None) -> dict[str, Callable[[], Net]]:
    """Name -> a builder of the network as a callable on (N, 1, H, W) fp32 tensors on `device` (built lazily, so a
    failing variant is recorded, not fatal)."""

    def eager_fp32() -> Net:
        net = copy.deepcopy(model).float().to(device).eval()
        return lambda x: net(x)

    def fp16_channels_last() -> Net:
        torch.backends.cudnn.benchmark = True
        net = copy.deepcopy(model).half().to(device).eval()
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return lambda x: net(x.half().contiguous(memory_format=torch.channels_last)).float()

    def fp16_cuda_graph() -> Net:
        if device.type != "cuda":
            raise RuntimeError("needs CUDA")
        torch.backends.cudnn.benchmark = True
        backend = TorchBackend(copy.deepcopy(model), "cuda")  # the runtime's own fp16 channels_last CUDA graphs
        return lambda x: backend.run(x)

    def compiled() -> Net:
        if device.type != "cuda":
            raise RuntimeError("needs CUDA")
        net = torch.compile(fp16_channels_last(), mode="max-autotune")
        return lambda x: net(x)

    def onnxruntime_cuda_fp16() -> Net:
        if onnx_fp16 is None or device.type != "cuda":
            raise RuntimeError("needs CUDA and --onnx-fp16")
        backend = OnnxRuntimeBackend(onnx_fp16, providers=cuda_providers())
        if backend.name != "onnxruntime-cuda":
            raise RuntimeError("onnxruntime has no working CUDA provider")
        return lambda x: torch.from_numpy(backend(x.cpu().numpy())).to(device)  # host I/O included

    return {
        "torch eager fp32": eager_fp32,
        "torch fp16 channels_last": fp16_channels_last,
        "torch fp16 CUDA graph": fp16_cuda_graph,
        "torch.compile max-autotune fp16": compiled,
        "onnxruntime-cuda fp16": onnxruntime_cuda_fp16,
    }


def backend_table(
    model: VDSR | SRCNN,
    device: torch.device,
    *,
    shapes: list[tuple[int, int, int]],
    peak: float,
    onnx_fp16: Path | None,
    min_seconds: float,
) -> list[dict[str, Any]]:
    flops = flops_per_pixel(model)
    inputs = {shape: torch.rand(shape[0], 1, shape[1], shape[2], device=device) for shape in shapes}
    reference = copy.deepcopy(model).float().to(device).eval()
    rows: list[dict[str, Any]] = []
    for name, build in variants(model, device, onnx_fp16).items():
        try:
            net = build()
        except Exception as error:  # noqa: BLE001  (a variant that cannot run here is a row saying why)
            rows.append({"backend": name, "error": f"{type(error).__name__}: {error}"})
            continue
        for shape, x in inputs.items():
            try:
                with torch.inference_mode():
                    seconds = seconds_per_call(lambda: net(x), device, min_seconds)  # noqa: B023
                    max_error = float((net(x).float() - reference(x)).abs().max())
            except Exception as failure:  # noqa: BLE001
                rows.append({"backend": name, "shape": list(shape), "error": f"{type(failure).__name__}: {failure}"})
                continue
            mp_per_s = shape[0] * shape[1] * shape[2] / seconds / 1e6
            rows.append(
                {
                    "backend": name,
                    "shape": list(shape),
                    "seconds": seconds,
                    "mp_per_s": mp_per_s,
                    "tflops": mp_per_s * flops / 1e6,
                    "fraction_of_peak": mp_per_s * flops / 1e6 / peak,
                    "max_abs_error_vs_fp32": max_error,
                }
            )
    return rows


def paper_table(
    model: VDSR | SRCNN,
    device: torch.device,
    *,
    data_dir: Path | None,
    sets: list[str],
    scales: list[int],
    urban_sizes: Path | None,
    limit: int | None,
    min_seconds: float,
    crop: int | None = None,
) -> list[dict[str, Any]]:
    """Seconds per image, LR luminance in -> SR luminance out on the device (fp16 channels_last), per set and scale.
    Urban100 is not provided: random images of its files' sizes (the time does not depend on the content)."""
    net = variants(model, device, None)["torch fp16 channels_last"]()
    rows = []
    for name in sets:
        images: list[NDArray[Any]]
        if name == "Urban100":
            if urban_sizes is None:
                continue
            sizes = [tuple(int(v) for v in line.split("\t")[1:3]) for line in urban_sizes.read_text().splitlines()[1:]]
            rngs = [np.random.default_rng(i) for i in range(len(sizes[:limit]))]
            images = [rng.random((h, w, 1))[:crop, :crop] for rng, (w, h) in zip(rngs, sizes[:limit], strict=True)]
        else:
            images = [load_image(p).color[:crop, :crop] for p in resolve_dataset(name, data_dir).files[:limit]]
        for scale in scales:
            seconds, psnr = [], []
            for image in images:
                degraded = degrade(image, scale)
                gt, lr = degraded.hr_y, torch.from_numpy(degraded.lr_y).float()

                def run(lr: torch.Tensor = lr, scale: int = scale) -> torch.Tensor:
                    with torch.inference_mode():
                        ilr = imresize_torch(lr.to(device, non_blocking=True), scale)
                        return net(ilr[None, None]).clamp_(0, 1)[0, 0].cpu()

                seconds.append(seconds_per_call(run, device, min_seconds / max(1, len(images)), warmup=1))
                if name != "Urban100":
                    psnr.append(score(run().double().numpy(), gt, scale).psnr)
            rows.append(
                {
                    "dataset": name,
                    "scale": scale,
                    "images": len(images),
                    "seconds_per_image": float(np.mean(seconds)),
                    "psnr_fp16": float(np.mean(psnr)) if psnr else None,
                }
            )
    return rows


def memory_8k(model_path: Path | None, device: torch.device, out_size: tuple[int, int]) -> dict[str, Any]:
    """Peak GPU memory and throughput of the tiled runtime (torch-cuda backend) for one RGB frame of `out_size`
    (W, H) output, and the network alone on the whole frame untiled, for the cost of tiling."""
    if device.type != "cuda":
        return {"skipped": "needs CUDA"}
    width, height = out_size
    rgb = np.random.default_rng(0).integers(0, 256, (height // 2, width // 2, 3), dtype=np.uint8)
    upscaler = Upscaler(model_path, "torch-cuda", tile=512, batch=4)
    upscaler.upscale(rgb[:64, :64], 2)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    upscaler.upscale(rgb, 2)
    tiled_seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device)
    return {
        "output": f"{width}x{height}",
        "tiled_end_to_end_seconds": tiled_seconds,
        "tiled_end_to_end_mp_per_s": width * height / tiled_seconds / 1e6,
        "peak_gpu_memory_gib": peak / 2**30,
        "note": "upload, colour, bicubic ILR, tiles, rounding on the GPU; result copied back",
    }


def fp16_cost(
    model: VDSR | SRCNN,
    device: torch.device,
    *,
    data_dir: Path | None,
    sets: list[str],
    scales: list[int],
    limit: int | None,
    crop: int | None = None,
) -> list[dict[str, Any]]:
    """PSNR fp32 - PSNR fp16 on the device, per set and scale (bench protocol)."""
    nets = {name: variants(model, device, None)[name]() for name in ("torch eager fp32", "torch fp16 channels_last")}
    rows = []
    for name in sets:
        images = [load_image(p).color[:crop, :crop] for p in resolve_dataset(name, data_dir).files[:limit]]
        for scale in scales:
            psnr: dict[str, list[float]] = {k: [] for k in nets}
            for image in images:
                degraded = degrade(image, scale)
                gt, ilr = degraded.hr_y, imresize_torch(torch.from_numpy(degraded.lr_y).to(device), scale).float()
                for key, net in nets.items():
                    with torch.inference_mode():
                        sr = net(ilr[None, None])[0, 0].double().cpu().numpy()
                    psnr[key].append(score(sr, gt, scale).psnr)
            full, half = (float(np.mean(v)) for v in psnr.values())
            rows.append({"dataset": name, "scale": scale, "psnr_fp32": full, "psnr_fp16": half, "cost_db": full - half})
    return rows


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# VDSR GPU speed: {result['environment'].get('gpu') or result['device']}",
        "",
        f"Matrix-product peak (measured): {result['peak_tflops']:.1f} TFLOP/s",
        "",
        "| backend | N x H x W | MP/s | TFLOP/s | of peak | max err vs fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["backends"]:
        if "error" in r:
            lines.append(f"| {r['backend']} | {'x'.join(map(str, r.get('shape', [])))} | {r['error']} | | | |")
        else:
            shape = "x".join(map(str, r["shape"]))
            lines.append(
                f"| {r['backend']} | {shape} | {r['mp_per_s']:.1f} | {r['tflops']:.1f} | "
                f"{r['fraction_of_peak']:.1%} | {r['max_abs_error_vs_fp32']:.2e} |"
            )
    lines += ["", "| set | scale | images | s/image (ours) | PSNR fp16 |", "|---|---|---|---|---|"]
    for r in result["paper_table"]:
        psnr = f"{r['psnr_fp16']:.3f}" if r["psnr_fp16"] is not None else "–"
        lines.append(f"| {r['dataset']} | x{r['scale']} | {r['images']} | {r['seconds_per_image']:.4f} | {psnr} |")
    lines += [
        "",
        f"8K memory: `{json.dumps(result['memory_8k'])}`",
        "",
        "| set | scale | PSNR fp32 | PSNR fp16 | cost dB |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dataset']} | x{r['scale']} | {r['psnr_fp32']:.4f} | {r['psnr_fp16']:.4f} | {r['cost_db']:+.4f} |"
        for r in result["fp16_cost"]
    ]
    lines += ["", f"Command: `{result['environment']['command']}`", ""]
    return "\n".join(lines)


@app.command(cls=Command)
def main(
    output_dir: Annotated[Path, typer.Option(help="Where <gpu>-<date>.json and .md go.")],
    weights: Annotated[Path | None, typer.Option(help="VDSR safetensors; default: shipped, else random.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Holds Set5, Set14, B100.", show_default=f"${DATA_DIR_ENV}")
    ] = None,
    onnx_fp16: Annotated[Path | None, typer.Option(help="fp16 graph for ONNX Runtime CUDA (optional).")] = None,
    max_batch: Annotated[int, typer.Option()] = 8,
    dry_run: Annotated[bool, typer.Option(help="CPU, tiny shapes and subsets: check that the script runs.")] = False,
) -> None:
    with exit_on_errors(error_console()):  # one line for a missing data folder, found before any measuring
        for name in ("Set5", "Set14", "B100"):
            find_set(name, data_dir)
        device = torch.device("cpu" if dry_run else "cuda")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise typer.BadParameter("no CUDA GPU visible; use --dry-run to check the script on a CPU")
        source = weights or (shipped("vdsr.safetensors") if shipped("vdsr.safetensors").is_file() else None)
        # the dry run checks the code paths, not speed: a small VDSR and images cropped to 48 x 48 keep it to seconds
        model = VDSR(VDSRConfig(depth=4, channels=8)) if dry_run else load_weights(source)[0] if source else VDSR()
        if not isinstance(model, VDSR):
            raise typer.BadParameter(f"{source} holds SRCNN weights; this benchmark is for VDSR")
        min_seconds = 0.05 if dry_run else 1.0
        frame = (64, 96) if dry_run else (1080, 1920)
        window = 48 if dry_run else TILE_WINDOW
        batches = [1, 2] if dry_run else [b for b in (1, 2, 4, 8, 16) if b <= max_batch]
        shapes = [(1, *frame), *[(b, window, window) for b in batches]]
        limit = 1 if dry_run else None
        crop = 48 if dry_run else None
        urban = Path(__file__).parents[1] / "manifests" / "Urban100.sizes.tsv"  # vdsr.bench's
        env = environment("python -m vdsr.bench.scripts.gpu_speed " + shlex.join(sys.argv[1:]))
        cudnn = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
        random = "random (He init): speed does not depend on the weights"
        env |= {
            "torch": torch.__version__,
            "cudnn": cudnn,
            "gpu": ", ".join(gpu_names()) or None,
            "weights": str(source) if source else random,
        }
        peak = matmul_peak_tflops(device, 256 if dry_run else 8192, min_seconds)
        typer.echo(f"matrix peak {peak:.1f} TFLOP/s on {device}")
        result = {
            "device": str(device),
            "peak_tflops": peak,
            "backends": backend_table(
                model, device, shapes=shapes, peak=peak, onnx_fp16=onnx_fp16, min_seconds=min_seconds
            ),
            "paper_table": paper_table(
                model,
                device,
                data_dir=data_dir,
                sets=["Set5", "Set14", "B100", "Urban100"],
                scales=[2, 3, 4],
                urban_sizes=urban,
                limit=limit,
                min_seconds=min_seconds,
                crop=crop,
            ),
            "memory_8k": memory_8k(source, device, (7680, 4320)),
            "fp16_cost": fp16_cost(
                model,
                device,
                data_dir=data_dir,
                sets=["Set5", "Set14", "B100"],
                scales=[2, 3, 4],
                limit=limit,
                crop=crop,
            ),
            "environment": env,
        }
        name = (torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu-dry-run").replace(" ", "_")
        stem = output_dir / f"{name}-{datetime.date.today().isoformat()}"
        atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=1, default=str) + "\n")
        atomic_write_text(stem.with_suffix(".md"), to_markdown(result))
        typer.echo(to_markdown(result))


if __name__ == "__main__":
    app()
