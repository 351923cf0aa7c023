"""The reference SegNeXt model in plain PyTorch, with MMSeg 1.x module names.

Nothing here imports from the rest of segnext_hub. The names below are imported on first
use (PEP 562), so that reading :mod:`.variants` -- pure data, which the registry checks
names against -- does not import torch: that keeps torch out of the commands that need
no model (``segnext-hub list``, ``info``, a cached ``pull``...).

``build_model`` makes the bare module tree; the public ``segnext_hub.create_model`` (in
``loading``) wraps it with MMSeg's initialisation record, a config and pretrained backbones.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these resolve lazily below
    from .factory import build_backbone, build_model
    from .ham_head import NMF2D, Hamburger, LightHamHead
    from .mscan import MSCAN
    from .predict import Prediction
    from .preprocessing import MEAN_RGB, STD_RGB
    from .segnext import SegNeXt
    from .variants import VARIANTS, Variant, get_variant

_EXPORTS = {
    "build_backbone": "factory", "build_model": "factory",
    "NMF2D": "ham_head", "Hamburger": "ham_head", "LightHamHead": "ham_head",
    "MSCAN": "mscan", "Prediction": "predict", "MEAN_RGB": "preprocessing", "STD_RGB": "preprocessing",
    "SegNeXt": "segnext", "VARIANTS": "variants", "Variant": "variants", "get_variant": "variants",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
