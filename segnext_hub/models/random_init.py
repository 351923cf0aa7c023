"""Random weights that behave like trained ones, for tests, benchmarks and the demo.

Pure random BatchNorm statistics drive deep variants to NaN; instead the running
statistics are measured on the activations the random weights actually produce. Norm
affine parameters and layer scales are spread out too, so that swapping two same-shaped
tensors always changes the output.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, calibration_size: int = 96,
               calibration_batches: int = 2) -> nn.Module:
    """Fill ``model`` in place with seeded random weights and calibrated BN statistics."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("layer_scale_1") or name.endswith("layer_scale_2"):
            param.copy_(torch.empty_like(param).uniform_(0.01, 0.1, generator=gen))
        elif param.ndim == 1 and name.endswith("weight"):  # norm scales
            param.copy_(torch.empty_like(param).uniform_(0.5, 1.5, generator=gen))
        elif param.ndim == 1:  # biases
            param.copy_(torch.empty_like(param).uniform_(-0.1, 0.1, generator=gen))
        else:
            fan_in = param[0].numel()
            # The MSCA gate multiplies two activations; a smaller gain keeps 27-block
            # stages (L) finite at any input size.
            gain = 0.5 if "spatial_gating_unit.conv3" in name else 1.0
            param.copy_(torch.randn(param.shape, generator=gen) * gain * (2.0 / fan_in) ** 0.5)
    _calibrate_batchnorm(model, gen, calibration_size, calibration_batches)
    return model


def _calibrate_batchnorm(model: nn.Module, gen: torch.Generator, size: int, batches: int) -> None:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    model.eval()
    saved_momentum: list[Optional[float]] = []
    for bn in norms:
        bn.reset_running_stats()
        saved_momentum.append(bn.momentum)
        bn.momentum = None  # cumulative average over the calibration batches
        bn.train()
    backbone = getattr(model, "backbone", model)
    rng_state = torch.get_rng_state()
    for _ in range(batches):
        backbone(torch.randn((2, 3, size, size), generator=gen))
    torch.set_rng_state(rng_state)
    for bn, momentum in zip(norms, saved_momentum):
        bn.momentum = momentum
        bn.num_batches_tracked.fill_(1000 + int(torch.randint(0, 1000, (1,), generator=gen)))
    model.train(was_training)
