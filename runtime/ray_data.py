"""Batch upscaling on a Ray cluster (the `ray` extra; never imported without it).

`vdsr-run INPUT -s S --ray ADDRESS` plans and claims the run as a plain one does, a folder at a time
(vdsr.runtime.planning.LazyPlan: the same files, names, formats, --skip-existing, stale temporaries removed), and
streams the claimed jobs, in batches, to a pool of Ray actors that each hold one Upscaler (one backend session, GPU
actors when given GPUs); an actor runs a batch through the one pipeline (vdsr.runtime.pipeline: decode, upscale,
atomic writes, one-line failures) and answers with each job's outcome. The driver lists the next folder only when
the actors need more work and keeps a few batches in flight, so it holds one folder's jobs and counts
(planning.RunCounts), never the tree's listing or every result: its memory is the same for a thousand files or a
million. Failures are told as they come, one line each; the summary and exit code are a plain run's. Local paths
must be ones every worker sees (one machine, or a shared file system); input and output may also be URIs (s3://,
gs://, any pyarrow.fs or fsspec file system: vdsr.runtime.places), which each worker reads and writes itself.

`upscale_dataset(dataset, scale)` maps a Ray Dataset of images (a column of HxW or HxWxC arrays) to upscaled ones
with Ray Data, for pipelines that already hold one.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vdsr.errors import BackendError, UsageError, first_line
from vdsr.runtime.images import DEFAULT_MAX_PIXELS
from vdsr.runtime.places import Place, StoreFiles, Stores, as_uri, is_uri, local, place_of
from vdsr.runtime.planning import FileFailure, FolderReport, Job, LazyPlan, RunCounts
from vdsr.runtime.upscaler import Upscaler

UpscalerArgs = dict[str, Any]  # what each actor builds its Upscaler from: Upscaler(**args)
Row = tuple[str, str, str, str]  # a job as it travels: each place's (URI of its file system or "", absolute path)
Outcome = tuple[bool, float, str, bool]  # written; megapixels out; the cause of a failure; whether the output failed
BATCH = 16  # jobs an actor runs at once: its pipeline overlaps their decoding, upscaling and writing
RETRY_PAUSE_S = 3.0  # before the one retry of a ray:// session its client server failed to start
TOKEN_HELP = "the cluster's token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (runtime/README.md)"


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: the cluster (`local` starts one here, `auto` joins this machine's, or ray://host:port),
    the actors (each holds one backend), and what each asks of the cluster."""

    address: str = "local"
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float | None = None  # None: 1 where the cluster has GPUs, else 0


def _row(job: Job) -> Row:
    """A job as it travels: each place as (the URI its file system opens from, or "" for a local path; its path,
    absolute, so any worker's working folder will do)."""

    def where(place: Place) -> tuple[str, str]:
        files = place.files
        return (files.uri, str(place.path)) if isinstance(files, StoreFiles) else ("", os.path.abspath(place.path))

    return (*where(job.source), *where(job.target))


def _job(row: Row, stores: Stores) -> Job:
    base, path, target_base, target_path = row

    def place(uri: str, path: str) -> Place:
        return stores.place(uri).at(PurePosixPath(path)) if uri else local(path)

    return Job(place(base, path), place(target_base, target_path))


class FileActor:
    """One Upscaler; each batch of jobs run through the pipeline as a plain run runs them."""

    def __init__(self, args: UpscalerArgs, scale: float, *, max_pixels: int, max_output_pixels: int) -> None:
        self.upscaler, self.stores = Upscaler(**args), Stores()
        self.scale, self.max_pixels, self.max_output_pixels = scale, max_pixels, max_output_pixels

    def run(self, number: int, rows: list[Row]) -> tuple[int, list[Outcome], str | None, list[str]]:
        """Batch `number`'s outcomes, in its order, the backend failure that stopped it, if one did, and the
        warnings of files written with something left out."""
        jobs = [_job(row, self.stores) for row in rows]
        pixels: dict[str, int] = {}
        report = self.upscaler.upscale_jobs(  # images through the pipeline, videos one at a time, as a plain run
            jobs,
            self.scale,
            max_pixels=self.max_pixels,
            max_output_pixels=self.max_output_pixels,
            on_image=lambda name, count: pixels.__setitem__(str(name), count),
        )
        failed = {str(f.path): f for f in report.failed}
        written = {str(p) for p in report.written}
        outcomes = []
        for job in jobs:
            source, failure = str(job.source), failed.get(str(job.source))
            cause, output = (failure.cause, bool(failure.output)) if failure else ("", False)
            outcomes.append((str(job.target) in written, pixels.get(source, 0) / 1e6, cause, output))
        return number, outcomes, report.stopped, report.warnings


