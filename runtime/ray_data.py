"""Batch upscaling on a Ray cluster with Ray Data (the `ray` extra; never imported without it).

`vdsr-run INPUT -s S --ray ADDRESS` plans and claims the run as a plain one does (vdsr.runtime.planning: the same
files, names, formats, --skip-existing, stale temporaries removed), then Ray Data runs the jobs: a dataset of jobs,
mapped over a pool of actors that each hold one Upscaler (one backend session, GPU actors when given GPUs); an actor
runs its jobs through the one pipeline (vdsr.runtime.pipeline.run_jobs: decode, upscale, atomic writes, one-line
failures). Each job's outcome comes back as a row and fills the same FolderReport, so the summary, the failures and
the exit code are a plain run's. Local paths must be ones every worker sees (one machine, or a shared file system);
input and output may also be URIs (s3://, gs://, any pyarrow.fs or fsspec file system: vdsr.runtime.places), which
each worker reads and writes itself.

`upscale_dataset(dataset, scale)` maps a Ray Dataset of images (a column of HxW or HxWxC arrays) to upscaled ones,
for pipelines that already hold one.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vdsr.errors import BackendError, UsageError, first_line
from vdsr.runtime.images import DEFAULT_MAX_PIXELS
from vdsr.runtime.places import Place, StoreFiles, Stores, as_uri, is_uri, local, place_of
from vdsr.runtime.planning import FileFailure, FolderReport, Job, claim, plan
from vdsr.runtime.upscaler import Upscaler

UpscalerArgs = dict[str, Any]  # what each actor builds its Upscaler from: Upscaler(**args)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: the cluster (`local` starts one here, `auto` joins this machine's, or ray://host:port),
    the actors (each holds one backend), and what each asks of the cluster."""

    address: str = "local"
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float | None = None  # None: 1 where the cluster has GPUs, else 0


def _row(job: Job) -> str:
    """A job as a row of the dataset: each place as (the URI its file system opens from, or "" for a local path;
    its path, absolute, so any worker's working folder will do)."""

    def where(place: Place) -> list[str]:
        files = place.files
        return [files.uri, str(place.path)] if isinstance(files, StoreFiles) else ["", os.path.abspath(place.path)]

    return json.dumps([*where(job.source), *where(job.target)])


def _job(row: str, stores: Stores) -> Job:
    base, path, target_base, target_path = json.loads(row)

    def place(uri: str, path: str) -> Place:
        return stores.place(uri).at(PurePosixPath(path)) if uri else local(path)

    return Job(place(base, path), place(target_base, target_path))


class FileActor:
    """One Upscaler; each batch of jobs run through the pipeline as a plain run runs them."""

    def __init__(self, args: UpscalerArgs, scale: float, *, max_pixels: int, max_output_pixels: int) -> None:
        self.upscaler, self.stores = Upscaler(**args), Stores()
        self.scale, self.max_pixels, self.max_output_pixels = scale, max_pixels, max_output_pixels

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        jobs = [_job(row, self.stores) for row in batch["job"]]
        pixels: dict[str, int] = {}
        report = self.upscaler.upscale_jobs(  # images through the pipeline, videos one at a time, as a plain run
            jobs,
            self.scale,
            max_pixels=self.max_pixels,
            max_output_pixels=self.max_output_pixels,
            on_image=lambda name, count: pixels.__setitem__(str(name), count),
        )
        if report.stopped:  # the backend failed: the run stops, as a plain run does
            raise BackendError(report.stopped)
        failed = {str(f.path): f for f in report.failed}
        written = {str(p) for p in report.written}
        names = [(str(job.source), str(job.target)) for job in jobs]
        return {
            "job": list(batch["job"]),
            "outcome": ["written" if t in written else "failed" for _, t in names],
            "cause": [failed[s].cause if s in failed else "" for s, _ in names],
            "failed_output": [str(failed[s].output or "") if s in failed else "" for s, _ in names],
            "megapixels": [pixels.get(s, 0) / 1e6 for s, _ in names],
        }


