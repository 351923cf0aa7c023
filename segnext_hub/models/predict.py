"""Whole-image and sliding-window inference, shared by the exact and the fused model.

A mixin, so that the fused model reuses it without importing the exact model: it only
needs ``forward``, ``num_classes``, ``parameters()`` and a decode head that can draw its
NMF bases.

Batching: forwards whose padded inputs have the same size (whole mode: images of one
size; slide mode: the windows of one image) run ``batch_size`` at a time. Each forward's
initial NMF bases are drawn beforehand, in the order batch size 1 would draw them (image
after image, window after window, from that image's generator or the global RNG), and
passed as ``bases=``, so the random part of every image is what it would be alone.
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
    ResizedImage,
    looks_like_single_image,
    normalise,
    resize_for_test,
)

#: Test-time sizes in pixels per side: resize scale and slide crop 32..8192 (as
#: segnext_hub.config bounds them in files), slide stride 8..8192, and at most MAX_WINDOWS
#: slide windows per image. A 1-pixel stride would slide for ever, a 0 one divides by
#: zero, and a 10^5 scale asks for hundreds of GB of logits.
MIN_SIDE, MAX_SIDE, MIN_STRIDE = 32, 8192, 8
MAX_WINDOWS = 4096


def check_sizes(**sizes: Optional[Sequence[int]]) -> None:
    """Each given size (``scale=``, ``crop_size=``, ``stride=``; None skipped) must be two
    integers in ``MIN_SIDE..MAX_SIDE`` (a stride from ``MIN_STRIDE``); else a ValueError
    naming it."""
    for name, value in sizes.items():
        if value is None:
            continue
        low = MIN_STRIDE if name == "stride" else MIN_SIDE
        ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and low <= v <= MAX_SIDE for v in value)
        if not ok:
            raise ValueError(f"{name} {tuple(value) if isinstance(value, (tuple, list)) else value!r} must be two "
                             f"integers in {low}..{MAX_SIDE} (pixels)")


# One generator for every image (consumed in image order), None (the global RNG, or the
# model's set_generator), or one generator (or None) per image.
Generators = Union[None, torch.Generator, Sequence[Optional[torch.Generator]]]


@dataclass
class Prediction:
    """One image's result: a class-index map at the image's size and optional logits."""

    mask: Tensor  # (H, W) int64
    logits: Optional[Tensor] = None  # (num_classes, H, W) float32


def slide_windows(height: int, width: int, crop: tuple[int, int],
                  stride: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(y1, y2, x1, x2) of MMSeg's sliding windows, row by row (the order they draw bases in)."""
    crop_h, crop_w = crop
    stride_h, stride_w = stride
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            y2 = min(r * stride_h + crop_h, height)
            x2 = min(c * stride_w + crop_w, width)
            windows.append((max(y2 - crop_h, 0), y2, max(x2 - crop_w, 0), x2))
    return windows


@dataclass
class _Forward:
    """One forward of one image: the whole padded image or one window of it."""

    image: int
    window: Optional[tuple[int, int, int, int]]
    bases: Optional[Tensor] = None


def _per_image(generator: Generators, count: int) -> list[Optional[torch.Generator]]:
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * count
    gens = list(generator)
    if len(gens) != count:
        raise ValueError(f"got {len(gens)} generators for {count} images")
    return gens