def connect(address: str) -> bool:
    """ray.init for `address`; True if this call started Ray (so the caller shuts it down). BackendError, one line,
    for a cluster that cannot be reached."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if address.startswith("ray://"):
            _token_mode()
        _init(address)
    except (ValueError, ray.exceptions.AuthenticationError) as error:  # an address Ray cannot parse; a token not there
        raise UsageError(f"--ray {address}: {first_line(error)}") from error
    except (ConnectionError, RuntimeError, TimeoutError, ray.exceptions.RayError) as error:
        hint = f"; with token authentication it needs {TOKEN_HELP}" if address.startswith("ray://") else ""
        raise BackendError(f"--ray {address}: cannot reach the cluster ({first_line(error)}){hint}") from error
    return True


def _init(address: str) -> None:
    """ray.init (for "local", a new Ray). A ray:// cluster that answered but whose client server failed to start
    this driver's session (ConnectionAbortedError, seen when the head's machine is busy) gets one more try after a
    pause; an unreachable one fails at once (Ray's client already retried the channel)."""
    import ray

    for last in (False, True):
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            return
        except ConnectionAbortedError:
            if last or not address.startswith("ray://"):
                raise
            ray.shutdown()
            time.sleep(RETRY_PAUSE_S)


def _token_mode() -> None:
    """Ray's token authentication (on by default for clusters Ray starts, 2.59+) for a ray:// client: Ray sends a
    token only in token mode, which it turns on by itself only for a cluster found on this machine. When
    RAY_AUTH_MODE is not set and a token is there (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), this
    process turns it on as Ray does for a local cluster (RAY_AUTH_MODE=disabled keeps it off)."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:  # a Ray before token authentication: nothing to send
        return
    logger = logging.getLogger(setup.__name__)
    level, logger.level = logger.level, logging.ERROR  # Ray's warning about it; runtime/README.md says it
    try:
        setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        logger.setLevel(level)


def upscale_folder_on_ray(
    source: Path | str,
    scale: float,
    output: Path | str | None,
    *,
    ray: RayOptions,
    upscaler: UpscalerArgs,
    recursive: bool = False,
    skip_existing: bool = False,
    fmt: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_output_pixels: int,
    report: RunCounts | None = None,
    on_failure: Callable[[FileFailure], None] = lambda failure: None,
    on_progress: Callable[[RunCounts], None] = lambda report: None,
    on_warning: Callable[[str], None] = lambda line: None,
) -> RunCounts:
    """A plain run's plan and outcome (see Upscaler.upscale_folder) made a folder at a time, its jobs run by a pool
    of Ray actors as they are claimed. With a URI for the input or the output, both are read and written as URIs (a
    local path as file://). `report` is filled as files finish (a caller interrupted has the counts so far);
    `on_failure` is told each failure as it comes, `on_warning` each written file's warning, `on_progress` each
    change of the counts."""
    stores = Stores()
    uris = is_uri(source) or is_uri(output)
    source_place = place_of(as_uri(source) if uris else source, stores)
    output_place = None if output is None else place_of(as_uri(output) if uris else output, stores)
    lazy = LazyPlan(source_place, scale, output_place, recursive=recursive, fmt=fmt)
    report = RunCounts() if report is None else report
    threads = max(1, math.ceil(ray.cpus_per_actor))  # an actor's share, not every core of its machine
    run_batches(
        claimed_batches(lazy, report, skip_existing=skip_existing, on_failure=on_failure, on_progress=on_progress),
        report,
        ray=ray,
        actor=FileActor,
        args=(upscaler | {"cpu_threads": threads}, scale),
        kwargs={"max_pixels": max_pixels, "max_output_pixels": max_output_pixels},
        on_failure=on_failure,
        on_progress=on_progress,
        on_warning=on_warning,
    )
    return report


def claimed_batches(
    lazy: LazyPlan,
    report: RunCounts,
    *,
    skip_existing: bool,
    on_failure: Callable[[FileFailure], None],
    on_progress: Callable[[RunCounts], None],
    size: int = BATCH,
) -> Iterator[list[Job]]:
    """The jobs to run, `size` at a time, planned and claimed a folder at a time as they are asked for (a killed
    run's temporaries removed first); skipped and refused files counted into `report`, each refusal told."""
    pending: list[Job] = []
    for jobs in lazy.folders():
        report.planned += len(jobs)
        jobs[0].target.files.remove_stale([job.target.path for job in jobs])
        claims = FolderReport()
        pending += lazy.claim(jobs, claims, skip_existing=skip_existing)
        report.skipped, report.failed = report.skipped + len(claims.skipped), report.failed + len(claims.failed)
        for failure in claims.failed:
            on_failure(failure)
        on_progress(report)
        whole = len(pending) - len(pending) % size
        yield from (pending[start : start + size] for start in range(0, whole, size))
        pending = pending[whole:]
    report.listed = True
    on_progress(report)
    if pending:
        yield pending


def run_batches(
    batches: Iterable[list[Job]],
    report: RunCounts,
    *,
    ray: RayOptions,
    actor: type,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    on_failure: Callable[[FileFailure], None],
    on_progress: Callable[[RunCounts], None],
    on_warning: Callable[[str], None] = lambda line: None,
) -> None:
    """`batches` through a pool of `actor(*args, **kwargs)` on the cluster, one batch in each actor at a time, the
    next asked for only when an actor is free; each outcome into `report`. A cluster lost, an actor dead or a backend
    failure stops the run (report.stopped): what was written is whole. No batch: no cluster."""
    import ray as ray_module
    from ray.util import ActorPool

    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return
    started = connect(ray.address)
    loggers = [logging.getLogger(name) for name in ("ray", "ray.util.client")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)  # Ray's connection and start-up lines: the summary says what happened
    try:
        actors = _start_actors(ray, actor, args=args, kwargs=kwargs, wanted=len(first) if report.listed else ray.actors)
        if report.listed:  # every job is in hand: shared between the actors, not one batch for one of them
            share = math.ceil(len(first) / len(actors))
            first, batches = (
                first[:share],
                iter([first[start : start + share] for start in range(share, len(first), share)]),
            )
        pool, pending = ActorPool(actors), dict[int, list[Job]]()

        def collect() -> None:
            number, outcomes, stopped, warnings = pool.get_next_unordered()
            for line in warnings:
                on_warning(line)
            for job, (written, megapixels, cause, output_failed) in zip(pending.pop(number), outcomes, strict=True):
                if written:
                    report.written, report.megapixels = report.written + 1, report.megapixels + megapixels
                else:
                    report.failed += 1
                    on_failure(FileFailure(job.source.shown, cause, job.target.shown if output_failed else None))
            report.stopped = report.stopped or stopped
            on_progress(report)

        for number, batch in enumerate(chain([first], batches)):
            while not pool.has_free():  # type: ignore[no-untyped-call]
                collect()
            if report.stopped:
                break
            pending[number] = batch
            pool.submit(lambda each, work: each.run.remote(*work), (number, [_row(job) for job in batch]))
        while pool.has_next():  # type: ignore[no-untyped-call]
            collect()
    except (ray_module.exceptions.RayError, ConnectionError) as error:  # the cluster lost, an actor dead
        report.stopped = f"Ray: {first_line(error)}"
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if started:
            ray_module.shutdown()


def _start_actors(
    ray: RayOptions, actor: type, *, args: tuple[Any, ...], kwargs: dict[str, Any], wanted: int
) -> list[Any]:
    """The pool's actors, no more than `wanted`; UsageError for a pool the cluster cannot hold (it would wait, not
    fail)."""
    import ray as ray_module

    resources: dict[str, float] = ray_module.cluster_resources()  # type: ignore[no-untyped-call]
    gpus = ray.gpus_per_actor
    if gpus is None:  # GPU actors when the cluster has GPUs: they pick a GPU backend
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    count = max(1, min(ray.actors, wanted))
    for name, each in (("CPU", ray.cpus_per_actor), ("GPU", gpus)):
        if count * each > resources.get(name, 0):
            raise UsageError(
                f"--ray: {count} actors x {each:g} {name} is more than the cluster's {resources.get(name, 0):g} {name}"
            )
    env: dict[str, Any] = {} if gpus else {"runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}}  # no GPU
    remote: Any = ray_module.remote(num_cpus=ray.cpus_per_actor, num_gpus=gpus, **env)(actor)
    return [remote.remote(*args, **kwargs) for _ in range(count)]


class ArrayActor:
    """One Upscaler; each row's image (an array) upscaled."""

    def __init__(self, args: UpscalerArgs, scale: float, column: str) -> None:
        self.upscaler, self.scale, self.column = Upscaler(**args), scale, column

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return row | {self.column: self.upscaler.upscale(np.asarray(row[self.column]), self.scale)}


def upscale_dataset(
    dataset: Any,
    scale: float,
    *,
    column: str = "image",
    upscaler: UpscalerArgs | None = None,
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
) -> Any:
    """A Ray Dataset whose `column` (uint8/uint16 or float HxW or HxWxC images, e.g. from ray.data.read_images)
    holds the images upscaled by `scale`; lazy, like every Ray Data transform. One actor holds one backend, built as
    Upscaler(**upscaler)."""
    from ray.data import ActorPoolStrategy

    return dataset.map(
        ArrayActor,
        fn_constructor_args=(upscaler or {}, scale, column),
        compute=ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor or None,
    )
