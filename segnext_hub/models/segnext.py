"""SegNeXt = MSCAN backbone + LightHamHead, with MMSeg-style whole/slide inference."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .fused import fuse
from .ham_head import LightHamHead
from .mscan import MSCAN
from .predict import SegmentationInference


class SegNeXt(SegmentationInference, nn.Module):
    """``model(x)`` gives logits at 1/8 of the input size, like MMSeg's ``mode='tensor'``."""

    def __init__(self, backbone: MSCAN, decode_head: LightHamHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head

    @property
    def num_classes(self) -> int:
        return self.decode_head.num_classes

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None,
                bases: Optional[Tensor] = None) -> Tensor:
        return self.decode_head(self.backbone(x), generator=generator, bases=bases)

    def set_generator(self, generator: Optional[torch.Generator]) -> None:
        """Make every later forward draw NMF bases from ``generator`` (None: global RNG)."""
        self.decode_head.hamburger.ham.generator = generator

    def fuse(self, **options: object) -> nn.Module:
        """A new inference-only copy with folded norms and fused kernels; see :func:`.fused.fuse`."""
        return fuse(self, **options)
