"""Load on vdsr-serve (a results file, not a test): requests at concurrency 1, 4 and 16 (throughput in images/s and
output MP/s, p50/p99 latency, status counts), the same images through `vdsr-run` with the same backend options on
the same machine (the goal: the service at 16 gives >= 80% of vdsr-run's MP/s), a 2x-overload phase (concurrency
twice the replica's admission limit: only 200 and 503 may occur), and a soak (the RSS of the server's whole process
tree sampled every few seconds: it should stay flat). Writes JSON and a short markdown file.

    python -m vdsr.bench.scripts.serve_load --images ../shared/datasets/Set14 --out bench/results/serve
    python -m vdsr.bench.scripts.serve_load --url http://host:8000   # a server already running (no RSS then)
    python -m vdsr.bench.scripts.serve_load --burst 20 --count 1 --size 300x300 --timeout 20 --out /tmp/burst

`--burst N` measures admission alone: N requests sent at once, each answer final (no retry), then the server is
stopped; the statuses, each 200's latency and the replica's measured pace go to serve_burst.json/.md.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import numpy as np
import typer
from PIL import Image

from vdsr.bench.drawn import sample_photo
from vdsr.bench.report import environment
from vdsr.bench.resident import ResidentSampler, tree_resident_bytes
from vdsr.files import atomic_write_text
from vdsr.runtime.images import IMAGE_SUFFIXES

app = typer.Typer(add_completion=False, help=__doc__)
SERVE = [sys.executable, "-c", "from vdsr.runtime.serve.cli import app; app()"]
RUN = [sys.executable, "-c", "from vdsr.runtime.cli import app; app()"]
READY_S = 300.0
REQUEST_S = 600.0


@dataclass
class Phase:
    """One phase's answers: (status, seconds) per request, the wall time, the output pixels of those answered 200."""

    concurrency: int
    answers: list[tuple[int, float]] = field(default_factory=list)
    wall_s: float = 0.0
    pixels: int = 0
    retried: int = 0  # 503s whose Retry-After a client honoured (then sent the image again)

    def summary(self) -> dict[str, Any]:
        ok = [seconds for status, seconds in self.answers if status == 200]
        return {
            "concurrency": self.concurrency,
            "requests": len(self.answers),
            "statuses": dict(Counter(str(status) for status, _ in self.answers)),
            "retried_503s": self.retried,
            "wall_s": round(self.wall_s, 3),
            "images_per_s": round(len(ok) / self.wall_s, 4) if self.wall_s else 0.0,
            "output_mp_per_s": round(self.pixels / 1e6 / self.wall_s, 4) if self.wall_s else 0.0,
            "p50_s": round(float(np.percentile(ok, 50)), 3) if ok else None,
            "p99_s": round(float(np.percentile(ok, 99)), 3) if ok else None,
        }


def load_images(folder: Path | None, *, count: int, size: str) -> list[tuple[str, bytes, tuple[int, int]]]:
    """(name, file bytes, (width, height)) of the folder's images, or `count` drawn PNGs of `size`."""
    if folder is not None:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise typer.BadParameter(f"no images in {folder}")
        found = []
        for path in paths:
            with Image.open(path) as image:
                found.append((path.name, path.read_bytes(), image.size))
        return found
    width, height = (int(v) for v in size.lower().split("x"))
    drawn = []
    for seed in range(count):
        out = Path(tempfile.gettempdir()) / f"serve-load-{os.getpid()}-{seed}.png"
        Image.fromarray(sample_photo(width, height, seed=seed)).save(out)
        drawn.append((f"drawn{seed}.png", out.read_bytes(), (width, height)))
        out.unlink()
    return drawn


