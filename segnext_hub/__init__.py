"""segnext-hub: every published SegNeXt checkpoint, usable in plain PyTorch."""

from .models import SegNeXt, create_model, get_variant

__version__ = "0.1.0"

__all__ = ["SegNeXt", "__version__", "create_model", "get_variant"]
