"""MSCAN as a timm model (and so a segmentation_models_pytorch encoder): ``import
segnext_hub.timm`` registers ``segnext_mscan_t|s|b|l`` with timm 1.0.x.

Importing ``segnext_hub`` alone imports neither timm nor torch; this subpackage does both.
Its own layer: it may import ``models``, ``conversion``, ``hub``, ``loading`` and the root
helpers; nothing in the package imports it. See docs/encoders.md.
"""

from .models import MSCANTimm, pretrained_tags

__all__ = ["MSCANTimm", "pretrained_tags"]
