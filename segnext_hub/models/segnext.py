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
    """SegNeXt: an MSCAN backbone and a LightHamHead, with MMSeg 1.x module names.

    ``model(x)`` gives logits at 1/8 of the input size, like MMSeg's ``mode='tensor'``;
    ``model.predict(images)`` gives full-size class maps the way MMSeg's inference does.
    ``state_dict()`` has exactly MMSeg 1.2.2 ``EncoderDecoder``'s keys and shapes. Build
    one with ``segnext_hub.create_model`` or ``segnext_hub.load``.

    Args:
        backbone: The MSCAN encoder.
        decode_head: The LightHamHead decoder.
    """

    #: What the artifact is (set by ``segnext_hub.load``/``create_model``; None for a model
    #: built directly): variant, classes, MD_R and where each decisive value came from.
    segnext_config: Optional[ArtifactConfig] = None

    def __init__(self, backbone: MSCAN, decode_head: LightHamHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head

    @property
    def num_classes(self) -> int:
        """Outputs of the classifier (``decode_head.conv_seg``)."""
        return self.decode_head.num_classes

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None,
                bases: Optional[Tensor] = None) -> Tensor:
        """Logits at 1/8 of the input size.

        The decode head's NMF starts from random bases drawn at every call (in eval mode
        too), so outputs depend on the RNG: by default the global CPU RNG, drawn exactly as
        MMSeg draws them (``torch.manual_seed(s)`` before the call gives MMSeg's output).

        Args:
            x: Normalised images (B, 3, H, W) (ImageNet mean/std on the 0-255 scale).
            generator: Draw the bases from this generator instead of the global RNG.
            bases: The NMF bases themselves, (B * groups, D, R); nothing is drawn.

        Returns:
            Logits (B, num_classes, ceil(H/8), ceil(W/8)).

        Raises:
            ValueError: ``x`` is not (B, 3, H, W).
        """
        return self.decode_head(self.backbone(x), generator=generator, bases=bases)

    def loss(self, images: Tensor, labels: Tensor, *, ignore_index: int = IGNORE_INDEX,
             avg_non_ignore: bool = False) -> Tensor:
        """The training loss of MMSeg's SegNeXt configs for one batch.

        Drop path, the NMF and dropout draw from the global RNG in MMSeg's order, so with
        the same seed and batch the loss is MMSeg's bit for bit.

        Args:
            images: Normalised (B, 3, H, W), as ``forward`` takes them.
            labels: (B, H, W) int64 class indices, ``ignore_index`` where unlabelled
                (ADE20K's label files need ``reduce_zero_label`` first).
            ignore_index: The label value that counts as unlabelled.
            avg_non_ignore: Average over labelled pixels only; MMSeg's default (False)
                averages over every pixel, ignored ones included.

        Returns:
            The cross-entropy of the logits resized to the label size (a 0-dim tensor).
        """
        return decode_loss(self(images), labels, ignore_index=ignore_index, avg_non_ignore=avg_non_ignore)

    def replace_classifier(self, num_classes: int) -> None:
        """A new ``conv_seg`` for ``num_classes`` classes, on the old one's device and dtype.

        Initialised as MMSeg initialises it (normal, std 0.01, bias 0; global RNG), so a
        fine-tuning run starts where MMSeg's would.

        Args:
            num_classes: Outputs of the new classifier.

        Raises:
            ValueError: ``num_classes`` is not a positive integer.
        """
        check_positive_int("num_classes", num_classes)
        old = self.decode_head.conv_seg
        new = nn.Conv2d(old.in_channels, num_classes, 1, device=old.weight.device, dtype=old.weight.dtype)
        self.decode_head.conv_seg = init_classifier_(new)
        self.decode_head.num_classes = num_classes

    def set_generator(self, generator: Optional[torch.Generator]) -> None:
        """Make every later forward draw its NMF bases from ``generator``.

        Args:
            generator: The generator to draw from; None returns to the global RNG.
        """
        self.decode_head.hamburger.ham.generator = generator

    def fuse(self, **options: object) -> nn.Module:
        """A new inference-only copy with folded norms and fused kernels (docs/fast.md).

        This model is left untouched (it stays the bit-exact MMSeg reference).

        Args:
            **options: ``autocast_dtype``, ``cuda_graphs``, ``compile``... (see
                ``segnext_hub.models.fused.fuse``).

        Returns:
            The fused model: the same function up to floating-point rounding; ``.train()``
            raises.
        """
        return fuse(self, **options)
