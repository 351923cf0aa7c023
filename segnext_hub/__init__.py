"""segnext-hub: every published SegNeXt checkpoint, usable in plain PyTorch.

The public API: ``load``, ``create_model``, ``list_models``, ``pull``, ``convert``.
"""

from __future__ import annotations

from typing import Any

from .models import SegNeXt, create_model, get_variant

__version__ = "0.1.0"

__all__ = ["SegNeXt", "__version__", "convert", "create_model", "get_variant", "list_models", "load", "pull"]


def load(name_or_path: Any, **kwargs: Any) -> Any:
    """See :func:`segnext_hub.loading.load`."""
    from .loading import load as _load

    return _load(name_or_path, **kwargs)


def pull(name: str, **kwargs: Any) -> Any:
    """See :func:`segnext_hub.hub.pull`."""
    from .hub import pull as _pull

    return _pull(name, **kwargs)


def convert(src: Any, dst: Any, **kwargs: Any) -> Any:
    """See :func:`segnext_hub.converter.convert`."""
    from .converter import convert as _convert

    return _convert(src, dst, **kwargs)


def list_models() -> list[str]:
    """Names of every published artifact (``segnext-hub list`` shows details)."""
    from .registry import list_artifacts

    return [artifact.name for artifact in list_artifacts()]
