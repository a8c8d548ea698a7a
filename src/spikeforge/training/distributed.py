"""Multi-process data parallelism with PyTorch's own engine (DistributedDataParallel).

``torchrun --nproc_per_node=N -m spikeforge train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`init_distributed` reads them and starts a process group: ``gloo`` on CPU, ``nccl`` on CUDA. Each
step every process takes a strided shard of the same global batch (the order is a function of
``(seed, epoch)`` only), so N processes with per-process batch B/N follow the same trajectory as one
process with batch B (BatchNorm aside: on CPU it normalises per process, on CUDA ``run.sync_bn`` makes it
global). Rank 0 alone writes logs, metrics and checkpoints.

Example:
    >>> import torch
    >>> from spikeforge.training.distributed import epoch_order, shard
    >>> order = epoch_order(10, seed=0, epoch=3)
    >>> torch.equal(order, epoch_order(10, seed=0, epoch=3)), sorted(order.tolist()) == list(range(10))
    (True, True)
    >>> shard(torch.arange(8), rank=1, world_size=2).tolist()
    [1, 3, 5, 7]
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, its ``local_rank`` and ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; a named device must exist."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {name!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
        return torch.device(f"cuda:{local_rank}") if name == "cuda" else torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device: unknown value {name!r}; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'")


def init_distributed(device_name: str = "auto", timeout_s: float = 600.0) -> DistContext:
    """A :class:`DistContext` from torchrun's environment; starts the process group when ``WORLD_SIZE`` > 1.

    ``timeout_s`` bounds how long a collective waits for a process that stopped answering (then it fails
    instead of hanging; torch's default is 30 minutes)."""
    world = env_world_size()
    if world <= 1:
        return DistContext(device=resolve_device(device_name))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank, world, local_rank, device, backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The sample order of ``epoch``: a permutation that depends on ``(seed, epoch)`` only."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This process's strided share of a global batch (what ``DistributedSampler`` does per epoch)."""
    return indices[rank::world_size]


def batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
            drop_last: bool = False) -> list[torch.Tensor]:
    """Global batches of one epoch; the same for every number of processes. ``drop_last`` drops a last
    batch smaller than ``batch_size``."""
    order = epoch_order(n, seed, epoch, shuffle)
    out = list(order.split(batch_size))
    if out and drop_last and len(out[-1]) < batch_size:
        out.pop()
    return out


def check_last_batch(n: int, batch_size: int, world_size: int, drop_last: bool) -> None:
    """Every process gets at least one sample of every global batch, or one ``ValueError`` naming the fix.

    The rule is the same for 1 and N processes: batches are never dropped silently, so N processes follow
    the trajectory of one process with the same global batch.
    """
    last = n % batch_size
    if world_size > 1 and not drop_last and 0 < last < world_size:
        raise ValueError(f"data.batch_size: the last batch of each epoch holds {last} of the {n} training samples, "
                         f"fewer than the {world_size} processes, so some would get none; set data.drop_last=true "
                         "(drops it for any number of processes) or choose data.batch_size/data.train_subset so "
                         f"that {n} % batch_size is 0 or >= {world_size}")


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over processes (in place; a no-op in a single process)."""
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every process."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def wrap_model(model: torch.nn.Module, ctx: DistContext, sync_bn: bool = True) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when distributed (SyncBatchNorm on CUDA if ``sync_bn``)."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if sync_bn and ctx.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if ctx.device.type == "cuda":
        return DDP(model, device_ids=[ctx.device.index], output_device=ctx.device.index)
    return DDP(model)
