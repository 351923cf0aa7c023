"""SegNeXt = MSCAN backbone + LightHamHead, with MMSeg-style whole/slide inference."""

from __future__ import annotations

from typing import Optional, TYPE_CHECKING

import torch
from torch import Tensor, nn

from .fused import fuse
from .ham_head import LightHamHead
from .init import init_classifier_
from .loss import IGNORE_INDEX, decode_loss
from .mscan import MSCAN
from .predict import SegmentationInference
from .variants import check_positive_int

if TYPE_CHECKING:  # the config lives above models; models import nothing else from the package
    from ..config import ArtifactConfig


class SegNeXt(SegmentationInference, nn.Module):
    """``model(x)`` gives logits at 1/8 of the input size, like MMSeg's ``mode='tensor'``."""

    #: What the artifact is (set by ``segnext_hub.load``/``create_model``; None for a model
    #: built directly): variant, classes, MD_R and where each decisive value came from.
    segnext_config: Optional[ArtifactConfig] = None

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

    def loss(self, images: Tensor, labels: Tensor, *, ignore_index: int = IGNORE_INDEX,
             avg_non_ignore: bool = False) -> Tensor:
        """The training loss of MMSeg's SegNeXt configs for one batch (a 0-dim tensor).

        ``images``: normalised (B, 3, H, W), as ``forward`` takes them; ``labels``: (B, H, W)
        class indices, ``ignore_index`` (255) where unlabelled (ADE20K's label files need
        ``reduce_zero_label`` first). Drop path, the NMF and dropout draw from the global
        RNG in MMSeg's order. See :func:`.loss.decode_loss` for the averaging rule.
        """
        return decode_loss(self(images), labels, ignore_index=ignore_index, avg_non_ignore=avg_non_ignore)

    def replace_classifier(self, num_classes: int) -> None:
        """A new ``conv_seg`` for ``num_classes`` classes, initialised as MMSeg initialises
        it (normal, std 0.01, bias 0; global RNG), on the old one's device and dtype."""
        check_positive_int("num_classes", num_classes)
        old = self.decode_head.conv_seg
        new = nn.Conv2d(old.in_channels, num_classes, 1, device=old.weight.device, dtype=old.weight.dtype)
        self.decode_head.conv_seg = init_classifier_(new)
        self.decode_head.num_classes = num_classes

    def set_generator(self, generator: Optional[torch.Generator]) -> None:
        """Make every later forward draw NMF bases from ``generator`` (None: global RNG)."""
        self.decode_head.hamburger.ham.generator = generator

    def fuse(self, **options: object) -> nn.Module:
        """A new inference-only copy with folded norms and fused kernels; see :func:`.fused.fuse`."""
        return fuse(self, **options)
