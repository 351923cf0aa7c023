"""segnext-hub: every published SegNeXt checkpoint, usable in plain PyTorch.

The public API: ``load``, ``create_model``, ``list_models``, ``pull``, ``convert`` (and the
``SegNeXt`` class, ``get_variant``). Each name is imported on first use, so that
``import segnext_hub`` and the commands that need no model never pay for importing torch;
the objects handed out are the real functions, with their real signatures and docstrings.

Data flows one way through the subpackages: ``models`` <- ``conversion`` <- ``hub`` <-
``loading`` <- ``training`` <- ``timm`` (imported only by ``import segnext_hub.timm``) <- ``tasks``
<- ``cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these resolve lazily below
    from .conversion.converter import convert
    from .hub.pull import pull
    from .hub.registry import list_models
    from .loading import create_model, load
    from .models import SegNeXt, get_variant

_PUBLIC = {
    "load": "segnext_hub.loading",
    "pull": "segnext_hub.hub.pull",
    "convert": "segnext_hub.conversion.converter",
    "list_models": "segnext_hub.hub.registry",
    "create_model": "segnext_hub.loading",
    "get_variant": "segnext_hub.models",
    "SegNeXt": "segnext_hub.models",
}

__all__ = ["SegNeXt", "__version__", "convert", "create_model", "get_variant", "list_models", "load", "pull"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'segnext_hub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
