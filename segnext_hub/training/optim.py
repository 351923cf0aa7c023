"""MMSeg 1.2.2's optimiser set-up for SegNeXt, as plain ``torch.optim`` objects.

The configs' ``optim_wrapper``: AdamW (lr 6e-5, betas (0.9, 0.999), weight decay 0.01)
with ``paramwise_cfg.custom_keys`` ``pos_block`` and ``norm`` (decay_mult 0) and ``head``
(lr_mult 10); and their ``param_scheduler``: ``LinearLR`` from 1e-6 over iterations
[0, 1500), then ``PolyLR`` (power 1, eta_min 0) over [1500, 160000), stepped once per
iteration.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

#: ``paramwise_cfg.custom_keys`` of every SegNeXt config.
CUSTOM_KEYS: dict[str, dict[str, float]] = {
    "pos_block": {"decay_mult": 0.0},
    "norm": {"decay_mult": 0.0},
    "head": {"lr_mult": 10.0},
}


def param_groups(model: nn.Module, lr: float = 6e-5, weight_decay: float = 0.01,
                 custom_keys: Optional[Mapping[str, Mapping[str, float]]] = None) -> list[dict[str, Any]]:
    """Parameter groups for ``torch.optim.AdamW``, as MMEngine's default constructor makes them.

    Args:
        model: The model to train.
        lr: The base learning rate (the configs: 6e-5).
        weight_decay: The base weight decay (the configs: 0.01).
        custom_keys: ``{substring: {"lr_mult": x, "decay_mult": y}}``; None is the configs'
            ``paramwise_cfg`` (``CUSTOM_KEYS``: ``head`` lr x10, ``norm`` and ``pos_block``
            no decay).

    Returns:
        Groups of ``{"params", "lr", "weight_decay"}`` for the optimiser's constructor.

    Each parameter takes the settings of the first custom key that is a substring of its
    name, keys tried longest first, then alphabetically (so ``decode_head.*`` takes
    ``head``'s lr x10 and keeps its decay; ``backbone.*norm*`` has no decay; the stem's
    BatchNorms ``patch_embed1.proj.1`` are not named "norm" and decay, as in MMSeg).
    lr and decay are ``lr * lr_mult`` and ``weight_decay * decay_mult``, the products
    MMEngine computes, so the floats are the same. Parameters with equal settings share a
    group (MMEngine makes one group per parameter; AdamW's update is per parameter either
    way), in the order of ``model.named_parameters()``.
    """
    keys = dict(CUSTOM_KEYS if custom_keys is None else custom_keys)
    ordered = sorted(sorted(keys), key=len, reverse=True)
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        group_lr, group_decay = lr, weight_decay
        for key in ordered:
            if key in name:
                group_lr = lr * keys[key].get("lr_mult", 1.0)
                group_decay = weight_decay * keys[key].get("decay_mult", 1.0)
                break
        group = groups.setdefault((group_lr, group_decay), {"params": [], "lr": group_lr,
                                                            "weight_decay": group_decay})
        group["params"].append(param)
    return list(groups.values())


class WarmupPolyLR(LRScheduler):
    """MMSeg's ``LinearLR`` warm-up followed by ``PolyLR``, in closed form.

    Iteration ``i`` (0-based: the value of ``last_epoch`` after ``i`` calls of ``step()``)
    trains with ``lr_at(base_lr, i)``. MMEngine spans ``end - begin - 1`` steps, so:

    - ``i < warmup_iters``: ``base_lr * (start + (1 - start) * i / (warmup_iters - 1))``,
      reaching ``base_lr`` at iteration 1499 of the configs;
    - after: ``eta_min + (base_lr - eta_min) * (1 - (i - warmup_iters) / (total_iters -
      warmup_iters - 1)) ** power``, reaching ``eta_min`` (0) at the last iteration,
      ``total_iters - 1``, and held there.

    MMEngine computes the same numbers by a recursion on the previous lr; the closed form
    agrees to rounding (tests/parity: all 160,000 iterations of the configs).
    """

    def __init__(self, optimizer: Optimizer, total_iters: int = 160_000, warmup_iters: int = 1500,
                 warmup_ratio: float = 1e-6, power: float = 1.0, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        if warmup_iters == 1 or not 0 <= warmup_iters <= total_iters - 2:
            raise ValueError(f"need warmup_iters 0 or 2 .. total_iters - 2, got {warmup_iters} "
                             f"with total_iters {total_iters}")
        self.total_iters, self.warmup_iters = total_iters, warmup_iters
        self.warmup_ratio, self.power, self.eta_min = warmup_ratio, power, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, iteration: int) -> float:
        """The lr of a group whose base is ``base_lr`` at ``iteration``."""
        if iteration < self.warmup_iters:
            start = self.warmup_ratio
            return base_lr * (start + (1 - start) * iteration / (self.warmup_iters - 1))
        done = min(iteration, self.total_iters - 1) - self.warmup_iters
        span = self.total_iters - self.warmup_iters - 1
        return self.eta_min + (base_lr - self.eta_min) * (1 - done / span) ** self.power

    def get_lr(self) -> list[float]:
        return [self.lr_at(base_lr, self.last_epoch) for base_lr in self.base_lrs]


def poly_schedule(optimizer: Optimizer, total_iters: int = 160_000, warmup_iters: int = 1500,
                  **options: Any) -> WarmupPolyLR:
    """The configs' schedule for ``optimizer``; call ``.step()`` after every iteration.

    Linear warm-up from ``warmup_ratio`` to the base lr, then poly decay to ``eta_min`` at
    the last iteration, as MMEngine steps ``LinearLR`` + ``PolyLR``.

    Args:
        optimizer: The optimiser whose groups' lrs it sets.
        total_iters: The run's length (the configs: 160,000).
        warmup_iters: Warm-up iterations (the configs: 1500); 0 for none.
        **options: ``warmup_ratio`` (1e-6), ``power`` (1.0), ``eta_min`` (0.0).

    Returns:
        The scheduler; its ``state_dict()`` resumes it.

    Raises:
        ValueError: ``warmup_iters`` is 1 or leaves fewer than two iterations of decay.
    """
    return WarmupPolyLR(optimizer, total_iters=total_iters, warmup_iters=warmup_iters, **options)

