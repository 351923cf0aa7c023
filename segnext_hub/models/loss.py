"""The decode loss of MMSeg 1.2.2's SegNeXt configs, as one function.

``CrossEntropyLoss(use_sigmoid=False, loss_weight=1.0)`` on logits resized bilinearly
(``align_corners=False``) to the label size. MMSeg's default ``avg_non_ignore=False``
averages over *every* pixel, ignored ones included (they add 0 to the sum): the loss is
``sum / (numel + eps)``, smaller than ``F.cross_entropy``'s mean over the labelled
pixels whenever labels hold 255s. ``avg_non_ignore=True`` divides by the labelled count,
as MMSeg does with that option.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255
_EPS = torch.finfo(torch.float32).eps  # what MMSeg adds to the divisor


def decode_loss(logits: Tensor, labels: Tensor, *, ignore_index: int = IGNORE_INDEX,
                avg_non_ignore: bool = False) -> Tensor:
    """Cross-entropy of (B, K, h, w) ``logits`` against (B, H, W) integer ``labels``."""
    if labels.ndim == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 3 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be (B, H, W) with B={logits.shape[0]}, got shape {tuple(labels.shape)}")
    if labels.is_floating_point():
        raise ValueError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    labels = labels.long()
    stray = (labels != ignore_index) & ((labels < 0) | (labels >= logits.shape[1]))
    if bool(stray.any()):
        value = int(labels[stray][0])
        raise ValueError(f"label value {value} is not a class of this {logits.shape[1]}-class model "
                         f"nor the ignore index {ignore_index}")
    logits = F.interpolate(logits, size=labels.shape[1:], mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(logits, labels, reduction="none", ignore_index=ignore_index)
    count = labels.numel() - (labels == ignore_index).sum().item() if avg_non_ignore else labels.numel()
    return per_pixel.sum() / (count + _EPS)
