"""Several processes with ``torch.distributed`` (docs/cluster.md).

adjinv runs data-parallel under ``torchrun``: every process is one rank of the default
process group (NCCL on GPUs, gloo on CPUs). Nothing here invents a protocol; these are
the few helpers the training loop and the dataset runner share.
"""

from __future__ import annotations

import logging
import os
import threading
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
#: How long a rank waits for the others to start before giving up, in seconds
#: (``ADJINV_RENDEZVOUS_TIMEOUT_S`` overrides it): an inconsistent launch fails in minutes,
#: not in a day.
RENDEZVOUS_TIMEOUT_S = 120


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, or ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (or when not distributed): the process that writes shared files."""
    return rank_world()[0] == 0


def _seconds(name: str, default: float) -> timedelta:
    raw = os.environ.get(name, str(default))
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise AdjinvError(f"{name} must be a positive number of seconds, got {raw!r}")
    return timedelta(seconds=v)


def check_env() -> tuple[int, int]:
    """``(rank, world_size)`` from ``RANK`` / ``WORLD_SIZE``, refused with the fix when
    they do not describe a group this process can join (a rank that would wait forever)."""
    def whole(name: str) -> int:
        raw = os.environ.get(name, "")
        try:
            return int(raw)
        except ValueError:
            raise AdjinvError(f"{name}={raw!r} is not an integer; launch with torchrun, or "
                              "unset RANK and WORLD_SIZE to run in one process") from None

    rank, world = whole("RANK"), whole("WORLD_SIZE")
    if world < 1 or not 0 <= rank < world:
        raise AdjinvError(f"RANK={rank} WORLD_SIZE={world} is inconsistent (RANK must be in "
                          "0 … WORLD_SIZE-1); launch with torchrun, which sets both, or unset "
                          "them to run in one process")
    if world > 1:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise AdjinvError(f"WORLD_SIZE={world} but {' and '.join(missing)} unset: the "
                              "ranks cannot meet; launch with torchrun, which sets them")
        whole("MASTER_PORT")
    return rank, world


def init_from_env(device: torch.device | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``…); NCCL for CUDA devices, gloo otherwise. Returns
    whether this process is distributed. Without those variables, does nothing.

    The environment is checked first ([`check_env()`][check_env]). Meeting the other ranks may take
    ``ADJINV_RENDEZVOUS_TIMEOUT_S`` seconds (default [`RENDEZVOUS_TIMEOUT_S`][RENDEZVOUS_TIMEOUT_S]), with a
    log line while waiting; collectives afterwards time out after ``ADJINV_DIST_TIMEOUT_S``
    seconds (default [`DEFAULT_TIMEOUT_S`][DEFAULT_TIMEOUT_S])."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if not dist.is_available():
        raise AdjinvError("this PyTorch build has no torch.distributed; run without torchrun")
    if not dist.is_initialized():
        rank, world = check_env()
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        timeout = _seconds("ADJINV_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)
        meet = _seconds("ADJINV_RENDEZVOUS_TIMEOUT_S", RENDEZVOUS_TIMEOUT_S)
        _rendezvous(backend, rank, world, timeout, meet)
        log.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_world_size() > 1


def _rendezvous(backend: str, rank: int, world: int, timeout: timedelta,
                meet: timedelta) -> None:
    """Meet the other ranks within ``meet`` (logging while waiting), then set up the
    group with the collective ``timeout``."""
    if world == 1:
        store: dist.Store = dist.HashStore()
    else:
        addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        # torchrun may host the store in its agent; then every rank is a client
        host = rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
        waiting = threading.Timer(min(5.0, meet.total_seconds() / 2), lambda: log.warning(
            "rank %d of %d: waiting for the other ranks at %s:%d (giving up after %.0f s; "
            "ADJINV_RENDEZVOUS_TIMEOUT_S)", rank, world, addr, port, meet.total_seconds()))
        waiting.daemon = True
        waiting.start()
        try:
            store = dist.TCPStore(addr, port, world, host, timeout=meet, wait_for_workers=True)
        except (RuntimeError, OSError) as e:
            raise AdjinvError(f"rank {rank} of {world}: the other ranks did not meet at "
                              f"{addr}:{port} within {meet.total_seconds():.0f} s "
                              f"({type(e).__name__}); start every rank (torchrun does), or "
                              "raise ADJINV_RENDEZVOUS_TIMEOUT_S") from None
        finally:
            waiting.cancel()
    try:
        dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                timeout=timeout)
    except (RuntimeError, OSError) as e:
        raise AdjinvError(f"rank {rank} of {world}: could not set up the process group "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                          "check that every rank runs the same command") from None
    store.set_timeout(timeout)  # later store waits (NCCL's first collective) are not rendezvous


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
