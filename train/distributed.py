"""Training on several processes with torchrun (DistributedDataParallel): gloo on CPUs, NCCL on CUDA GPUs.

    torchrun --nproc-per-node 2 -m vdsr.train --output runs/x --data-dir ../shared/datasets ...

Every rank draws the same deterministic batch for a step (vdsr.train.data.batch_for_step) and trains on its share,
rows rank, rank + N, ..., so N ranks with batch B/N each take the steps one process with batch B takes: DDP averages
the ranks' gradients, and every loss here is a mean over the batch, so the average is the whole batch's gradient.
Rank 0 alone validates and writes checkpoints, logs, weights and the model card; a checkpoint does not depend on N,
so a run resumes with the same or another N (or one process). A signal to any rank, or the time limit, stops every
rank after the same step (one small all-reduce per step), and rank 0 writes the checkpoint and alone exits 3 (the
others exit 0, so torchrun does not stop rank 0 while it finishes). A non-finite loss on one rank's share stops that
rank with its error; the others then wait until torchrun stops them.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from vdsr.errors import UsageError


@dataclass(frozen=True)
class Ranks:
    """This process's place among torchrun's: rank, number of ranks, rank on this machine."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0


SINGLE = Ranks()


def ranks_from_env() -> Ranks:
    """torchrun's RANK, WORLD_SIZE and LOCAL_RANK; one process without them."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return SINGLE
        return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError) as error:
        raise UsageError(f"torchrun's RANK/WORLD_SIZE/LOCAL_RANK are incomplete or not numbers ({error})") from error


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """Each rank on its own GPU of this machine (LOCAL_RANK); CPUs are shared."""
    return torch.device("cuda", ranks.local) if device.type == "cuda" and ranks.world > 1 else device


@contextmanager
def process_group(device: torch.device, ranks: Ranks) -> Iterator[None]:
    """The ranks' process group for the block: NCCL on CUDA, gloo on CPUs; nothing for one process."""
    if ranks.world == 1:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"  # the first patch build, on CPUs, can take a while
    torch.distributed.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    try:
        yield
    except BaseException:  # a rank that failed leaves: the others wait until torchrun stops them
        torch.distributed.destroy_process_group()
        raise
    torch.distributed.barrier()  # every rank done (rank 0 writes last) before any tears the group down
    torch.distributed.destroy_process_group()


def check_batch_size(batch_size: int, ranks: Ranks) -> None:
    if batch_size % ranks.world:
        raise UsageError(f"--batch-size {batch_size} does not split evenly over {ranks.world} ranks")


def share(batch: NDArray[np.float32], ranks: Ranks) -> NDArray[np.float32]:
    """This rank's rows of the step's batch."""
    return batch[ranks.rank :: ranks.world]


def wrap(model: torch.nn.Module, device: torch.device, ranks: Ranks) -> Any:
    """The module the steps run through: DDP around `model` with several ranks, else `model` itself."""
    if ranks.world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def any_rank(flag: bool, ranks: Ranks, device: torch.device) -> bool:
    """Whether `flag` holds on any rank (every rank calls this at the same point of the same step)."""
    if ranks.world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)  # NCCL reduces CUDA tensors only
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def largest(value: float, ranks: Ranks, device: torch.device) -> float:
    """The largest `value` of any rank (every rank calls this at the same point of the same step): so that all agree."""
    if ranks.world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return float(tensor.item())


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        torch.distributed.barrier()
