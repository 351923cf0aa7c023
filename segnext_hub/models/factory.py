"""Build a SegNeXt (or a bare MSCAN) from a variant name."""

from __future__ import annotations

from typing import Optional, Union

from torch import nn

from .ham_head import LightHamHead
from .init import init_backbone_, init_head_
from .mscan import MSCAN
from .segnext import SegNeXt
from .variants import Variant, check_ham_channels, check_md_r, check_positive_int, get_variant


def build_backbone(variant: Variant, drop_path_rate: Optional[float] = None) -> MSCAN:
    rate = variant.drop_path_rate if drop_path_rate is None else drop_path_rate
    return MSCAN(variant.embed_dims, variant.depths, variant.mlp_ratios, drop_path_rate=rate)


def build_model(
    variant: Union[str, Variant],
    *,
    num_classes: int = 150,
    md_r: Optional[int] = None,
    backbone_only: bool = False,
    ham_channels: Optional[int] = None,
) -> nn.Module:
    """A new SegNeXt of the given size, initialised as MMSeg initialises one, in eval mode.

    Args:
        variant: ``"t"``, ``"s"``, ``"b"``, ``"l"`` (or ``"mscan-t"`` ...) or a :class:`Variant`.
        num_classes: classes of the decode head's classifier.
        md_r: NMF rank; ``None`` uses the variant's default (the official repo's: T/S 16,
            B/L 64). Pass an int to match weights trained with another (MMSeg 1.x configs: 16).
        backbone_only: return the MSCAN alone, whose keys carry no prefix.
        ham_channels: width of the decode head (its Hamburger and its classifier input);
            ``None`` uses the variant's (T/S 256, B 512, L 1024, as MMSeg and the official
            repo build them). PaddleSeg builds every size with 256, so its B/L weights need
            ``ham_channels=256``. Must be a positive multiple of 32 (the head's GroupNorm groups).

    Returns:
        The model in eval mode.

    Raises:
        ValueError: an unknown variant, a count that is not a positive integer, or an
            ``md_r`` above the head's width.
    """
    spec = variant if isinstance(variant, Variant) else get_variant(variant)
    check_positive_int("num_classes", num_classes)
    width = spec.ham_channels if ham_channels is None else check_ham_channels(ham_channels)
    if md_r is not None:
        check_md_r(md_r, width)
    backbone = init_backbone_(build_backbone(spec))
    if backbone_only:
        return backbone.eval()
    head = LightHamHead(
        in_channels=spec.head_in_channels,
        ham_channels=width,
        channels=width,
        num_classes=num_classes,
        md_r=spec.md_r if md_r is None else md_r,
    )
    return SegNeXt(backbone, init_head_(head)).eval()
