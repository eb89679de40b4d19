"""What Ray costs on a small job (a results file, not a test): the same folder through `vdsr-run` plain, with
`--ray local` (a Ray cluster started on this machine, N actors), and with `--ray local` on the folder given and
written as file:// URIs (the store path: each file downloaded, run and uploaded by its actor), wall time each, in
fresh processes.

    python -m vdsr.bench.scripts.ray_overhead --images 60 --json bench/results/ray_overhead_cpu.json
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from PIL import Image

from vdsr.bench.drawn import sample_photo
from vdsr.bench.report import environment
from vdsr.files import atomic_write_text

app = typer.Typer(add_completion=False, help=__doc__)


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed: {result.stderr[-2000:]}")
    return time.perf_counter() - start


@app.command()
def main(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the results.")],
    images: Annotated[int, typer.Option(help="Images in the folder.")] = 60,
    size: Annotated[str, typer.Option(help="Each image's WIDTHxHEIGHT.")] = "320x240",
    actors: Annotated[int, typer.Option(help="--ray-actors.")] = 2,
) -> None:
    width, height = (int(v) for v in size.lower().split("x"))
    run = [sys.executable, "-c", "from vdsr.runtime.cli import app; app()"]  # vdsr-run
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for i in range(images):
            Image.fromarray(sample_photo(width, height, seed=i)).save(folder / f"{i:03d}.png")
        plain = timed([*run, str(folder), "-s", "2", "-o", str(Path(tmp) / "plain")])
        ray = ["--ray", "local", "--ray-actors", str(actors)]
        on_ray = timed([*run, str(folder), "-s", "2", "-o", str(Path(tmp) / "ray"), *ray])
        stored = timed([*run, folder.as_uri(), "-s", "2", "-o", (Path(tmp) / "stored").as_uri(), *ray])
    rows = {
        "plain_seconds": plain,
        "ray_seconds": on_ray,
        "overhead_seconds": on_ray - plain,
        "overhead_per_image_seconds": (on_ray - plain) / images,
        "ray_over_plain": on_ray / plain,
        "ray_uri_seconds": stored,
        "uri_over_paths_per_image_seconds": (stored - on_ray) / images,
    }
    settings = {"images": images, "size": size, "scale": 2, "actors": actors, "cluster": "local (started by the run)"}
    command = shlex.join(["python", "-m", "vdsr.bench.scripts.ray_overhead", *sys.argv[1:]])
    atomic_write_text(
        json_path,
        json.dumps({"results": rows, "settings": settings, "environment": environment(command)}, indent=1) + "\n",
    )
    typer.echo(json.dumps(rows, indent=1))


if __name__ == "__main__":
    app()
