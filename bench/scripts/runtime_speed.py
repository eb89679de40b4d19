"""Runtime speed and memory on this machine (a benchmark that writes a results file, not a test).

    python -m vdsr.bench.scripts.runtime_speed speed --json bench/results/runtime_speed_cpu.json
    python -m vdsr.bench.scripts.runtime_speed memory --size 4000x4000 --scale 2 \
        --json bench/results/runtime_memory_cpu.json

speed: megapixels of output per second on a 1024x768 RGB image at x2, for the default path (what vdsr-run picks on
this machine: backend, graph, tiles), ONNX Runtime CPU fp32 and int8, and PyTorch eager fp32:
backend only (the network over the tiles of the ILR) and end to end (colour conversion, bicubic ILR, tiles, back to
RGB), plus a folder run (decode + upscale + encode, as vdsr-run) against the backend-only rate.
memory: peak resident memory of a folder run on one image of the given input size, in a fresh process per size, next
to the process's memory before the image (Python, libraries, the model).
proxy: a randomly initialised model of the paper's architecture (same cost as the trained one: the numbers do not depend
on the weights) as ONNX + safetensors, for measuring before trained weights exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from PIL import Image

from vdsr.bench.drawn import sample_photo
from vdsr.bench.report import environment
from vdsr.errors import UsageError, VdsrError
from vdsr.files import atomic_write_text
from vdsr.runtime.batching import tiled
from vdsr.runtime.color import rgb_to_y
from vdsr.runtime.machine import GIB
from vdsr.runtime.resize import imresize
from vdsr.runtime.upscaler import Upscaler

app = typer.Typer(add_completion=False, help=__doc__)


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: sessions, allocations, kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


@app.command()
def speed(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the results.")],
    model: Annotated[
        str | None, typer.Option(help="vdsr (shipped), or a stem: STEM.onnx, STEM_int8.onnx, STEM.safetensors")
    ] = None,
    size: Annotated[str, typer.Option(help="Input image WIDTHxHEIGHT.")] = "1024x768",
    scale: Annotated[float, typer.Option()] = 2.0,
    tile: Annotated[
        int | None, typer.Option(help="Tile side for every variant.", show_default="each backend's default")
    ] = None,
    memory_budget: Annotated[
        float | None, typer.Option(help="GiB for CPU tiles (as vdsr-run).", show_default="vdsr-run's")
    ] = None,
    batch: Annotated[int, typer.Option()] = 1,
    repeats: Annotated[int, typer.Option()] = 2,
    folder_images: Annotated[int, typer.Option(help="Images in the folder run.")] = 4,
) -> None:
    """The default path (what vdsr-run chooses here), ONNX Runtime CPU fp32 and int8, and PyTorch eager fp32:
    backend-only, end-to-end and folder throughput."""
    width, height = (int(v) for v in size.lower().split("x"))
    rgb = sample_photo(width, height)
    ilr = imresize(rgb_to_y(rgb.astype(np.float64) / 255), scale, dtype=np.float32)
    rows = []
    budget = None if memory_budget is None else int(memory_budget * GIB)
    for backend, precision, suffix in VARIANTS:
        try:
            chosen, chosen_precision = _model_and_precision(model, precision, suffix)
            upscaler = Upscaler(
                chosen,
                backend,
                tile=tile,
                batch=batch,
                log=typer.echo,
                precision=chosen_precision,
                memory_budget=budget,
                device="cpu",
            )
        except VdsrError as error:
            typer.echo(f"skipped {backend} {precision}: {error}")
            continue
        count = folder_images if backend != "torch-cpu" else 0
        row = _measure(upscaler, rgb, ilr, scale=scale, repeats=repeats, folder_images=count)
        rows.append({"variant": "default" if backend == "auto" else f"{backend} {precision}"} | row)
    by_variant = {r["variant"]: r for r in rows}
    if "torch-cpu fp32" not in by_variant:
        raise typer.BadParameter("PyTorch eager is the baseline: install torch (pip install 'vdsr[train]')")
    torch_rate = by_variant["torch-cpu fp32"]
    summary = {
        f"{r['variant']} over torch-cpu fp32": {
            "backend_only": r["backend_only_mp_per_s"] / torch_rate["backend_only_mp_per_s"],
            "end_to_end": r["end_to_end_mp_per_s"] / torch_rate["end_to_end_mp_per_s"],
        }
        for r in rows
    }
    settings = {
        "input": size,
        "scale": scale,
        "tile": tile or "each backend's default",
        "batch": batch,
        "memory_budget_gib": memory_budget or "vdsr-run's default",
        "repeats": repeats,
        "timing": "best of",
    }
    command = shlex_command()
    atomic_write_text(
        json_path,
        json.dumps({"results": rows, "summary": summary, "settings": settings, "environment": _env(command)}, indent=1)
        + "\n",
    )
    typer.echo(f"{'variant':40} {'backend-only MP/s':>18} {'end-to-end MP/s':>16} {'folder MP/s':>12} {'vs torch':>9}")
    for r in rows:
        folder = f"{r['folder_mp_per_s']:.4f}" if "folder_mp_per_s" in r else "-"
        rates = f"{r['backend_only_mp_per_s']:18.4f} {r['end_to_end_mp_per_s']:16.4f}"
        ratio = summary[f"{r['variant']} over torch-cpu fp32"]["end_to_end"]
        name = f"{r['variant']} ({r['backend']} {r['precision']}, tile {r['tile']})"
        typer.echo(f"{name:40} {rates} {folder:>12} {ratio:8.2f}x")


def _measure(
    upscaler: Upscaler, rgb: np.ndarray, ilr: np.ndarray, *, scale: float, repeats: int, folder_images: int
) -> dict[str, Any]:
    backend = upscaler.backend
    out_pixels = ilr.size
    tile, halo, batch = upscaler.tile_for(ilr.shape), backend.halo, upscaler.batch
    net = best_seconds(lambda: tiled(backend, ilr, tile=tile, halo=halo, batch=batch), repeats)
    whole = best_seconds(lambda: upscaler.upscale(rgb, scale), repeats)
    row = {
        "backend": backend.name,
        "precision": backend.precision,
        "tile": tile,
        "backend_only_mp_per_s": out_pixels / net / 1e6,
        "end_to_end_mp_per_s": out_pixels / whole / 1e6,
        "backend_only_seconds": net,
        "end_to_end_seconds": whole,
    }
    if folder_images:
        row |= _folder_run(upscaler, rgb, scale, count=folder_images)
    typer.echo(json.dumps(row))
    return row


# (backend, precision, file suffix for a --model stem): the default path, ONNX Runtime fp32 and int8, PyTorch eager fp32
VARIANTS = (
    ("auto", "auto", ".onnx"),
    ("onnxruntime-cpu", "fp32", ".onnx"),
    ("onnxruntime-cpu", "int8", "_int8.onnx"),
    ("torch-cpu", "fp32", ".safetensors"),
)


def _model_and_precision(model: str | None, precision: str, suffix: str) -> tuple[str | None, str]:
    """A shipped model by name with the precision asked for; a --model stem as the file of that variant."""
    if model is None or model in ("vdsr", "srcnn"):
        return model, precision
    if precision == "auto":  # a file runs as it is: the default path is the shipped model's
        raise UsageError("the default path is measured on a shipped model (--model vdsr)")
    return str(Path(model).with_name(Path(model).name + suffix)), "auto"


def _folder_run(upscaler: Upscaler, rgb: np.ndarray, scale: float, *, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in"
        source.mkdir()
        for i in range(count):
            Image.fromarray(np.roll(rgb, 17 * i, axis=1)).save(source / f"{i}.png")
        start = time.perf_counter()
        report = upscaler.upscale_folder(source, scale, Path(tmp) / "out")
        seconds = time.perf_counter() - start
    if report.failed:
        raise RuntimeError(f"folder run failed: {report.failed}")
    return {"folder_images": count, "folder_seconds": seconds, "folder_mp_per_s": report.megapixels / seconds}


def _env(command: str) -> dict[str, object]:
    import onnxruntime

    env = environment(command)
    env["onnxruntime"] = onnxruntime.__version__
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return env


def shlex_command() -> str:
    import shlex

    return shlex.join(["python", "-m", "vdsr.bench.scripts.runtime_speed", *sys.argv[1:]])


@app.command()
def memory(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the results.")],
    size: Annotated[list[str], typer.Option(help="Input WIDTHxHEIGHT; repeatable.")] = ["4000x4000"],
    scale: Annotated[float, typer.Option()] = 2.0,
    model: Annotated[str | None, typer.Option(help="vdsr (shipped) or an .onnx file")] = None,
    tile: Annotated[int, typer.Option()] = 512,
    batch: Annotated[int, typer.Option()] = 1,
) -> None:
    """Peak RSS of a folder run (decode, upscale, encode PNG) on one image per size, each in a fresh process."""
    rows = []
    for spec in size:
        width, height = (int(v) for v in spec.lower().split("x"))
        with tempfile.TemporaryDirectory() as tmp:  # the input is made here, so making it is not measured there
            Image.fromarray(sample_photo(width, height)).save(Path(tmp) / "big.png", compress_level=1)
            args = [
                sys.executable,
                "-m",
                "vdsr.bench.scripts.runtime_speed",
                "memory-one",
                tmp,
                str(scale),
                model or "vdsr",
                str(tile),
                str(batch),
            ]
            result = subprocess.run(args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"memory run for {spec} failed:\n{result.stderr}")
        row = json.loads(result.stdout.strip().splitlines()[-1])
        rows.append(row)
        typer.echo(json.dumps(row))
    settings = {"scale": scale, "tile": tile, "batch": batch, "model": model or "vdsr"}
    atomic_write_text(
        json_path,
        json.dumps({"results": rows, "settings": settings, "environment": _env(shlex_command())}, indent=1) + "\n",
    )


def _memory_mib(field: str) -> float:
    """A memory figure of this process from Linux's /proc/self/status (VmRSS now, VmHWM peak), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (the memory benchmark needs Linux)")


