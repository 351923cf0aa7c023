"""Bilinear resize of uint8 images that reproduces OpenCV's ``INTER_LINEAR`` exactly.

MMSeg's test pipeline resizes the uint8 image with OpenCV before normalising it.
OpenCV works in fixed point (11-bit coefficients, a horizontal then a vertical pass with
intermediate truncations), so a float bilinear resize differs from it by one grey level
on about an eighth of the values -- enough to move a few percent of argmax pixels.
This module redoes OpenCV's integer arithmetic with torch ops, without needing OpenCV.
"""

from __future__ import annotations

import torch
from torch import Tensor

_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE (1 << 11)


def _taps(dst: int, src: int, clamp_fraction: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source indices and fixed-point weights for one axis.

    OpenCV computes the source position in float32, clamps the *fraction* to 0 at the
    borders of the horizontal axis, but only clamps the *indices* on the vertical one.
    """
    scale = 1.0 / (dst / src)
    pos = ((torch.arange(dst, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)
    first = torch.floor(pos)
    frac = pos - first
    first = first.to(torch.int64)
    if clamp_fraction:
        low = first < 0
        frac[low], first[low] = 0.0, 0
        high = first >= src - 1
        frac[high], first[high] = 0.0, src - 1
        second = torch.clamp(first + 1, max=src - 1)
    else:
        second = torch.clamp(first + 1, 0, src - 1)
        first = torch.clamp(first, 0, src - 1)
    w1 = torch.round(frac * _COEF_SCALE).to(torch.int64)
    w0 = torch.round((1.0 - frac) * _COEF_SCALE).to(torch.int64)
    return first, second, w0, w1


def resize_like_opencv(image: Tensor, height: int, width: int) -> Tensor:
    """Resize a (C, H, W) tensor of 0-255 integer values; returns float32 0-255 values."""
    src = image.to(torch.int64)
    x0, x1, a0, a1 = _taps(width, src.shape[2], clamp_fraction=True)
    y0, y1, b0, b1 = _taps(height, src.shape[1], clamp_fraction=False)
    rows = src[:, :, x0] * a0 + src[:, :, x1] * a1  # (C, H_src, W) scaled by 2048
    top, bottom = rows[:, y0, :] >> 4, rows[:, y1, :] >> 4
    out = (((b0[:, None] * top) >> 16) + ((b1[:, None] * bottom) >> 16) + 2) >> 2
    return out.clamp(0, 255).to(torch.float32)
