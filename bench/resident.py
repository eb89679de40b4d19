"""Resident memory of processes, read from Linux's /proc, for measurement scripts (not tests): the bytes a process
(and, for servers, its descendants) holds now, and a sampler that records it on a thread while work runs, to tell
a plateau from growth.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np


def resident_bytes(pid: int | None = None) -> int:
    """Resident bytes of one process (this one by default); 0 when it is gone."""
    try:
        pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (Ray's GCS, raylet, Serve's controller, proxy and replicas, for example)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def tree_resident_bytes(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    return sum(resident_bytes(member) for member in [pid, *descendants(pid)])


class ResidentSampler:
    """`with ResidentSampler(every=2) as sampler:` records (seconds, MiB) of `measure()` (this process's resident
    bytes by default) every `every` seconds on a thread; `summary()` gives the samples, the first, last and largest
    figures, and the growth from the mean of the first half to the mean of the second (warm-up lands in the first)."""

    def __init__(self, *, every: float, measure: Callable[[], int] = resident_bytes) -> None:
        self.every, self.measure = every, measure
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while True:
            self.samples.append((round(time.monotonic() - start, 1), round(self.measure() / 2**20, 1)))
            if self._done.wait(self.every):
                return

    def __enter__(self) -> ResidentSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        mib = [value for _, value in self.samples]
        half = len(mib) // 2
        return {
            "rss_mib_samples": self.samples,
            "rss_mib_first": mib[0] if mib else None,
            "rss_mib_last": mib[-1] if mib else None,
            "rss_mib_max": max(mib) if mib else None,
            "rss_mib_growth_second_half": round(float(np.mean(mib[half:]) - np.mean(mib[:half])), 1) if half else None,
        }