def post(url: str, body: bytes, scale: float) -> tuple[int, float | None]:
    """The status of one POST /upscale, and its Retry-After seconds if it has one."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=REQUEST_S)
    try:
        connection.request("POST", f"/upscale?scale={scale:g}", body=body)
        response = connection.getresponse()
        response.read()
        after = response.getheader("Retry-After")
        return response.status, float(after) if after else None
    except OSError:
        return 0, None  # no answer at all (connection refused or reset): counted, never retried
    finally:
        connection.close()


def get_json(url: str, path: str) -> Any:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return json.loads(response.read()) if response.status == 200 else None
    finally:
        connection.close()


def run_phase(
    url: str,
    images: list[tuple[str, bytes, tuple[int, int]]],
    *,
    scale: float,
    concurrency: int,
    limit: int,
    seconds: float,
    retry: bool = True,
) -> Phase:
    """`concurrency` clients posting the images round robin until `limit` requests or `seconds` have gone. With
    `retry`, a client told 503 waits its Retry-After and sends the image again, as a well-behaved client does (each
    503 is counted in `retried`; the latency of the 200 runs from the first try); without, each answer is final."""
    phase, lock, issued = Phase(concurrency), threading.Lock(), [0]
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                if issued[0] >= limit:
                    return
                index = issued[0]
                issued[0] += 1
            _, body, (width, height) = images[index % len(images)]
            start = time.perf_counter()
            status, after = post(url, body, scale)
            while retry and status == 503 and after is not None and time.monotonic() + after < deadline:
                with lock:
                    phase.retried += 1
                time.sleep(after)
                status, after = post(url, body, scale)
            with lock:
                phase.answers.append((status, time.perf_counter() - start))
                if status == 200:
                    phase.pixels += math.ceil(width * scale) * math.ceil(height * scale)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(client)
    phase.wall_s = time.perf_counter() - start
    return phase


def soak(
    url: str,
    images: list[tuple[str, bytes, tuple[int, int]]],
    *,
    scale: float,
    pid: int | None,
    minutes: float,
    every: float,
) -> dict[str, Any]:
    """Steady load (concurrency 4) for `minutes`, the server tree's RSS sampled every `every` seconds."""
    if pid is None:  # a server started elsewhere: its memory cannot be read from here
        return run_phase(url, images, scale=scale, concurrency=4, limit=10**9, seconds=minutes * 60).summary()
    with ResidentSampler(every=every, measure=lambda: tree_resident_bytes(pid)) as sampler:
        phase = run_phase(url, images, scale=scale, concurrency=4, limit=10**9, seconds=minutes * 60)
    return {**phase.summary(), **sampler.summary()}


