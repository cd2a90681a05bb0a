"""Several processes with ``torch.distributed`` (docs/cluster.md).

adjinv runs data-parallel under ``torchrun``: every process is one rank of the default
process group (NCCL on GPUs, gloo on CPUs). Nothing here invents a protocol; these are
the few helpers the training loop and the dataset runner share.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from .errors import AdjinvError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a collective (a barrier) may wait for the other ranks, in seconds. Rank 0 waits
#: at a barrier while the other ranks finish their share of a dataset, which can take hours,
#: so the default is far above PyTorch's 30 minutes; ``ADJINV_DIST_TIMEOUT_S`` overrides it.
#: A rank that dies does not make the others wait this long: torchrun stops them.
DEFAULT_TIMEOUT_S = 24 * 3600


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, or ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (or when not distributed): the process that writes shared files."""
    return rank_world()[0] == 0


def init_from_env(device: torch.device | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``…); NCCL for CUDA devices, gloo otherwise. Returns
    whether this process is distributed. Without those variables, does nothing.
    Collectives time out after ``ADJINV_DIST_TIMEOUT_S`` seconds (default
    [`DEFAULT_TIMEOUT_S`][DEFAULT_TIMEOUT_S])."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if not dist.is_available():
        raise AdjinvError("this PyTorch build has no torch.distributed; run without torchrun")
    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        raw = os.environ.get("ADJINV_DIST_TIMEOUT_S", str(DEFAULT_TIMEOUT_S))
        try:
            timeout = timedelta(seconds=float(raw))
        except ValueError:
            raise AdjinvError(f"ADJINV_DIST_TIMEOUT_S must be a number of seconds, got {raw!r}") from None
        dist.init_process_group(backend, timeout=timeout)
        log.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_world_size() > 1


def all_reduce_sum(tensors: Iterable[torch.Tensor]) -> None:
    """Sum each tensor over all ranks, in place (no-op in one process)."""
    if rank_world()[1] == 1:
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if rank_world()[1] > 1:
        dist.barrier()


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Round-robin share of ``items`` for ``rank``: every item goes to exactly one rank."""
    return [it for i, it in enumerate(items) if i % world == rank]


def share_work(items: Sequence[T], work: Callable[[T], object]) -> bool:
    """Run a per-item loop's work in parallel under ``torchrun``; True on the process that
    then aggregates.

    With several ranks, rank ``r`` calls ``work`` on its [`shard()`][shard] of ``items`` (each
    item on exactly one rank), then every rank waits at a barrier. ``work`` is expected to
    fill a per-item cache on disk that all ranks share (an output folder on a shared file
    system), so that the aggregation that follows — on rank 0 alone, which is where this
    returns True — only reads the cache. In one process this does nothing and returns True:
    the aggregation computes (and caches) each item as before, so results do not depend on
    the number of processes as long as each item's computation does not.

    Ranks other than 0 get False; they should wait for rank 0 with [`barrier()`][barrier] (rank 0
    calls it once it has written its results) and must not write shared files."""
    rank, world = rank_world()
    if world == 1:
        return True
    mine = shard(items, rank, world)
    log.info("rank %d of %d: %d of %d work items", rank, world, len(mine), len(items))
    for it in mine:
        work(it)
    barrier()
    return rank == 0


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m adjinv *argv`` as ``nproc`` local processes through ``torchrun
    --standalone`` (rendezvous on this machine only). Returns torchrun's exit status."""
    if nproc < 1:
        raise AdjinvError(f"--nproc must be at least 1, got {nproc}")
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", "--nproc-per-node", str(nproc), "-m", "adjinv", *argv])
    except SystemExit as e:  # torchrun exits through sys.exit
        return int(e.code or 0)
    except Exception as e:  # ChildFailedError: a rank failed; its message names it
        raise AdjinvError(f"a training process failed ({type(e).__name__}); see the log above, "
                          "then re-run with --resume to continue from the last checkpoint") from e
    return 0
