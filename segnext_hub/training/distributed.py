"""Fine-tuning across processes: DistributedDataParallel steps, accumulation, freezing, SyncBN.

``torchrun --nproc_per_node=N examples/finetune.py ...`` starts N processes; the process
group itself is joined with :func:`segnext_hub.tasks.distributed.init_from_env` (gloo on the
CPU, nccl with one GPU per local rank). What is particular to training lives here:

- :func:`train_step`: one optimiser step over K micro-batches. Each micro-batch's loss is
  divided by K and back-propagated; under DDP every micro-batch but the last runs in
  ``no_sync()``, so gradients are all-reduced (averaged over ranks) once per step. With
  MMSeg's loss (a mean over every pixel of equal-size crops) the result is the gradient of
  the whole batch of ``ranks x K x micro-batch`` images, where nothing else depends on how
  the batch is split: BatchNorm in training mode normalises each micro-batch by its own
  statistics (see :func:`freeze_stages` and ``--sync-bn``).
- :func:`freeze_stages`: no gradients for the first N backbone stages, and their BatchNorm in
  eval mode (running statistics kept, no drop path), for small GPUs.
- :func:`use_sync_batchnorm`: ``torch.nn.SyncBatchNorm`` in place of every BatchNorm; torch
  supports it under DDP only for CUDA modules, so the CPU is refused with one line.
- :func:`replicas_differ`: a collective check that every rank holds the same parameters.
- :func:`gather_rng_states` / :func:`rank_seed`: per-rank random streams from one seed, saved
  with a checkpoint so ``--resume`` continues each of them.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Optional

import torch
from torch import Tensor, nn

from ..errors import BadInputError

NUM_STAGES = 4


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def _distributed() -> bool:
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_seed(seed: int, rank: int) -> int:
    """The global torch RNG seed of ``rank``: ``seed`` itself on rank 0 (so one process trains as
    before), distinct streams elsewhere (dropout, drop path and NMF bases differ per rank)."""
    return seed if rank == 0 else (seed * 1_000_003 + rank * 7_919) % (2 ** 63)


def freeze_stages(model: nn.Module, stages: int) -> list[str]:
    """Freeze the first ``stages`` (0-4) stages of ``model.backbone`` (or of an MSCAN itself).

    Frozen: patch embedding, blocks and norm of each stage get ``requires_grad=False`` and are
    put in eval mode (BatchNorm keeps its running statistics, drop path is off). Call it after
    ``model.train()``, which would put them back in training mode.

    Args:
        model: a SegNeXt (or MSCAN).
        stages: how many stages, from the stem on; 4 freezes the whole backbone.

    Returns:
        The names of the frozen modules.

    Raises:
        BadInputError: ``stages`` outside 0-4.
    """
    if not isinstance(stages, int) or not 0 <= stages <= NUM_STAGES:
        raise BadInputError(f"--freeze-stages must be 0 to {NUM_STAGES}, got {stages!r}")
    backbone = getattr(model, "backbone", model)
    frozen = []
    for stage in range(1, stages + 1):
        for prefix in ("patch_embed", "block", "norm"):
            module = getattr(backbone, f"{prefix}{stage}")
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)
            frozen.append(f"{prefix}{stage}")
    return frozen


def use_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` as a ``SyncBatchNorm`` (statistics over all ranks' batches).

    Args:
        model: the model, before it is wrapped in DDP.
        device: where it trains.

    Returns:
        The converted model (same keys and values in ``state_dict``).

    Raises:
        BadInputError: on the CPU: torch runs SyncBatchNorm under DDP only on CUDA modules
            (on the CPU its forward raises), so refuse before anything starts.
    """
    if device.type != "cuda":
        raise BadInputError("--sync-bn needs CUDA: torch's SyncBatchNorm runs under DDP only on CUDA "
                            "devices (on the CPU, BatchNorm stays per process)")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def train_step(model: nn.Module, micro_batches: Iterable[Any], optimizer: torch.optim.Optimizer,
               loss_fn: Callable[[nn.Module, Any], Tensor], *, scaler: Optional[torch.amp.GradScaler] = None,
               autocast: Optional[Callable[[], contextlib.AbstractContextManager]] = None) -> Tensor:
    """One optimiser step over the micro-batches of one iteration.

    Args:
        model: the model, or its ``DistributedDataParallel`` wrapper (then gradients are
            all-reduced on the last micro-batch only; the others run in ``no_sync()``).
        micro_batches: a sequence (its length K divides each loss) of whatever ``loss_fn`` takes.
        optimizer: stepped once, after the last micro-batch (gradients zeroed first).
        loss_fn: ``loss_fn(model, batch)`` -> the micro-batch's mean loss (a 0-dim tensor).
        scaler: a GradScaler (fp16), or None.
        autocast: a factory of the autocast context for the forward pass, or None.

    Returns:
        This rank's loss of the whole step (the mean of its micro-batches' losses), detached.
    """
    batches = list(micro_batches)
    steps = len(batches)
    if steps == 0:
        raise ValueError("train_step needs at least one micro-batch")
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for k, batch in enumerate(batches):
        last = k == steps - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast() if autocast is not None else contextlib.nullcontext():
                loss = loss_fn(model, batch)
            scaled = loss / steps
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total = total + loss.detach().float().cpu()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return total / steps


def mean_over_ranks(value: Tensor, device: torch.device) -> Tensor:
    """The mean of a small tensor over all ranks (itself without a process group)."""
    if not _distributed():
        return value
    dist = _dist()
    moved = value.detach().to(device, torch.float64).clone()
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    return (moved / dist.get_world_size()).cpu()


def replicas_differ(model: nn.Module, device: torch.device) -> list[str]:
    """Collective: the parameters whose values differ between ranks (empty when all agree).

    Each parameter is summarised by its float64 sum and sum of squares; identical tensors give
    identical summaries, and a difference almost surely changes them.
    """
    if not _distributed():
        return []
    dist = _dist()
    names, summaries = [], []
    for name, param in model.named_parameters():
        data = param.detach().double()
        names.append(name)
        summaries.append(torch.stack([data.sum(), (data * data).sum()]))
    local = torch.stack(summaries).to(device)
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    first = gathered[0]
    return [names[i] for i in range(len(names)) if any(not torch.equal(g[i], first[i]) for g in gathered[1:])]


def gather_rng_states() -> list[Tensor]:
    """Every rank's global torch RNG state, in rank order (collective; one entry alone)."""
    state = torch.get_rng_state()
    if not _distributed():
        return [state]
    dist = _dist()
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states
