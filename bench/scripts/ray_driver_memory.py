"""The driver's memory on `vdsr-run --ray` runs of 1,000 to 1,000,000 files: flat, since it lists, plans and claims a
folder at a time and keeps counts, not lists.

Each count runs in a process of its own (peak RSS is a process's): the driver code of a real run
(vdsr.runtime.planning.LazyPlan, vdsr.runtime.ray_data.claimed_batches and run_batches, a local Ray cluster of 2
actors) over a synthetic file system of N tiny jobs in folders of 1,000 (listed lazily, as a local tree or an object
store is), with actors that do the minimum (each job answered "written" at once): what grows with N on the driver is
what this measures, not decoding. Peak RSS is sampled every 20 ms once the cluster and the actors are up (the
baseline) until the last answer; `ru_maxrss` is the whole process's peak, start-up included.

    python -m vdsr.bench.scripts.ray_driver_memory --counts 1000,10000,100000,1000000 \\
        --json bench/results/ray/driver_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Hashable, Iterator
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from numpy.typing import NDArray

from vdsr.bench.resident import resident_bytes
from vdsr.runtime.images import LoadedImage
from vdsr.runtime.places import Files, Place
from vdsr.runtime.planning import LazyPlan, RunCounts
from vdsr.runtime.ray_data import RayOptions, claimed_batches, run_batches

PER_FOLDER = 1000


class SyntheticFiles(Files):
    """/in holding `count` images in folders of PER_FOLDER, listed a folder at a time; nothing else exists."""

    system = "synthetic"

    def __init__(self, count: int) -> None:
        self.count = count

    def kind(self, path: PurePath) -> str:
        return "folder" if str(path) == "/in" else "missing"

    def images(self, folder: PurePath, *, recursive: bool) -> list[PurePath]:
        return [image for images in self.folders(folder, recursive=recursive) for image in images]

    def folders(self, folder: PurePath, *, recursive: bool) -> Iterator[list[PurePath]]:
        for start in range(0, self.count, PER_FOLDER):
            sub = PurePosixPath(f"d{start // PER_FOLDER:05}")
            yield [sub / f"{i:07}.png" for i in range(start, min(start + PER_FOLDER, self.count))]

    def identity(self, path: PurePath) -> Hashable | None:
        return None

    def check_writable(self, folder: PurePath) -> None:
        return None

    def load(self, path: PurePath, *, max_pixels: int, shown: Path | str) -> LoadedImage:
        raise NotImplementedError("synthetic files are never read")

    def save(self, path: PurePath, pixels: NDArray[Any], *, shown: Path | str, **metadata: bytes | None) -> None:
        raise NotImplementedError("synthetic files are never written")


class MinimalActor:
    """An actor that answers each job "written" at once: the driver's side of the run is all that is left."""

    def run(self, number: int, rows: list[tuple[str, str, str, str]]) -> tuple[int, list[Any], str | None, list[str]]:
        return number, [(True, 0.0, "", False)] * len(rows), None, []


def measure(count: int) -> dict[str, Any]:
    """One count, in this process: the cluster and actors up, then the run, RSS sampled all along."""
    import ray

    folder = tempfile.mkdtemp(prefix="rayd-")
    ray.init(address="local", _temp_dir=folder, num_cpus=2, include_dashboard=False, log_to_driver=False)
    report, peak, done = RunCounts(), [0], threading.Event()
    lazy = LazyPlan(Place(SyntheticFiles(count), PurePosixPath("/in")), 2.0)
    batches = claimed_batches(lazy, report, skip_existing=False, on_failure=lambda f: None, on_progress=lambda r: None)
    options = RayOptions("local", actors=2, cpus_per_actor=1.0, gpus_per_actor=0.0)

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], resident_bytes())

    first = next(batches)  # the cluster's and actors' start is the baseline, not the run
    baseline = resident_bytes()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    run_batches(
        _chain(first, batches),
        report,
        ray=options,
        actor=MinimalActor,
        args=(),
        kwargs={},
        on_failure=lambda f: None,
        on_progress=lambda r: None,
    )
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    ray.shutdown()
    assert report.written == report.planned == count and report.listed, report
    return {
        "files": count,
        "baseline_rss_mib": round(baseline / 2**20, 1),
        "peak_rss_mib": round(max(peak[0], resident_bytes()) / 2**20, 1),
        "growth_mib": round((max(peak[0], resident_bytes()) - baseline) / 2**20, 1),
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(seconds, 1),
    }


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1000,10000,100000,1000000")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: this count only
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    rows = []
    for count in (int(c) for c in args.counts.split(",")):
        child = [sys.executable, "-m", "vdsr.bench.scripts.ray_driver_memory", "--one", str(count)]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        done = subprocess.run(child, capture_output=True, text=True, check=True, env=env)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "ray": __import__("ray").__version__,
        "per_folder": PER_FOLDER,
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
