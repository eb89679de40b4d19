"""What a video costs beyond its network (a results file, not a test): a clip made here (drawn frames, an AAC track),
upscaled end to end by Upscaler.upscale_video (decode, network, chroma, encode, mux, overlapping), against the
network alone on the same frames' luma planes (the Upscaler's upscale_lumas, one frame a call, as the video path
calls it); frames a second each, their ratio, and the process's peak resident memory.

    python -m vdsr.bench.scripts.video_speed --size 640x360 --frames 12 --json bench/results/video/speed_640x360.json
    python -m vdsr.bench.scripts.video_speed --size 3840x2160 --frames 2 --model srcnn --no-network-only \\
        --json bench/results/video/memory_4k.json
"""

from __future__ import annotations

import json
import resource
import shlex
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Annotated

import av
import numpy as np
import typer

from vdsr.bench.drawn import sample_photo
from vdsr.bench.report import environment
from vdsr.bench.resident import ResidentSampler
from vdsr.files import atomic_write_text
from vdsr.runtime.upscaler import Upscaler

app = typer.Typer(add_completion=False, help=__doc__)


def make_clip(path: Path, *, width: int, height: int, frames: int) -> None:
    """`frames` drawn frames at 25 fps, libx264 (CRF 18, yuv420p), with a second of AAC."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "18"}
        sound = out.add_stream("aac", rate=48000)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(sample_photo(width, height, seed=i), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for i in range(48):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = 48000, i * 1024, Fraction(1, 48000)
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))


def luma_planes(path: Path) -> list[np.ndarray]:
    """The clip's luma planes in the network's convention (8-bit studio range: code / 255)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray()[: frame.height].astype(np.float32) / 255 for frame in container.decode(video=0)]


@app.command()
def main(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the results.")],
    size: Annotated[str, typer.Option(help="The clip's WIDTHxHEIGHT.")] = "640x360",
    frames: Annotated[int, typer.Option(help="Frames in the clip.")] = 12,
    scale: Annotated[float, typer.Option(help="Upscaling factor.")] = 2.0,
    model: Annotated[str, typer.Option(help="A shipped model.")] = "vdsr",
    network_only: Annotated[bool, typer.Option(help="Also time the network alone.")] = True,
    memory_budget: Annotated[float | None, typer.Option(help="The Upscaler's memory budget, GiB.")] = None,
    sample_every: Annotated[float, typer.Option(help="Seconds between samples of resident memory.")] = 5.0,
) -> None:
    width, height = (int(v) for v in size.lower().split("x"))
    budget = None if memory_budget is None else int(memory_budget * (1 << 30))
    with tempfile.TemporaryDirectory() as tmp, Upscaler(model, memory_budget=budget) as upscaler:
        source = Path(tmp) / "clip.mp4"
        make_clip(source, width=width, height=height, frames=frames)
        rows: dict[str, object] = {"backend": upscaler.backend.name, "precision": upscaler.backend.precision}
        if network_only:
            planes = luma_planes(source)
            upscaler.upscale_lumas(planes[:1], scale)  # warm-up: the session's first run
            start = time.perf_counter()
            for plane in planes:
                upscaler.upscale_lumas([plane], scale)
            network_fps = len(planes) / (time.perf_counter() - start)
            rows["network_fps"] = network_fps
        start = time.perf_counter()
        with ResidentSampler(every=sample_every) as sampler:
            result = upscaler.upscale_video(source, Path(tmp) / "out.mp4", scale)
        end_to_end_fps = result.frames / (time.perf_counter() - start)
        rows["end_to_end_fps"], rows["frames"], rows["output"] = (
            end_to_end_fps,
            result.frames,
            f"{result.width}x{result.height}",
        )
        if network_only:
            rows["end_to_end_over_network"] = end_to_end_fps / network_fps
    rows["during_run"] = sampler.summary()  # to tell a plateau from growth on long clips
    rows["peak_resident_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    settings = {"size": size, "frames": frames, "scale": scale, "model": model, "memory_budget_gib": memory_budget}
    settings["clip"] = "libx264 yuv420p + AAC"
    command = shlex.join(["python", "-m", "vdsr.bench.scripts.video_speed", *sys.argv[1:]])
    record = {"results": rows, "settings": settings, "environment": environment(command) | {"pyav": av.__version__}}
    atomic_write_text(json_path, json.dumps(record, indent=1) + "\n")
    typer.echo(json.dumps(rows, indent=1))


if __name__ == "__main__":
    app()
