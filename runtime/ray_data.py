"""Batch upscaling on a Ray cluster with Ray Data (the `ray` extra; never imported without it).

`vdsr-run INPUT -s S --ray ADDRESS` plans the run as a plain one does (vdsr.runtime.folders: the same files, names,
formats, --skip-existing, stale temporaries removed), then Ray Data runs the jobs: a dataset of (input, output) rows,
mapped over a pool of actors that each hold one Upscaler (one backend session, GPU actors when given GPUs); an actor
decodes, upscales and writes each of its files exactly as a plain run does (vdsr.runtime.folders.run_jobs: atomic
writes, one-line failures). Each job's outcome comes back as a row and fills the same FolderReport, so the summary,
the failures and the exit code are a plain run's. Local paths must be ones every worker sees (one machine, or a
shared file system); input and output may also be URIs (s3://, gs://, any pyarrow.fs or fsspec file system:
vdsr.runtime.stores), which each worker reads and writes itself.

`upscale_dataset(dataset, scale)` maps a Ray Dataset of images (a column of HxW or HxWxC arrays) to upscaled ones,
for pipelines that already hold one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vdsr.errors import BackendError, UsageError, first_line
from vdsr.files import remove_stale_temporaries
from vdsr.runtime.folders import FileFailure, FolderReport, Job, claim_outputs, plan_jobs, run_jobs
from vdsr.runtime.images import DEFAULT_MAX_PIXELS
from vdsr.runtime.stores import (
    StoreFile,
    StoreJob,
    Stores,
    as_uri,
    claim_store_outputs,
    is_uri,
    plan_store_jobs,
    run_store_jobs,
)
from vdsr.runtime.upscaler import Upscaler


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: the cluster (`local` starts one here, `auto` joins this machine's, or ray://host:port),
    the actors (each holds one backend), and what each asks of the cluster."""

    address: str = "local"
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float | None = None  # None: 1 where the cluster has GPUs, else 0


@dataclass(frozen=True)
class UpscalerSettings:
    """What each actor builds its Upscaler from (the arguments of vdsr.runtime.upscaler.Upscaler)."""

    model: str | None = None
    backend: str = "auto"
    precision: str = "auto"
    device: str | None = None
    tile: int | None = None
    batch: int | None = None
    memory_budget: int | None = None
    cpu_threads: int = 0  # ONNX Runtime's threads on CPUs: an actor's CPUs (0: every physical core)

    def build(self, log: Callable[[str], None] = lambda line: None) -> Upscaler:
        return Upscaler(self.model, self.backend, tile=self.tile, batch=self.batch, precision=self.precision,
                        device=self.device, memory_budget=self.memory_budget, cpu_threads=self.cpu_threads,
                        log=log)  # fmt: skip


