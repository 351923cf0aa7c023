"""torch.distributed for evaluation: who am I, which images are mine, and the collectives.

Evaluation shards images over the ranks of an initialised process group (``torchrun``
sets RANK / WORLD_SIZE / LOCAL_RANK; the CLI then calls :func:`init_from_env`). Every
collective here is called by every rank the same number of times, so uneven or empty
shards cannot hang; a failure on one rank is all-reduced as a flag and raised on all.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import BadInputError

DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")  # where collective tensors live (nccl: CUDA)

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_by_torchrun() -> bool:
    """True when the environment names this process's rank in a group (torchrun, mpirun wrappers)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_from_env(device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Join the process group torchrun describes; returns this rank's torch device.

    nccl with one CUDA device per local rank when ``device`` is CUDA, gloo on CPU. The
    timeout bounds every collective, so a rank that dies cannot leave the others waiting.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BadInputError(f"--device {device}: no CUDA device is available")
        if local_rank >= torch.cuda.device_count():
            raise BadInputError(f"local rank {local_rank} has no CUDA device ({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return device


def finish() -> None:
    """Leave the process group (if this process joined one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def current_world() -> World:
    """This process's rank and group size (0 of 1 without an initialised group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    return World(dist.get_rank(), dist.get_world_size(), device)


def shard(count: int, world: World) -> range:
    """This rank's images: a contiguous block, sizes differing by at most one (none may be empty-safe)."""
    return range(count * world.rank // world.size, count * (world.rank + 1) // world.size)


def all_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """Element-wise sum over ranks (the tensor itself when alone)."""
    if not world.distributed:
        return values
    import torch.distributed as dist

    moved = values.to(world.device)
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    return moved.to(values.device)


def raise_if_any_failed(error: Optional[BaseException], world: World) -> None:
    """Collective: every rank learns whether one failed and raises (its own error, or the first rank's)."""
    if not world.distributed:
        if error is not None:
            raise error
        return
    import torch.distributed as dist

    flag = all_sum(torch.tensor([0 if error is None else 1]), world)
    if int(flag) == 0:
        return
    messages: list = [None] * world.size
    dist.all_gather_object(messages, None if error is None else str(error))
    if error is not None:
        raise error
    first = next(r for r, m in enumerate(messages) if m is not None)
    raise BadInputError(f"rank {first} failed: {messages[first]}")
