"""SegNeXt = MSCAN backbone + LightHamHead, with MMSeg-style whole/slide inference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ham_head import LightHamHead
from .image_resize import resize_like_opencv
from .mscan import MSCAN

# ImageNet statistics in RGB order, on the 0-255 scale (MMSeg's data preprocessor).
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)

ImageLike = Union[np.ndarray, Tensor]


@dataclass
class Prediction:
    """One image's result: a class-index map at the image's size and optional logits."""

    mask: Tensor  # (H, W) int64
    logits: Optional[Tensor] = None  # (num_classes, H, W) float32


class SegNeXt(nn.Module):
    """``model(x)`` gives logits at 1/8 of the input size, like MMSeg's ``mode='tensor'``."""

    def __init__(self, backbone: MSCAN, decode_head: LightHamHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head

    @property
    def num_classes(self) -> int:
        return self.decode_head.num_classes

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None,
                bases: Optional[Tensor] = None) -> Tensor:
        return self.decode_head(self.backbone(x), generator=generator, bases=bases)

    def set_generator(self, generator: Optional[torch.Generator]) -> None:
        """Make every later forward draw NMF bases from ``generator`` (None: global RNG)."""
        self.decode_head.hamburger.ham.generator = generator

    def fuse(self, **options: object) -> nn.Module:
        """A new inference-only copy with folded norms and fused kernels; see :func:`.fused.fuse`."""
        from .fused import fuse  # fused imports this module

        return fuse(self, **options)

    # ------------------------------------------------------------------ inference
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
        if isinstance(images, (np.ndarray, Tensor)) and _looks_like_single_image(images):
            images = [images]
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        results = []
        for image in images:
            rgb = _as_rgb_tensor(image)
            height, width = rgb.shape[1:]
            resized = _keep_ratio_resize(rgb, scale) if scale is not None else rgb
            x = _normalise(resized.to(device)).unsqueeze(0).to(dtype)
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


def _looks_like_single_image(images: ImageLike) -> bool:
    return images.ndim == 3


def _as_rgb_tensor(image: ImageLike) -> Tensor:
    """HWC uint8 RGB (numpy or tensor) -> CHW float32 tensor on the 0-255 scale."""
    t = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if not isinstance(t, Tensor) or t.ndim != 3 or t.shape[2] != 3:
        shape = tuple(getattr(image, "shape", ()))
        raise ValueError(f"predict expects RGB images of shape (H, W, 3), got shape {shape}")
    return t.permute(2, 0, 1).float()


def _keep_ratio_resize(chw: Tensor, scale: tuple[int, int]) -> Tensor:
    """MMCV's keep-ratio rescale: fit within (long, short) edge bounds, bilinear.

    MMSeg resizes the uint8 image with OpenCV; :func:`resize_like_opencv` repeats its
    fixed-point arithmetic so that the resized pixels are the same.
    """
    height, width = chw.shape[1:]
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    new_w, new_h = int(width * factor + 0.5), int(height * factor + 0.5)
    if (new_h, new_w) == (height, width):
        return chw
    return resize_like_opencv(chw, new_h, new_w)


def _normalise(chw: Tensor) -> Tensor:
    mean = torch.tensor(MEAN_RGB, device=chw.device).view(3, 1, 1)
    std = torch.tensor(STD_RGB, device=chw.device).view(3, 1, 1)
    return (chw - mean) / std