def vdsr_run(images: list[tuple[str, bytes, tuple[int, int]]], *, scale: float, options: list[str]) -> dict[str, Any]:
    """The same images through vdsr-run with the same backend options: its own MP/s (model loading excluded, as
    its summary line reports it) and the wall time of the whole command."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for name, body, _ in images:
            (folder / name).write_bytes(body)
        command = [*RUN, str(folder), "-s", f"{scale:g}", *options]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"vdsr-run failed: {done.stderr[-2000:]}")
    found = re.search(r"([\d.]+) MP out in ([\d.]+) s", done.stderr)
    megapixels, seconds = (float(found.group(1)), float(found.group(2))) if found else (0.0, wall)
    return {
        "command": shlex.join(["vdsr-run", *command[3:]]),
        "output_mp": megapixels,
        "seconds": seconds,
        "output_mp_per_s": round(megapixels / seconds, 4) if seconds else 0.0,
        "wall_s": round(wall, 3),
    }


def start_server(options: list[str], folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        [*SERVE, "--port", str(port), *options],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RAY_TMPDIR": str(folder)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vdsr-serve exited {process.returncode}: {(folder / 'server.log').read_text()[-2000:]}")
        try:
            if get_json(url, "/healthz") is not None:
                return process, url
        except OSError:
            pass
        time.sleep(1.0)
    process.kill()
    raise RuntimeError(f"vdsr-serve not ready in {READY_S:.0f} s")


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# vdsr-serve under load",
        "",
        f"Machine: {env['cpu']} ({env['cpu_count']} cores; flags {', '.join(env['cpu_flags'])}); "
        f"GPU: {env['gpu'] or 'none'}.",
        f"Command: `{result['command']}`",
        "",
        "| phase | concurrency | requests | statuses | 503s retried | images/s | output MP/s | p50 s | p99 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, phase in [
        *((f"load {p['concurrency']}", p) for p in result["phases"]),
        ("overload", result["overload"]),
        ("soak", result["soak"]),
    ]:
        lines.append(
            f"| {name} | {phase['concurrency']} | {phase['requests']} | {phase['statuses']} | {phase['retried_503s']} "
            f"| {phase['images_per_s']} | {phase['output_mp_per_s']} | {phase['p50_s']} | {phase['p99_s']} |"
        )
    run, soaked = result["vdsr_run"], result["soak"]
    lines += [
        "",
        f"vdsr-run on the same images: {run['output_mp_per_s']} MP/s (`{run['command']}`); the service at 16: "
        f"{result['ratio_at_16']:.0%} of it (goal >= 80%).",
        f"Overload (2x the admission limit): only 200 and 503: {result['overload_only_200_503']}.",
        f"Soak RSS of the server's process tree: first {soaked.get('rss_mib_first')} MiB, "
        f"last {soaked.get('rss_mib_last')} MiB, max {soaked.get('rss_mib_max')} MiB, "
        f"second half over first {soaked.get('rss_mib_growth_second_half')} MiB.",
        "",
    ]
    return "\n".join(lines)


def write_burst(
    url: str,
    images: list[tuple[str, bytes, tuple[int, int]]],
    *,
    scale: float,
    count: int,
    health: dict[str, Any],
    command: str,
    out: Path,
) -> None:
    """`count` requests at once, each answer final: how admission sheds a burst the replica cannot finish in time."""
    phase = run_phase(url, images, scale=scale, concurrency=count, limit=count, seconds=REQUEST_S, retry=False)
    result = {
        "command": command,
        "environment": environment(command),
        "burst": phase.summary(),
        "latencies_200_s": sorted(round(seconds, 2) for status, seconds in phase.answers if status == 200),
        "seconds_per_megapixel_at_start": health.get("seconds_per_megapixel"),
    }
    text = (
        f"# vdsr-serve, a burst of {count}\n\nCommand: `{command}`\n\nStatuses {phase.summary()['statuses']} in "
        f"{phase.wall_s:.1f} s; 200s answered in {result['latencies_200_s']} s; the replica's pace when it started: "
        f"{result['seconds_per_megapixel_at_start']} s per megapixel of windows.\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "serve_burst.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "serve_burst.md", text)
    typer.echo(text)


@app.command()
def main(
    images: Annotated[Path | None, typer.Option(help="A folder of images (else drawn ones).")] = None,
    count: Annotated[int, typer.Option(help="Drawn images, without --images.")] = 8,
    size: Annotated[str, typer.Option(help="Drawn images' WIDTHxHEIGHT.")] = "512x384",
    scale: Annotated[float, typer.Option(help="Upscaling factor.")] = 2.0,
    url: Annotated[str | None, typer.Option(help="A running server (else one is started here).")] = None,
    requests: Annotated[int, typer.Option(help="Requests per load phase at most.")] = 64,
    phase_seconds: Annotated[float, typer.Option(help="Seconds per load phase at most.")] = 300.0,
    soak_minutes: Annotated[float, typer.Option(help="Minutes of soak.")] = 10.0,
    sample_seconds: Annotated[float, typer.Option(help="Seconds between RSS samples.")] = 5.0,
    backend: Annotated[str, typer.Option(help="--backend of both.")] = "auto",
    precision: Annotated[str, typer.Option(help="--precision of both.")] = "auto",
    tile: Annotated[int, typer.Option(help="--tile of both.")] = 256,
    timeout: Annotated[
        float | None, typer.Option(help="The server's --timeout (seconds per request).", show_default="the server's")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder of the results.")] = Path("bench/results/serve"),
    burst: Annotated[int, typer.Option(help="Only a burst of this many requests at once (see above).")] = 0,
) -> None:
    command = shlex.join(["python", "-m", "vdsr.bench.scripts.serve_load", *sys.argv[1:]])
    loaded = load_images(images, count=count, size=size)
    backend_options = ["--model", "vdsr", "--backend", backend, "--precision", precision, "--tile", str(tile)]
    with tempfile.TemporaryDirectory(prefix="sl-", dir="/tmp" if os.path.isdir("/tmp") else None) as tmp:
        server_options = backend_options + ([] if timeout is None else ["--timeout", f"{timeout:g}"])
        process, target = (None, url) if url else start_server(server_options, Path(tmp))
        try:
            health = get_json(target, "/healthz") or {}
            if burst:
                write_burst(target, loaded, scale=scale, count=burst, health=health, command=command, out=out)
                return
            limit = int(health.get("max_queue", 16))
            phases = [
                run_phase(target, loaded, scale=scale, concurrency=c, limit=requests, seconds=phase_seconds)
                for c in (1, 4, 16)
            ]
            overload = run_phase(
                target,
                loaded,
                scale=scale,
                concurrency=2 * limit,
                limit=max(requests, 4 * limit),
                seconds=phase_seconds,
                retry=False,  # every answer as it comes: only 200 and 503 may be among them
            )
            soaked = soak(
                target,
                loaded,
                scale=scale,
                pid=process.pid if process else None,
                minutes=soak_minutes,
                every=sample_seconds,
            )
            health = get_json(target, "/healthz") or {}
        finally:
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(120)
    run = vdsr_run(loaded, scale=scale, options=backend_options)  # after the server stopped: the CPU is its own
    at_16 = phases[-1].summary()
    statuses = set(overload.summary()["statuses"])
    result: dict[str, Any] = {
        "command": command,
        "environment": environment(command),
        "images": [name for name, _, _ in loaded],
        "scale": scale,
        "backend_options": backend_options,
        "phases": [p.summary() for p in phases],
        "overload": overload.summary(),
        "overload_only_200_503": statuses <= {"200", "503"},
        "soak": soaked,
        "vdsr_run": run,
        "ratio_at_16": float(at_16["output_mp_per_s"]) / float(run["output_mp_per_s"] or 1),
        "largest_batch": health.get("largest_batch"),
        "server_exit_code": process.returncode if process else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "serve_load.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "serve_load.md", markdown(result))
    typer.echo(markdown(result))


if __name__ == "__main__":
    app()
