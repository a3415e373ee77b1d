"""Rank, world size and the few collectives a data-parallel run needs: the one module that talks
to ``torch.distributed``.

``torchrun`` describes the group in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT); ``join`` reads it and joins with NCCL on GPUs, gloo on CPUs. Without torchrun
there is one process, nothing is joined, and every function here is a no-op that costs nothing,
so the one-process path stays the common one. Everything else asks this module where it must:
``gan_step`` shards batches and averages gradients through DDP, ``callbacks`` gathers the
validation samples and agrees on the stop, the runner attaches the MLflow tracker on rank 0 only.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
from typing import Any, Iterator

import torch
import torch.distributed as dist

TIMEOUT = datetime.timedelta(minutes=30)  # a collective no rank answers for this long fails the group


def launched() -> bool:
    """Started by torchrun with more than one process in the group."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def device(name: str) -> str:
    """The device a rank trains on: ``cuda`` and ``auto`` on a GPU machine mean this rank's own
    GPU (LOCAL_RANK), as torchrun's one-process-per-GPU layout expects."""
    if not launched() or name == "cpu" or not torch.cuda.is_available():
        return name
    if name in ("auto", "cuda"):
        return f"cuda:{local_rank()}"
    return name


def join(device_type: str) -> None:
    """Join the group torchrun described (once); NCCL for CUDA, gloo otherwise."""
    if not launched() or active():
        return
    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
    # The group's addresses go under this attempt's own prefix of torchrun's store: a group
    # restarted by --max-restarts could otherwise read a dead rank's address from the attempt
    # before it (gloo: "Connection refused", whenever the new rank 0 had not overwritten it yet).
    store, rank_, world = next(dist.rendezvous("env://", timeout=TIMEOUT))
    store = dist.PrefixStore(f"ganstop/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", store=store, rank=rank_,
                            world_size=world, timeout=TIMEOUT)


def leave() -> None:
    """Leave the group: every rank waits for the others first, so none exits while a peer still
    reads from it (gloo aborts a process whose peers vanish mid-collective)."""
    if active():
        dist.barrier()
        dist.destroy_process_group()


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (any picklable object)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the ranks, on every rank."""
    if not active():
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out / world_size()


def agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (decisions read off a rank's own clock)."""
    if not active():
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient (``torch.distributed.nn``'s
    own is deprecated)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks, differentiable: gradients flow back to every rank."""
    return _SumOverRanks.apply(x) if active() else x


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any: one decision for all (Lightning's
    ``reduce_boolean_decision``), so no rank waits in a collective for one that has stopped."""
    if not active():
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shard(n: int) -> torch.Tensor:
    """This rank's items of ``n``: ``i * world + rank``, wrapped around at the end so every rank
    has as many (stylegan2-ada's ``metric_utils``); ``gather`` drops the wrapped duplicates."""
    world = world_size()
    per_rank = -(-n // world)
    return (torch.arange(per_rank) * world + rank()) % n


def gather(local: torch.Tensor, n: int) -> torch.Tensor:
    """Every rank's ``shard(n)`` rows, interleaved back into items 0..n-1, on every rank."""
    if not active():
        return local[:n]
    parts = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1)[:n]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers (batch-norm statistics) in ``module`` on every rank."""
    if active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=src)


@contextlib.contextmanager
def failing_on_sigterm() -> Iterator[None]:
    """Under torchrun, SIGTERM (the agent ending the group because another rank failed) raises
    SystemExit, so the MLflow run this rank holds ends FAILED instead of staying RUNNING."""
    if not launched():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
