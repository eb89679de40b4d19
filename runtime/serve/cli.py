"""`vdsr-serve`: upscale images over HTTP on Ray Serve. POST /upscale?scale=2 with the image file as the body
returns the upscaled file; GET /models lists the models served; GET /healthz answers 200 once ready."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console

from vdsr.catalogue import MODELS
from vdsr.errors import BackendError, UsageError, first_line
from vdsr.model import Model
from vdsr.runtime.backends.specs import BackendChoice, PrecisionChoice, Request
from vdsr.runtime.console import Command, error_console, exit_on_errors, make_app, require_modules, safe, version_option
from vdsr.runtime.ray_data import connect
from vdsr.runtime.serve.deployment import SERVICE_TILE, Settings, application
from vdsr.runtime.serve.limits import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_QUEUE,
    DEFAULT_TIMEOUT_S,
    MIB,
    Limits,
)

app = make_app(__doc__)


@app.command(cls=Command)
def main(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.", min=1, max=65535)] = 8000,
    model: Annotated[
        list[str],
        typer.Option(
            help=f"A shipped model ({', '.join(MODELS)}) or an .onnx / .safetensors file; repeat to serve several "
            "(the first is the default; a request picks one with &model=NAME, a file's name without suffix).",
        ),
    ] = ["vdsr"],
    backend: Annotated[
        BackendChoice, typer.Option(case_sensitive=False, help="auto: the fastest that runs here.")
    ] = BackendChoice.auto,
    precision: Annotated[
        PrecisionChoice,
        typer.Option(case_sensitive=False, help="auto: fp16 on GPUs; int8 on CPUs with AVX2/VNNI/dotprod."),
    ] = PrecisionChoice.auto,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    tile: Annotated[
        int, typer.Option(help="Tile side in output pixels, the same for every request (so they batch).", min=1)
    ] = SERVICE_TILE,
    batch: Annotated[
        int | None, typer.Option(help="Tiles per backend call.", min=1, show_default="the backend's: 1 CPU, 4 GPU")
    ] = None,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Network calls of concurrent requests joined at most.", min=1)
    ] = 8,
    batch_wait_ms: Annotated[
        float, typer.Option("--batch-wait-ms", help="How long a batch waits for other requests' tiles.", min=0.0)
    ] = 5.0,
    max_body: Annotated[
        float, typer.Option("--max-body", help="MiB of request body at most (413 past it).", min=0.0001)
    ] = DEFAULT_MAX_BODY / MIB,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", help="Input pixels at most (422 past it, read from the header).", min=1)
    ] = DEFAULT_MAX_PIXELS,
    max_output_pixels: Annotated[
        int, typer.Option("--max-output-pixels", help="Result pixels at most (422 past it).", min=1)
    ] = DEFAULT_MAX_OUTPUT_PIXELS,
    timeout: Annotated[
        float, typer.Option(help="Seconds a request may take (504 past it).", min=0.001)
    ] = DEFAULT_TIMEOUT_S,
    max_queue: Annotated[
        int,
        typer.Option("--max-queue", help="Requests a replica holds at once; more get 503 with Retry-After.", min=1),
    ] = DEFAULT_MAX_QUEUE,
    replicas: Annotated[int, typer.Option(help="Replicas (one backend each).", min=1)] = 1,
    min_replicas: Annotated[
        int | None, typer.Option("--min-replicas", help="Autoscaling: fewest replicas.", min=0)
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option("--max-replicas", help="Autoscaling: most replicas (turns autoscaling on).", min=1)
    ] = None,
    replica_cpus: Annotated[float, typer.Option("--replica-cpus", help="CPUs per replica.", min=0.0)] = 1.0,
    replica_gpus: Annotated[float, typer.Option("--replica-gpus", help="GPUs per replica.", min=0.0)] = 0.0,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Deploy onto an existing cluster: auto (this machine's) or ray://host:port.",
            show_default="a private Ray started here, stopped on exit",
            metavar="ADDRESS",
        ),
    ] = None,
    version: Annotated[bool, version_option()] = False,
) -> None:
    """Serve until SIGTERM or Ctrl-C, then stop Serve (and the Ray this command started) and exit 0; 2 for bad
    usage (a port in use, a model or backend that cannot start), 4 when the service fails to start."""
    err = error_console()
    with exit_on_errors(err):
        require_modules(("ray", "starlette", "uvicorn"), needs="vdsr-serve", extra="serve")
        if (min_replicas is None) != (max_replicas is None):
            raise UsageError("--min-replicas and --max-replicas go together (autoscaling between them)")
        if min_replicas is not None and max_replicas is not None and min_replicas > max_replicas:
            raise UsageError(f"--min-replicas {min_replicas} is over --max-replicas {max_replicas}")
        limits = Limits(max(1, int(max_body * MIB)), max_pixels, max_output_pixels, timeout, max_queue)
        served = served_models(model)
        Request(backend.value, precision.value, device)  # a request that cannot exist: refused before Ray starts
        if ray is None:
            check_port(host, port)
            for _, spec in served:  # opened here too, so a model or backend that cannot start is said in one line
                Model.load(spec)
        settings = Settings(
            served,
            backend.value,
            precision.value,
            device,
            tile,
            batch,
            limits,
            max_batch,
            batch_wait_ms / 1000,
        )
        bounds = replicas if max_replicas is None else (min_replicas or 0, max_replicas)
        target = application(settings, replicas=bounds, cpus=replica_cpus, gpus=replica_gpus)
        serve_until_stopped(target, host=host, port=port, address=ray, timeout_s=timeout, err=err)


def served_models(specs: list[str]) -> tuple[tuple[str, str], ...]:
    """(name in the query, what to load) for each --model: a shipped name as it is, a file by its name without
    suffix, made absolute (replicas do not share this process's working folder)."""
    served: dict[str, str] = {}
    for spec in specs:
        name, load = (spec, spec) if spec in MODELS else (Path(spec).stem, str(Path(spec).resolve()))
        if name in served:
            raise UsageError(f"--model {spec}: a model named {name!r} is already served")
        served[name] = load
    return tuple(served.items())


def check_port(host: str, port: int) -> None:
    """UsageError if `port` cannot be bound on `host` (in use, or an address not of this machine): said in one line
    here rather than as a proxy actor failing inside Ray."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}") from error


def serve_until_stopped(
    target: Any, *, host: str, port: int, address: str | None, timeout_s: float, err: Console
) -> None:
    """Start Ray (a private one unless `address`) and Serve, deploy `target`, wait for SIGTERM or SIGINT, then
    shut down what this command started."""
    import ray
    from ray import serve

    stop = threading.Event()

    def on_signal(number: int, frame: FrameType | None) -> None:
        stop.set()

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's progress lines: the command says its own
    # a private cluster's folder: under $RAY_TMPDIR when set (short: Ray's socket paths are limited to 107 bytes)
    folder = None if address else tempfile.mkdtemp(prefix="vdsr-serve-", dir=os.environ.get("RAY_TMPDIR"))
    if address is not None:  # as vdsr-run --ray joins it: Ray's token for ray://, one line and exit 4 if unreachable
        connect(address)
    else:  # a private cluster: its own folder, no dashboard, on loopback only
        ray.init(
            address="local",
            _temp_dir=folder,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # Serve's own end-to-end timeout is set past the service's, so a slow request gets the service's 504
        serve.start(http_options={"host": host, "port": port, "request_timeout_s": timeout_s + 30})
        try:
            serve.run(target, name="vdsr", route_prefix="/")
        except Exception as error:  # noqa: BLE001  (a replica that cannot start: Serve raises RuntimeError & co.)
            raise BackendError(f"the service did not start: {first_line(error)}") from error
        err.print(f"serving on http://{safe(host)}:{port}: POST /upscale?scale=2, GET /models, GET /healthz")
        while not stop.wait(0.5):
            pass
        err.print("stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # the application first, alone: its replicas finish the requests in progress, whose answers the proxy still
        # sends (Serve's shutdown stops the proxy at once); never in the way of the rest (Serve may not have started)
        with contextlib.suppress(Exception):
            serve.delete("vdsr")
        if folder is not None:  # a private cluster: all of it goes (a shared one keeps the rest)
            serve.shutdown()  # type: ignore[no-untyped-call]  # Serve's public API, not annotated
            ray.shutdown()
            shutil.rmtree(folder, ignore_errors=True)
    err.print("stopped")