def connect(address: str) -> bool:
    """ray.init for `address`; True if this call started Ray (so the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)  # local: new
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UsageError(f"--ray {address}: cannot reach the cluster ({error})") from error
    return True


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
) -> FolderReport:
    """A plain run's plan and report (see Upscaler.upscale_folder), its jobs run by Ray Data's actor pool. With a URI
    for the input or the output, both are read and written as URIs (a local path as file://)."""
    stores = Stores()
    uris = is_uri(source) or is_uri(output)
    source_place = place_of(as_uri(source) if uris else source, stores)
    output_place = None if output is None else place_of(as_uri(output) if uris else output, stores)
    jobs = plan(source_place, scale, output_place, recursive=recursive, fmt=fmt)
    if jobs:
        jobs[0].target.files.remove_stale([job.target.path for job in jobs])  # left by a run that was killed
    report = FolderReport()
    todo = claim(jobs, report, skip_existing=skip_existing, on_image=lambda path, pixels: None)
    if todo:
        _run(
            todo,
            report,
            scale=scale,
            ray=ray,
            upscaler=upscaler,
            max_pixels=max_pixels,
            max_output_pixels=max_output_pixels,
        )
    return report


def _run(
    todo: list[Job],
    report: FolderReport,
    *,
    scale: float,
    ray: RayOptions,
    upscaler: UpscalerArgs,
    max_pixels: int,
    max_output_pixels: int,
) -> None:
    """The claimed jobs on Ray Data's actor pool; each outcome into `report`, in the plan's order."""
    import ray as ray_module
    from ray.data import ActorPoolStrategy, DataContext, from_items
    from ray.data.exceptions import ExecutionTimeoutError

    started = connect(ray.address)
    resources: dict[str, float] = ray_module.cluster_resources()  # type: ignore[no-untyped-call]
    gpus = ray.gpus_per_actor
    if gpus is None:  # GPU actors when the cluster has GPUs: they pick a GPU backend
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    actors = min(ray.actors, len(todo))
    for name, each in (("CPU", ray.cpus_per_actor), ("GPU", gpus)):  # a pool that cannot start would wait, not fail
        if actors * each > resources.get(name, 0):
            if started:
                ray_module.shutdown()
            raise UsageError(
                f"--ray: {actors} actors x {each:g} {name} is more than the cluster's {resources.get(name, 0):g} {name}"
            )
    env: dict[str, Any] = {} if gpus else {"runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}}  # no GPU
    context = DataContext.get_current()
    progress_bars, context.enable_progress_bars = context.enable_progress_bars, False  # the summary says what happened
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)  # Ray Data's progress lines, too
    threads = max(1, math.ceil(ray.cpus_per_actor))  # an actor's share, not every core of its machine
    try:
        results = (
            from_items([{"job": _row(job)} for job in todo])
            .map_batches(
                FileActor,
                fn_constructor_args=(upscaler | {"cpu_threads": threads}, scale),
                batch_size=1,
                fn_constructor_kwargs={"max_pixels": max_pixels, "max_output_pixels": max_output_pixels},
                compute=ActorPoolStrategy(size=actors),
                num_cpus=ray.cpus_per_actor,
                num_gpus=gpus or None,
                **env,
            )
            .take_all()
        )
    except (ray_module.exceptions.RayError, ExecutionTimeoutError) as error:  # an actor could not start or died
        raise BackendError(f"Ray: {first_line(error)}") from error
    finally:
        context.enable_progress_bars = progress_bars
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if started:
            ray_module.shutdown()
    by_job = {row["job"]: row for row in results}
    for job in todo:
        row = by_job[_row(job)]
        if row["outcome"] == "written":
            report.written.append(job.target.shown)
            report.megapixels += float(row["megapixels"])
        else:  # failed_output: the output it failed to write, if that is what failed
            output = job.target.shown if row["failed_output"] else None
            report.failed.append(FileFailure(job.source.shown, row["cause"], output))


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
