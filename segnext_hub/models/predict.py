"""Whole-image and sliding-window inference, shared by the exact and the fused model.

A mixin, so that the fused model reuses it without importing the exact model: it only
needs ``forward``, ``num_classes`` and ``parameters()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .preprocessing import (
    ImageLike,
    as_rgb_tensor,
    keep_ratio_resize,
    looks_like_single_image,
    normalise,
)


@dataclass
class Prediction:
    """One image's result: a class-index map at the image's size and optional logits."""

    mask: Tensor  # (H, W) int64
    logits: Optional[Tensor] = None  # (num_classes, H, W) float32


class SegmentationInference:
    """``predict`` for any module whose forward maps (B, 3, H, W) to 1/8-size logits."""

    def _logits_at(self, x: Tensor, size: Sequence[int], generator: Optional[torch.Generator]) -> Tensor:
        """Forward, then bilinear resize of the 1/8 logits to ``size`` (MMSeg's encode_decode)."""
        logits = self(x, generator=generator)
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)

    def _slide(self, x: Tensor, crop: tuple[int, int], stride: tuple[int, int],
               generator: Optional[torch.Generator]) -> Tensor:
        batch, _, height, width = x.shape
        crop_h, crop_w = crop
        stride_h, stride_w = stride
        rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
        cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
        total = x.new_zeros((batch, self.num_classes, height, width))
        count = x.new_zeros((batch, 1, height, width))
        for r in range(rows):
            for c in range(cols):
                y2 = min(r * stride_h + crop_h, height)
                x2 = min(c * stride_w + crop_w, width)
                y1 = max(y2 - crop_h, 0)
                x1 = max(x2 - crop_w, 0)
                tile = x[:, :, y1:y2, x1:x2]
                logits = self._logits_at(tile, tile.shape[2:], generator)
                total += F.pad(logits, (x1, width - x2, y1, height - y2))
                count[:, :, y1:y2, x1:x2] += 1
        return total / count

    @torch.no_grad()
    def predict(
        self,
        images: Union[ImageLike, Sequence[ImageLike]],
        mode: str = "whole",
        scale: Optional[tuple[int, int]] = (2048, 512),
        size_divisor: int = 32,
        crop_size: tuple[int, int] = (512, 512),
        stride: tuple[int, int] = (341, 341),
        return_logits: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> list[Prediction]:
        """Full-resolution class maps, computed the way MMSeg 1.x inference does.

        ``images``: RGB uint8, HWC numpy arrays or tensors (one image or a list).
        ``scale``: keep-ratio resize target (long, short) edge bounds, as MMSeg's test
        pipeline (ADE20K ``(2048, 512)``, Cityscapes ``(2048, 1024)``); None: no resize.
        The normalised image is zero-padded to a multiple of ``size_divisor`` (MMSeg's test
        preprocessor); ``mode="whole"`` runs it in one forward, ``"slide"`` in tiles of
        ``crop_size`` every ``stride`` (Cityscapes: 1024 / 768). Each image is its own forward,
        so with the global RNG, results depend on the order of images.
        """
        if mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
        if isinstance(images, (np.ndarray, Tensor)) and looks_like_single_image(images):
            images = [images]
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        results = []
        for image in images:
            rgb = as_rgb_tensor(image)
            height, width = rgb.shape[1:]
            resized = keep_ratio_resize(rgb, scale) if scale is not None else rgb
            x = normalise(resized.to(device)).unsqueeze(0).to(dtype)
            rh, rw = x.shape[2:]
            pad_h = (-rh) % size_divisor if size_divisor else 0
            pad_w = (-rw) % size_divisor if size_divisor else 0
            padded = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)
            if mode == "whole":
                logits = self._logits_at(padded, padded.shape[2:], generator)
            else:
                logits = self._slide(padded, tuple(crop_size), tuple(stride), generator)
            logits = logits[:, :, :rh, :rw]
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[0]
            mask = logits.argmax(dim=0)
            results.append(Prediction(mask=mask.cpu(), logits=logits.float().cpu() if return_logits else None))
        return results


