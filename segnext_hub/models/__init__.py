"""The reference SegNeXt model in plain PyTorch, with MMSeg 1.x module names.

Nothing here imports from the rest of segnext_hub.
"""

from .factory import build_backbone, create_model
from .ham_head import NMF2D, Hamburger, LightHamHead
from .mscan import MSCAN
from .predict import Prediction
from .preprocessing import MEAN_RGB, STD_RGB
from .segnext import SegNeXt
from .variants import VARIANTS, Variant, get_variant

__all__ = [
    "MEAN_RGB", "MSCAN", "NMF2D", "STD_RGB", "VARIANTS", "Hamburger", "LightHamHead",
    "Prediction", "SegNeXt", "Variant", "build_backbone", "create_model", "get_variant",
]
