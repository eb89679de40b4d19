"""Driving images through a network: each image is a generator of steps (vdsr.runtime.tiling.tile_steps and the
pictures built on it) that yields its windows and is sent their results. One image's windows run in calls of
`batch`; several images' windows of one shape share calls (tiles batched across items: many small frames fill the
backend's batches as one large image would). Works on numpy arrays and on torch tensors (`concat`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from vdsr.errors import ImageError
from vdsr.runtime.tiling import Network, Steps, tile_steps

T = TypeVar("T")
Concat = Callable[[list[Any]], Any]  # joins batches along the first axis: np.concatenate, torch.cat


@dataclass(frozen=True)
class Failed:
    """An image that failed on its own (its cause names it); the others went on."""

    error: ImageError


def run_steps(steps: Steps[T], network: Network, *, batch: int, concat: Concat = np.concatenate) -> T:
    """One image's steps, its windows `batch` at a time; its outcome, or its error raised."""
    (outcome,) = drive([steps], network, batch=batch, concat=concat)
    if isinstance(outcome, Failed):
        raise outcome.error
    return outcome


def drive(
    items: Sequence[Steps[T]], network: Network, *, batch: int, concat: Concat = np.concatenate
) -> list[T | Failed]:
    """Every item's steps to the end: in each round, the pending windows of one shape (the first item's that still
    waits) from every item that has them, in item order, run `batch` at a time. An item whose steps raise an
    ImageError has that as its outcome; anything else (a BackendError: every later call would
    fail too) stops them all. (The pictures' steps report running out of memory as their ImageError.)"""
    if batch < 1:
        raise ValueError(f"Expected batch >= 1, got {batch}")
    outcomes: list[T | Failed | None] = [None] * len(items)
    pending: dict[int, Any] = {}

    def advance(index: int, sent: Any) -> None:
        try:
            pending[index] = items[index].send(sent)
        except StopIteration as stop:
            outcomes[index] = stop.value
        except ImageError as error:
            outcomes[index] = Failed(error)

    for index in range(len(items)):
        advance(index, None)
    while pending:
        shape = tuple(pending[min(pending)].shape[1:])
        members = [i for i in sorted(pending) if tuple(pending[i].shape[1:]) == shape]
        windows = [pending.pop(i) for i in members]
        stacked = windows[0] if len(windows) == 1 else concat(windows)
        parts = [network(stacked[first : first + batch]) for first in range(0, len(stacked), batch)]
        results = parts[0] if len(parts) == 1 else concat(parts)
        offset = 0
        for index, sent in zip(members, windows, strict=True):
            advance(index, results[offset : offset + len(sent)])
            offset += len(sent)
    return outcomes  # type: ignore[return-value]  # every item has run to its end


def tiled(
    network: Network, image: NDArray[np.floating], *, tile: int, halo: int, batch: int = 4
) -> NDArray[np.float32]:
    """Apply `network` to a whole (H, W) numpy image through tiles of `tile` x `tile` output pixels overlapping by
    `halo`, `batch` windows per call."""
    if image.ndim != 2:
        raise ValueError(f"Expected an (H, W) image, got shape {image.shape}")
    out = np.empty(image.shape, dtype=np.float32)

    def keep(core0: int, core1: int, rows: NDArray[np.float32]) -> None:
        out[core0:core1] = rows

    steps = tile_steps(lambda a, b: image[a:b], image.shape, tile=tile, halo=halo, on_rows=keep)
    run_steps(steps, network, batch=batch)
    return out