@app.command("memory-one", hidden=True)
def memory_one(folder: Path, scale: float, model: str, tile: int, batch: int) -> None:
    upscaler = Upscaler(model, "onnxruntime-cpu", tile=tile, batch=batch)
    upscaler.upscale(sample_photo(64, 64), scale)  # libraries and the model loaded, before the image
    before = _memory_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS (ru_maxrss would include the parent's)
    with Image.open(folder / "big.png") as image:
        width, height = image.size
    start = time.perf_counter()
    report = upscaler.upscale_folder(folder, scale, folder / "out", max_pixels=width * height)
    seconds = time.perf_counter() - start
    peak = _memory_mib("VmHWM")
    if report.failed:
        raise RuntimeError(str(report.failed))
    with Image.open(report.written[0]) as out:
        out_width, out_height = out.size
    buffers = {
        "input_uint8": width * height * 3,
        "input_float32": width * height * 12,
        "planes_float32": width * height * 12,
        "output_uint8": out_width * out_height * 3,
    }
    print(
        json.dumps(
            {
                "input": f"{width}x{height}",
                "output": f"{out_width}x{out_height}",
                "seconds": seconds,
                "rss_before_mib": before,
                "peak_rss_mib": peak,
                "growth_mib": peak - before,
                "buffers_mib": {k: v / 2**20 for k, v in buffers.items()},
            }
        )
    )


@app.command()
def proxy(
    output: Annotated[Path, typer.Option(help="Writes OUTPUT.onnx and OUTPUT.safetensors")],
    depth: Annotated[int, typer.Option()] = 20,
) -> None:
    """A randomly initialised VDSR of the paper's width (speed and memory do not depend on the weights)."""
    import hashlib

    import torch

    from vdsr.export.onnx import export_onnx, save_onnx
    from vdsr.networks import VDSR, VDSRConfig
    from vdsr.weights import save_weights

    torch.manual_seed(0)
    net = VDSR(VDSRConfig(depth=depth)).eval()
    save_weights(output.with_suffix(".safetensors"), net, [2, 3, 4])
    digest = hashlib.sha256(output.with_suffix(".safetensors").read_bytes()).hexdigest()
    save_onnx(export_onnx(net, [2, 3, 4], digest), output.with_suffix(".onnx"))
    typer.echo(f"wrote {output.with_suffix('.onnx')} and {output.with_suffix('.safetensors')}")


if __name__ == "__main__":
    app()
