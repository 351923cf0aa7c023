"""From an RGB image to the network's input, exactly as MMSeg's test pipeline does it.

MMSeg's test pipeline resizes the uint8 image with OpenCV before normalising it.
OpenCV works in fixed point (11-bit coefficients, a horizontal then a vertical pass with
intermediate truncations), so a float bilinear resize differs from it by one grey level
on about an eighth of the values -- enough to move a few percent of argmax pixels.
This module redoes OpenCV's integer arithmetic with torch ops, without needing OpenCV. Then
the ImageNet normalisation of MMSeg's data preprocessor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
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


def resize_like_opencv(image: Tensor, height: int, width: int,
                       window: Optional[tuple[int, int, int, int]] = None) -> Tensor:
    """Resize a (C, H, W) tensor of 0-255 integer values; returns float32 0-255 values.

    ``window=(top, bottom, left, right)`` returns only that part of the (height, width)
    result, computing nothing else: training crops a 512x512 window out of an image resized
    to up to 4x, so resizing the whole image first would cost several times more.
    """
    src = image.to(torch.int64)
    x0, x1, a0, a1 = _taps(width, src.shape[2], clamp_fraction=True)
    y0, y1, b0, b1 = _taps(height, src.shape[1], clamp_fraction=False)
    if window is not None:
        top_row, bottom_row, left, right = window
        x0, x1, a0, a1 = (t[left:right] for t in (x0, x1, a0, a1))
        y0, y1, b0, b1 = (t[top_row:bottom_row] for t in (y0, y1, b0, b1))
    first, last = int(y0.min()), int(y1.max()) + 1  # the source rows the output reads
    band = src[:, first:last]
    rows = band[:, :, x0] * a0 + band[:, :, x1] * a1  # (C, rows, W) scaled by 2048
    top, bottom = rows[:, y0 - first, :] >> 4, rows[:, y1 - first, :] >> 4
    out = (((b0[:, None] * top) >> 16) + ((b1[:, None] * bottom) >> 16) + 2) >> 2
    return out.clamp(0, 255).to(torch.float32)


# ImageNet statistics in RGB order, on the 0-255 scale (MMSeg's data preprocessor).
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)

ImageLike = Union[np.ndarray, Tensor]


def looks_like_single_image(images: ImageLike) -> bool:
    return images.ndim == 3


def as_rgb_tensor(image: ImageLike) -> Tensor:
    """HWC uint8 RGB (numpy or tensor) -> CHW float32 tensor on the 0-255 scale.

    A read-only array (``np.asarray(PIL_image)`` gives one) is copied first: torch warns
    about wrapping one, and nothing here may write to the caller's pixels anyway.
    """
    if isinstance(image, np.ndarray):
        image = np.ascontiguousarray(image) if image.flags.writeable else np.array(image, order="C")
    t = torch.from_numpy(image) if isinstance(image, np.ndarray) else image
    if not isinstance(t, Tensor) or t.ndim != 3 or t.shape[2] != 3:
        shape = tuple(getattr(image, "shape", ()))
        raise ValueError(f"predict expects RGB images of shape (H, W, 3), got shape {shape}")
    return t.permute(2, 0, 1).float()


def keep_ratio_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """MMCV's ``rescale_size``: the (h, w) that fits within (long, short) edge bounds."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def keep_ratio_resize(chw: Tensor, scale: tuple[int, int]) -> Tensor:
    """MMCV's keep-ratio rescale: fit within (long, short) edge bounds, bilinear.

    MMSeg resizes the uint8 image with OpenCV; :func:`resize_like_opencv` repeats its
    fixed-point arithmetic so that the resized pixels are the same.
    """
    height, width = chw.shape[1:]
    new_h, new_w = keep_ratio_size(height, width, scale)
    if (new_h, new_w) == (height, width):
        return chw
    return resize_like_opencv(chw, new_h, new_w)


def normalise(chw: Tensor) -> Tensor:
    mean = torch.tensor(MEAN_RGB, device=chw.device).view(3, 1, 1)
    std = torch.tensor(STD_RGB, device=chw.device).view(3, 1, 1)
    return (chw - mean) / std


@dataclass
class ResizedImage:
    """An image after the test resize, before normalisation: what a DataLoader worker hands over.

    Resizing is the costly CPU step, so it runs where images are decoded; normalising and
    padding happen on the model's device in ``predict_resized``.
    """

    pixels: Tensor  # (3, h, w) float32, 0-255 values
    original_size: tuple[int, int]  # (H, W) the mask is returned at


def resize_for_test(image: ImageLike, scale: Optional[tuple[int, int]]) -> ResizedImage:
    """MMSeg's test resize of one RGB image (None: no resize)."""
    rgb = as_rgb_tensor(image)
    height, width = rgb.shape[1:]
    resized = keep_ratio_resize(rgb, scale) if scale is not None else rgb
    return ResizedImage(resized, (int(height), int(width)))
