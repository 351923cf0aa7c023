"""Multi-scale + flip test-time augmentation ("ms+flip"), as MMSegmentation 1.x runs it.

MMSeg's ``--tta`` replaces the test pipeline with ``TestTimeAug``: every ratio of
``(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)`` crossed with {no flip, horizontal flip}, ratio
outermost. Each view is one ordinary inference (resize with OpenCV bilinear keeping the
ratio, flip, normalise, pad to 32, whole/slide forward); its logits are cropped to the
view, flipped back, and resized bilinearly to the original image. ``SegTTAModel`` then
averages the per-view *softmax probabilities* and takes the argmax.

In MMSeg 1.x the ratios multiply the size of the image as loaded (``Resize(scale_factor=r,
keep_ratio=True)`` with no test-scale resize before it): ``reference="image"``, the
default. MMSeg 0.x and the official SegNeXt repository multiplied the test scale
instead (``MultiScaleFlipAug(img_scale=(2048, 512), img_ratios=...)``):
``reference="test_scale"``. For Cityscapes (2048x1024 images, test scale (2048, 1024))
both give the same views.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import BadInputError
from ..models.preprocessing import resize_like_opencv

TTA_RATIOS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
REFERENCES = ("image", "test_scale")


def _keep_ratio_size(height: int, width: int, bound: tuple[int, int]) -> tuple[int, int]:
    """mmcv's ``rescale_size``: largest keep-ratio size within (long, short) edge bounds."""
    factor = min(max(bound) / max(height, width), min(bound) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def view_size(height: int, width: int, ratio: float, reference: str = "image",
              test_scale: Optional[tuple[int, int]] = None) -> tuple[int, int]:
    """(H, W) of the view for ``ratio``, rounded exactly as mmcv rounds it."""
    if reference == "image":
        # Resize(scale_factor=r, keep_ratio=True): the scaled size becomes the bound.
        bound = (int(width * ratio + 0.5), int(height * ratio + 0.5))
    elif reference == "test_scale":
        if test_scale is None:
            raise BadInputError("reference='test_scale' needs a test scale such as (2048, 512)")
        bound = (int(test_scale[0] * ratio), int(test_scale[1] * ratio))
    else:
        raise BadInputError(f"TTA reference must be one of {REFERENCES}, got {reference!r}")
    return _keep_ratio_size(height, width, bound)


def _as_chw(image: Union[np.ndarray, Tensor]) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if t.ndim != 3 or t.shape[2] != 3:
        raise BadInputError(f"expected an RGB (H, W, 3) image, got shape {tuple(t.shape)}")
    return t.permute(2, 0, 1)


@torch.no_grad()
def predict_tta(
    model: Any,
    image: Union[np.ndarray, Tensor],
    *,
    mode: str = "whole",
    test_scale: Optional[tuple[int, int]] = (2048, 512),
    crop_size: tuple[int, int] = (512, 512),
    stride: tuple[int, int] = (341, 341),
    ratios: Sequence[float] = TTA_RATIOS,
    flip: bool = True,
    reference: str = "image",
    size_divisor: int = 32,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Averaged class probabilities ``(num_classes, H, W)`` (float32, CPU) for one RGB image.

    ``model`` needs only SegNeXt's ``predict``: each view goes through
    ``model.predict(view, scale=None, return_logits=True)``, which pads, runs whole/slide
    inference and returns logits at the view's size -- the same steps MMSeg applies to a
    view. Views draw NMF bases one after another (ratio outer, flip inner, as MMSeg's
    ``TestTimeAug`` orders them), so one ``torch.manual_seed`` before the call fixes all
    of them.
    """
    if not ratios:
        raise BadInputError("TTA needs at least one ratio")
    rgb = _as_chw(image)
    height, width = rgb.shape[1:]
    total: Optional[Tensor] = None
    views = 0
    for ratio in ratios:
        size = view_size(height, width, float(ratio), reference, test_scale)
        if min(size) < 1:
            raise BadInputError(f"TTA ratio {ratio} shrinks a {height}x{width} image to nothing")
        # Same size: OpenCV copies, and so do we (no resampling).
        scaled = rgb.float() if size == (height, width) else resize_like_opencv(rgb, *size)
        for flipped in ((False, True) if flip else (False,)):
            view = scaled.flip(-1) if flipped else scaled
            logits = model.predict(view.permute(1, 2, 0), mode=mode, scale=None, size_divisor=size_divisor,
                                   crop_size=crop_size, stride=stride, return_logits=True,
                                   generator=generator)[0].logits
            if flipped:
                logits = logits.flip(-1)
            logits = F.interpolate(logits[None].float(), size=(height, width), mode="bilinear",
                                   align_corners=False)[0]
            probs = logits.softmax(dim=0)
            total = probs if total is None else total + probs
            views += 1
    assert total is not None
    return total / views
