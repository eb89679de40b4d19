"""The Ray Serve deployment behind vdsr-serve: each replica holds one Upscaler per model served and answers
POST /upscale, GET /models and GET /healthz.

Each request runs the pipeline (vdsr.runtime.serve.work) on a worker thread of the replica; its network is a call
into `batched`, a `@serve.batch` method on the replica's event loop, so the tiles of concurrent requests share the
backend's calls (grouped by model and window shape, joined, run `upscaler.batch` windows at a time on a thread of
their own so the loop keeps accepting). Admission is counted here: past `max_queue` requests, or when a request's
network work (its window pixels, read from its image's header) would not be done within its timeout, with what the
admitted ones have left, at the pace the backend runs (limits.Pace: timed when the replica starts, then on every
call), a replica answers 503 with Retry-After at once instead of queueing without end; Serve's
`max_queued_requests` bounds what waits before it.
The body is read before admission (408 past the timeout): a slow client holds no slot and no work.
A request whose client goes away, as one past its time, stops at its next window; its slot is held until its thread
has stopped.

Ray, Serve and Starlette are imported where they are used, so that vdsr-serve's --help, --version and its one-line
"pip install" message work without the `serve` extra.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.serve import Application
    from starlette.requests import Request
    from starlette.responses import Response

from vdsr.errors import BackendError, UsageError, VdsrError, first_line
from vdsr.runtime.serve.limits import (
    Limits,
    Pace,
    Reply,
    Work,
    as_json,
    body_length,
    busy,
    expected_wait,
    parse_ask,
    planned_pixels,
    refusal,
    text,
    timed_out,
    too_large,
)
from vdsr.runtime.serve.work import Cancelled, concat_for, run_backend, time_backend, upscale_body
from vdsr.runtime.upscaler import Upscaler

APP_NAME = "vdsr"
# One tile for every request: windows of different requests share a shape only when their tiles do (an image's
# fitted tile would depend on its size), and a fixed tile bounds each request's working memory whatever its size.
SERVICE_TILE = 256
PACE_MARGIN = 0.8  # a request is admitted only if its network work is expected done within this share of its timeout
HEADROOM = 8  # requests past the admission limit that still reach a replica, to be answered 503 (and /healthz)
LOGGER = logging.getLogger("ray.serve")
ROUTES = {"/upscale": "POST", "/models": "GET", "/healthz": "GET"}


@dataclass(frozen=True)
class Settings:
    """What every replica is built from: the models by the names the query uses (name, a shipped name or an
    absolute file path), the backend request, the fixed tile, the limits, and how long a batch waits for more."""

    models: tuple[tuple[str, str], ...]
    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    tile: int = SERVICE_TILE
    batch: int | None = None  # tiles per backend call: the backend's preferred number
    limits: Limits = field(default_factory=Limits)
    max_batch: int = 8  # network calls of concurrent requests joined into one batch at most
    batch_wait_s: float = 0.005  # how long a batch waits for calls of other requests


class Service:
    """One replica. Its state (the admitted requests' work, the paces, the counters) lives on the instance, touched
    only on its event loop: a replica is one process."""

    def __init__(self, settings: Settings) -> None:
        from ray import serve
        from ray.serve.metrics import Counter, Histogram

        self.settings = settings
        self.upscalers = {
            name: Upscaler(
                spec,
                settings.backend,
                tile=settings.tile,
                batch=settings.batch,
                precision=settings.precision,
                device=settings.device,
                log=LOGGER.info,
            )
            for name, spec in settings.models
        }
        # serve.batch on this replica's bound method: its queue is the replica's, its bounds the settings'
        batch = serve.batch(max_batch_size=settings.max_batch, batch_wait_timeout_s=settings.batch_wait_s)
        self.batched: Callable[[tuple[Work, Any]], Coroutine[Any, Any, Any]] = batch(self.run_batch)
        # one thread per admitted request: each mostly waits for its windows' results
        self.workers = ThreadPoolExecutor(settings.limits.max_queue, "vdsr-serve")
        self.works: set[Work] = set()  # the admitted requests' network work (planned, done)
        # how fast this replica's backend runs each model: a request that would time out gets 503 at once
        self.paces: dict[str, Pace] = {name: time_backend(upscaler) for name, upscaler in self.upscalers.items()}
        self.stopped = 0  # requests whose work stopped before their last window (past their time, or client gone)
        self.largest_batch = 0  # network calls joined in one batch (> 1: requests shared the backend)
        self.largest_windows = 0
        self.broken: str | None = None  # a backend failure: the replica asks Serve to replace it
        self.answered = Counter("vdsr_serve_answers", description="Answers by HTTP status.", tag_keys=("status",))
        self.windows = Histogram(
            "vdsr_serve_batch_windows",
            description="Tile windows per backend batch.",
            boundaries=[1, 2, 4, 8, 16, 32, 64],
        )

    async def __call__(self, request: Request) -> Response:
        from starlette.responses import Response

        reply = await self.answer(request)
        self.answered.inc(tags={"status": str(reply.status)})
        return Response(reply.body, reply.status, dict(reply.headers), media_type=reply.content_type)

    async def answer(self, request: Request) -> Reply:
        path = request.url.path.rstrip("/") or "/"
        if path not in ROUTES:
            return text(404, f"no such endpoint {path!r} (POST /upscale?scale=2, GET /models, GET /healthz)")
        allowed = ROUTES[path] + (", HEAD" if ROUTES[path] == "GET" else "")  # HEAD: GET's headers, no body
        if request.method not in allowed.split(", "):
            reply = text(405, f"{path} takes {allowed}, not {request.method}")
            return Reply(reply.status, reply.body, reply.content_type, (("Allow", allowed),))
        if path == "/healthz":
            return as_json(503 if self.broken else 200, self.health())
        if path == "/models":
            return as_json(200, self.models())
        return await self.upscale(request)

    def health(self) -> dict[str, object]:
        return {
            "status": f"broken: {self.broken}" if self.broken else "ok",
            "in_progress": len(self.works),
            "max_queue": self.settings.limits.max_queue,
            "queued_seconds": expected_wait(self.works, self.paces),  # what admission uses: the work left
            "seconds_per_megapixel": {name: pace.seconds_per_pixel * 1e6 for name, pace in self.paces.items()},
            "stopped_early": self.stopped,
            "largest_batch": self.largest_batch,
            "largest_batch_windows": self.largest_windows,
        }

    def models(self) -> dict[str, object]:
        limits = self.settings.limits
        served = [
            {"name": name, "scales": list(u.backend.scales), "backend": u.backend.name, "default": i == 0}
            for i, (name, u) in enumerate(self.upscalers.items())
        ]
        return {"models": served, "tile": self.settings.tile, "limits": vars(limits)}

    async def upscale(self, request: Request) -> Reply:
        limits = self.settings.limits
        try:
            ask = parse_ask(request.query_params.multi_items(), list(self.upscalers))
        except UsageError as error:
            return refusal(error)
        if len(self.works) >= limits.max_queue:  # full: refused at once, before its body is read
            return busy(len(self.works))
        try:  # the body before admission: a slow or stalled client holds no slot, and its time is not service time
            body = await asyncio.wait_for(read_body(request, limits.max_body), limits.timeout_s)
        except asyncio.TimeoutError:  # not the built-in TimeoutError before Python 3.11
            return text(408, f"the body did not arrive within {limits.timeout_s:g} s")
        if isinstance(body, Reply):
            return body
        upscaler = self.upscalers[ask.model]
        plan = partial(planned_pixels, body, ask.scale, tile=upscaler.tile, halo=upscaler.backend.halo, limits=limits)
        work = Work(ask.model, await asyncio.to_thread(plan))  # a header can take a while: not on the event loop
        if len(self.works) >= limits.max_queue:
            return busy(len(self.works))
        queued, allowed = expected_wait(self.works, self.paces), limits.timeout_s * PACE_MARGIN
        # an idle replica always admits: refusing the only request helps no other
        if self.works and queued + expected_wait([work], self.paces) > allowed:
            own = expected_wait([work], self.paces)  # it fits once the queue has run down enough, or is empty
            return busy(len(self.works), retry_after=min(queued + own - allowed, queued))
        self.works.add(work)
        held = True  # the admission slot, given back when the work ends (not when a 504 is answered)
        start = time.monotonic()
        try:
            cancel = threading.Event()
            loop = asyncio.get_running_loop()
            network = partial(self.network, loop, work)
            run = partial(upscale_body, body, ask, upscaler, network=network, limits=limits, cancel=cancel)
            running = loop.run_in_executor(self.workers, run)
            gone = False
            try:
                left = max(0.0, limits.timeout_s - (time.monotonic() - start))
                done, _ = await asyncio.wait({running}, timeout=left)
            except asyncio.CancelledError:  # the client went away: Serve cancels this task, not the thread
                done, gone = set(), True
            if not done:
                cancel.set()  # its next window is not computed
                work.planned = work.done  # nor counted as queued
                held = False  # the slot is given back when the thread stops
                running.add_done_callback(partial(self.release_late, work))
                if gone:
                    raise asyncio.CancelledError
                return timed_out(limits.timeout_s)
            result = running.result()
        except VdsrError as error:
            if isinstance(error, BackendError):
                self.broken = first_line(error)
            return refusal(error)
        except Exception as error:  # noqa: BLE001  (a bug answers this request 500; the replica goes on)
            LOGGER.exception("POST /upscale failed")
            return text(500, f"internal error: {type(error).__name__}: {first_line(error)}")
        finally:
            if held:
                self.works.discard(work)
        warned = (("X-VDSR-Warning", "; ".join(result.warnings)),) if result.warnings else ()  # one header: a dict
        return Reply(200, result.data, result.content_type, warned)

    def release_late(self, work: Work, running: asyncio.Future[Any]) -> None:
        """A timed-out request's slot, given back once its thread has stopped (its outcome is not needed)."""
        self.works.discard(work)
        if not running.cancelled():  # the exception retrieved, so asyncio does not log it as lost
            self.stopped += isinstance(running.exception(), Cancelled)

    def network(self, loop: asyncio.AbstractEventLoop, work: Work, windows: Any) -> Any:
        """On a request's worker thread: its windows through the shared batches on the event loop."""
        return asyncio.run_coroutine_threadsafe(self.batched((work, windows)), loop).result()

    async def run_batch(self, calls: list[tuple[Work, Any]]) -> list[Any]:
        """Network calls of concurrent requests: grouped by model and window shape, each group joined and run; its
        seconds per window pixel go into the model's pace, its window pixels into each request's work done."""
        self.largest_batch = max(self.largest_batch, len(calls))
        self.largest_windows = max(self.largest_windows, sum(len(windows) for _, windows in calls))
        groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
        for index, (work, windows) in enumerate(calls):
            groups.setdefault((work.model, tuple(windows.shape[1:])), []).append(index)
        results: list[Any] = [None] * len(calls)
        for (model, shape), members in groups.items():
            upscaler = self.upscalers[model]
            parts = [calls[i][1] for i in members]
            joined = parts[0] if len(parts) == 1 else concat_for(upscaler)(parts)
            self.windows.observe(len(joined))
            started = time.perf_counter()
            out = await asyncio.to_thread(run_backend, upscaler, joined)
            window = shape[-2] * shape[-1]
            self.paces[model].measured(time.perf_counter() - started, len(joined) * window)
            offset = 0
            for index, part in zip(members, parts, strict=True):
                results[index] = out[offset : offset + len(part)]
                calls[index][0].done += len(part) * window
                offset += len(part)
        return results

    def check_health(self) -> None:
        """Serve's health check: a replica whose backend failed (a lost device) is replaced."""
        if self.broken:
            raise RuntimeError(f"backend failure: {self.broken}")

    def __del__(self) -> None:
        """Serve's hook when a replica stops (its lifecycle has no context manager): the backends are closed."""
        self.workers.shutdown(wait=False, cancel_futures=True)
        for upscaler in self.upscalers.values():
            upscaler.close()


async def read_body(request: Request, max_body: int) -> bytes | Reply:
    """The body, or 413: Content-Length looked at first, then the stream read with the same cap (a chunked body
    has no length to trust)."""
    refused = body_length(request.headers.get("content-length"), max_body)
    if refused is not None:
        return refused
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            return too_large(max_body)
    return bytes(body)


def application(
    settings: Settings, *, replicas: int | tuple[int, int], cpus: float = 1.0, gpus: float = 0.0
) -> Application:
    """The Serve application: `replicas` a fixed number, or (min, max) for Serve's autoscaling on ongoing
    requests. Each replica admits `max_queue` requests; a few more reach it to be answered 503 (a request that
    never reached it would wait in Serve's queue instead), and Serve's own queue is bounded too (it answers 503)."""
    from ray import serve

    limits = settings.limits
    ongoing = max(limits.max_queue + HEADROOM, settings.max_batch)
    options: dict[str, Any] = {
        "name": APP_NAME,
        "max_ongoing_requests": ongoing,
        # Serve's router holds a burst briefly even while replicas have room (measured: 2 of 6 at once), so its own
        # bound (a 503 without Retry-After) is set as high: it answers only when every replica is full
        "max_queued_requests": ongoing,
        "ray_actor_options": {"num_cpus": cpus, "num_gpus": gpus},
        "graceful_shutdown_timeout_s": min(limits.timeout_s, 30.0),  # requests in progress finish first
    }
    if isinstance(replicas, tuple):
        options["autoscaling_config"] = {
            "min_replicas": replicas[0],
            "max_replicas": replicas[1],
            "target_ongoing_requests": max(1, limits.max_queue // 2),
        }
    else:
        options["num_replicas"] = replicas
    return serve.deployment(**options)(Service).bind(settings)