class FileActor:
    """One Upscaler; each batch of (input, output) rows decoded, upscaled and written as a plain run does."""

    def __init__(self, settings: UpscalerSettings, scale: float, *, max_pixels: int, max_output_pixels: int) -> None:
        self.upscaler, self.stores = settings.build(), Stores()
        self.scale, self.max_pixels, self.max_output_pixels = scale, max_pixels, max_output_pixels

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        pixels: dict[str, int] = {}
        upscale = partial(self.upscaler.upscale_file, scale=self.scale, max_output_pixels=self.max_output_pixels)
        limits = {"max_pixels": self.max_pixels, "max_output_pixels": self.max_output_pixels}
        if batch["store"][0]:  # a store's files: staged here, uploaded when written
            jobs = [StoreJob(StoreFile(a, b), StoreFile(c, d)) for a, b, c, d in map(json.loads, batch["store"])]
            names = [(str(j.source), str(j.target)) for j in jobs]
            report = run_store_jobs(jobs, upscale, stores=self.stores, scale=self.scale, **limits,
                                    on_image=lambda name, count: pixels.__setitem__(name, count))  # fmt: skip
        else:
            names = [(os.fsdecode(s), os.fsdecode(t)) for s, t in zip(batch["source"], batch["target"], strict=True)]
            report = run_jobs([Job(Path(s), Path(t)) for s, t in names], upscale, FolderReport(), fail_fast=False,
                              scale=self.scale, **limits,
                              on_image=lambda path, count: pixels.__setitem__(str(path), count))  # fmt: skip
        if report.stopped:  # the backend failed: the run stops, as a plain run does
            raise BackendError(report.stopped)
        failed = {str(f.path): f for f in report.failed}
        written = {str(p) for p in report.written}
        return {
            "source": list(batch["source"]),
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
    source: Path | str, scale: float, output: Path | str | None, *, ray: RayOptions, settings: UpscalerSettings,
    recursive: bool = False, skip_existing: bool = False, fmt: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS, max_output_pixels: int,
) -> FolderReport:  # fmt: skip
    """A plain run's plan and report (see Upscaler.upscale_folder), its jobs run by Ray Data's actor pool. With a URI
    for the input or the output, both are read and written through vdsr.runtime.stores (a local path as file://)."""
    import ray as ray_module
    from ray.data import ActorPoolStrategy, from_items

    report = FolderReport()
    if is_uri(source) or is_uri(output):
        stores = Stores()
        output_uri = None if output is None else as_uri(output)
        planned = plan_store_jobs(as_uri(source), scale, output_uri, stores=stores, recursive=recursive, fmt=fmt)
        claimed = claim_store_outputs(planned, report, skip_existing=skip_existing, stores=stores)
        named: list[tuple[Path | str, Path | str]] = [(str(j.source), str(j.target)) for j in claimed]
        todo = [{"source": os.fsencode(str(j.source)), "target": os.fsencode(str(j.target)),
                 "store": json.dumps([j.source.base, j.source.path, j.target.base, j.target.path])}
                for j in claimed]  # fmt: skip
    else:
        jobs = plan_jobs(Path(source), scale, None if output is None else Path(output), recursive=recursive, fmt=fmt)
        remove_stale_temporaries(job.target for job in jobs)  # left by a run that was killed
        named = [(j.source, j.target) for j in claim_outputs(jobs, report, skip_existing=skip_existing,
                                                              on_image=lambda path, pixels: None)]  # fmt: skip
        todo = [{"source": os.fsencode(os.path.abspath(s)), "target": os.fsencode(os.path.abspath(t)), "store": ""}
                for s, t in named]  # fmt: skip  # absolute: any worker's cwd; bytes: any file name
    if not todo:
        return report
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
            raise UsageError(f"--ray: {actors} actors x {each:g} {name} is more than the cluster's "
                             f"{resources.get(name, 0):g} {name}")  # fmt: skip
    env: dict[str, Any] = {} if gpus else {"runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}}  # no GPU
    from ray.data import DataContext
    from ray.data.exceptions import ExecutionTimeoutError

    context = DataContext.get_current()
    progress_bars, context.enable_progress_bars = context.enable_progress_bars, False  # the summary says what happened
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)  # Ray Data's progress lines, too
    try:
        rows = from_items(todo)
        threads = max(1, math.ceil(ray.cpus_per_actor))  # an actor's share, not every core of its machine
        results = rows.map_batches(
            FileActor, fn_constructor_args=(dataclasses.replace(settings, cpu_threads=threads), scale), batch_size=1,
            fn_constructor_kwargs={"max_pixels": max_pixels, "max_output_pixels": max_output_pixels},
            compute=ActorPoolStrategy(size=actors), num_cpus=ray.cpus_per_actor, num_gpus=gpus or None, **env,
        ).take_all()  # fmt: skip
    except (ray_module.exceptions.RayError, ExecutionTimeoutError) as error:  # an actor could not start or died
        raise BackendError(f"Ray: {first_line(error)}") from error
    finally:
        context.enable_progress_bars = progress_bars
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if started:
            ray_module.shutdown()
    by_source = {row["source"]: row for row in results}
    for sent, (given_source, given_target) in zip(todo, named, strict=True):  # in the plan's order
        row = by_source[sent["source"]]
        if row["outcome"] == "written":
            report.written.append(given_target)
            report.megapixels += float(row["megapixels"])
        else:  # failed_output: the output it failed to write, if that is what failed
            report.failed.append(
                FileFailure(given_source, row["cause"], given_target if row["failed_output"] else None)
            )
    return report


class ArrayActor:
    """One Upscaler; each row's image (an array) upscaled."""

    def __init__(self, settings: UpscalerSettings, scale: float, column: str) -> None:
        self.upscaler, self.scale, self.column = settings.build(), scale, column

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return row | {self.column: self.upscaler.upscale(np.asarray(row[self.column]), self.scale)}


def upscale_dataset(
    dataset: Any, scale: float, *, column: str = "image", settings: UpscalerSettings | None = None,
    actors: int = 2, cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0,
) -> Any:  # fmt: skip
    """A Ray Dataset whose `column` (uint8/uint16 or float HxW or HxWxC images, e.g. from ray.data.read_images)
    holds the images upscaled by `scale`; lazy, like every Ray Data transform. One actor holds one backend."""
    from ray.data import ActorPoolStrategy

    return dataset.map(
        ArrayActor, fn_constructor_args=(settings or UpscalerSettings(), scale, column),
        compute=ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
    )  # fmt: skip
