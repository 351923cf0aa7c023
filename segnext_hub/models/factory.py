"""Build a SegNeXt (or a bare MSCAN) from a variant name."""

from __future__ import annotations

from typing import Optional, Union

from torch import nn

from .ham_head import LightHamHead
from .init import init_backbone_, init_head_
from .mscan import MSCAN
from .segnext import SegNeXt
from .variants import Variant, check_md_r, check_positive_int, get_variant


def build_backbone(variant: Variant, drop_path_rate: Optional[float] = None) -> MSCAN:
    rate = variant.drop_path_rate if drop_path_rate is None else drop_path_rate
    return MSCAN(variant.embed_dims, variant.depths, variant.mlp_ratios, drop_path_rate=rate)


def build_model(
    variant: Union[str, Variant],
    *,
    num_classes: int = 150,
    md_r: Optional[int] = None,
    backbone_only: bool = False,
) -> nn.Module:
    """A new SegNeXt of the given size, initialised as MMSeg initialises one, in eval mode.

    ``md_r=None`` uses the variant's default NMF rank (the official repo's: T/S 16,
    B/L 64); pass an int to match weights trained with another (MMSeg 1.x configs: 16).
    ``backbone_only=True`` returns the MSCAN alone, whose keys carry no prefix.
    """
    spec = variant if isinstance(variant, Variant) else get_variant(variant)
    if md_r is not None:
        check_md_r(spec, md_r)
    check_positive_int("num_classes", num_classes)
    backbone = init_backbone_(build_backbone(spec))
    if backbone_only:
        return backbone.eval()
    head = LightHamHead(
        in_channels=spec.head_in_channels,
        ham_channels=spec.ham_channels,
        channels=spec.channels,
        num_classes=num_classes,
        md_r=spec.md_r if md_r is None else md_r,
    )
    return SegNeXt(backbone, init_head_(head)).eval()
