"""The inference-only fast path: ``fuse(model)`` folds norms and runs fused kernels.

Imports the exact model's building blocks (mscan, ham_head, predict), never the
SegNeXt class itself, so the exact model can offer ``model.fuse()`` without a cycle.
"""

from .model import FusedMSCAN, FusedSegNeXt, FuseOptions, fuse

__all__ = ["FuseOptions", "FusedMSCAN", "FusedSegNeXt", "fuse"]