class SegmentationInference:
    """``predict`` for any module whose forward maps (B, 3, H, W) to 1/8-size logits."""

    def _logits_at(self, x: Tensor, size: Sequence[int], generator: Optional[torch.Generator],
                   bases: Optional[Tensor] = None) -> Tensor:
        """Forward, then bilinear resize of the 1/8 logits to ``size`` (MMSeg's encode_decode)."""
        logits = self(x, generator=generator, bases=bases)
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)

    def draw_image_bases(self, generator: Optional[torch.Generator], device: torch.device) -> Tensor:
        """The initial NMF bases one forward of a single image would draw, drawn now.

        The exact head (``decode_head.hamburger.ham``) and the fused head
        (``decode_head.draw_bases``) draw with the same code; this picks each one's dtype
        so that passing the result as ``bases=`` equals letting the forward draw.
        """
        head = self.decode_head
        dtype = next(self.parameters()).dtype
        if hasattr(head, "draw_bases"):  # fused: NMF in at least float32
            return head.draw_bases(1, device, generator, torch.promote_types(dtype, torch.float32))
        ham = head.hamburger
        dim = ham.ham_in.conv.out_channels // ham.ham.groups
        return ham.ham.draw_bases(1, dim, device, dtype, generator)

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
        generator: Generators = None,
        batch_size: int = 1,
    ) -> list[Prediction]:
        """Full-resolution class maps, computed the way MMSeg 1.x inference does.

        Keep-ratio resize (OpenCV's arithmetic), ImageNet normalisation, zero padding to a
        multiple of ``size_divisor``, ``whole`` or ``slide`` inference, bilinear resize of
        the logits to the image size, argmax: MMSeg's class map pixel for pixel.

        Args:
            images: RGB uint8, HWC numpy arrays or tensors (one image or a list).
            mode: ``"whole"`` (one forward) or ``"slide"`` (tiles of ``crop_size`` every
                ``stride``; Cityscapes: 1024 / 768).
            scale: Keep-ratio resize bounds (long, short), as MMSeg's test pipeline (ADE20K
                ``(2048, 512)``, Cityscapes ``(2048, 1024)``); None: no resize.
            size_divisor: Pad the normalised image to a multiple of this.
            crop_size: Slide-mode tile (height, width).
            stride: Slide-mode step (height, width).
            return_logits: Also return the (num_classes, H, W) logits.
            generator: One generator for all images (drawn image after image), one per
                image, or None (global RNG).
            batch_size: Forward up to this many same-size inputs together; each image's
                bases are drawn as at batch size 1, so the masks are the same.

        Returns:
            One ``Prediction`` per image: ``mask`` (H, W) int64 class ids and, with
            ``return_logits``, ``logits``.

        Raises:
            ValueError: An image is not (H, W, 3), or an unknown ``mode``.
        """
        check_sizes(scale=scale)
        if isinstance(images, (np.ndarray, Tensor)) and looks_like_single_image(images):
            images = [images]
        resized = [resize_for_test(image, scale) for image in images]
        return self.predict_resized(resized, mode=mode, size_divisor=size_divisor, crop_size=crop_size,
                                    stride=stride, return_logits=return_logits, generator=generator,
                                    batch_size=batch_size)

    @torch.no_grad()
    def predict_resized(
        self,
        images: Sequence[ResizedImage],
        mode: str = "whole",
        size_divisor: int = 32,
        crop_size: tuple[int, int] = (512, 512),
        stride: tuple[int, int] = (341, 341),
        return_logits: bool = False,
        generator: Generators = None,
        batch_size: int = 1,
    ) -> list[Prediction]:
        """:meth:`predict` for images already resized (by ``resize_for_test``, e.g. in a DataLoader)."""
        if mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if mode == "slide":
            check_sizes(crop_size=crop_size, stride=stride)
        gens = _per_image(generator, len(images))
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        padded = []
        for image in images:
            x = normalise(image.pixels.to(device)).unsqueeze(0).to(dtype)
            rh, rw = x.shape[2:]
            pad_h = (-rh) % size_divisor if size_divisor else 0
            pad_w = (-rw) % size_divisor if size_divisor else 0
            padded.append(F.pad(x, (0, pad_w, 0, pad_h), value=0.0))
        forwards = []
        for i, x in enumerate(padded):
            if mode == "whole":
                forwards.append(_Forward(i, None))
            else:
                windows = slide_windows(*x.shape[2:], tuple(crop_size), tuple(stride))
                if len(windows) > MAX_WINDOWS:
                    raise ValueError(f"slide inference would run {len(windows)} windows of {tuple(crop_size)} every "
                                     f"{tuple(stride)} on a {tuple(x.shape[2:])} image (at most {MAX_WINDOWS}); use a "
                                     "larger stride or crop")
                forwards += [_Forward(i, w) for w in windows]
        if batch_size > 1:  # draw now, in batch-size-1 order
            for fwd in forwards:
                fwd.bases = self.draw_image_bases(gens[fwd.image], device)
        totals = [x.new_zeros((1, self.num_classes, *x.shape[2:])) for x in padded]
        counts = [x.new_zeros((1, 1, *x.shape[2:])) for x in padded]
        for group in _groups(forwards, padded, mode, int(batch_size)):
            tiles = [_crop(padded[f.image], f.window) for f in group]
            x = torch.cat(tiles) if len(tiles) > 1 else tiles[0]
            bases = torch.cat([f.bases for f in group]) if group[0].bases is not None else None
            logits = self._logits_at(x, x.shape[2:], gens[group[0].image], bases)
            for k, fwd in enumerate(group):
                height, width = padded[fwd.image].shape[2:]
                y1, y2, x1, x2 = fwd.window or (0, height, 0, width)
                totals[fwd.image] += F.pad(logits[k:k + 1], (x1, width - x2, y1, height - y2))
                counts[fwd.image][:, :, y1:y2, x1:x2] += 1
        results = []
        for image, total, count in zip(images, totals, counts):
            rh, rw = image.pixels.shape[1:]
            logits = (total if mode == "whole" else total / count)[:, :, :rh, :rw]
            logits = F.interpolate(logits, size=image.original_size, mode="bilinear", align_corners=False)[0]
            mask = logits.argmax(dim=0)
            results.append(Prediction(mask=mask.cpu(), logits=logits.float().cpu() if return_logits else None))
        return results


def _crop(x: Tensor, window: Optional[tuple[int, int, int, int]]) -> Tensor:
    if window is None:
        return x
    y1, y2, x1, x2 = window
    return x[:, :, y1:y2, x1:x2]


def _groups(forwards: list[_Forward], padded: list[Tensor], mode: str, batch_size: int) -> list[list[_Forward]]:
    """Forwards that run together: same input size, at most ``batch_size``.

    Whole mode groups images of one padded size (in order of first appearance); slide
    mode batches the windows of one image (MMSeg's windows all have the crop size, or
    the image's size when it is smaller than the crop).
    """
    if batch_size == 1:
        return [[f] for f in forwards]
    buckets: dict[tuple, list[_Forward]] = {}
    for fwd in forwards:
        key = tuple(padded[fwd.image].shape[2:]) if mode == "whole" else (fwd.image,)
        buckets.setdefault(key, []).append(fwd)
    return [bucket[i:i + batch_size] for bucket in buckets.values() for i in range(0, len(bucket), batch_size)]
