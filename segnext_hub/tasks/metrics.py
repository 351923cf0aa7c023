"""MMSeg 1.x's ``IoUMetric``, streamed: per-class areas, then aAcc / mIoU / mAcc.

Step by step as MMSeg computes it, so that numbers can be set beside the published ones:
per image, pixels whose label is the ignore index (255) are dropped, and histograms of
the intersection, the prediction and the label are taken over ``0..num_classes-1``
(label values outside that range fall out of the label histogram but their predicted
pixels still count); the per-image float32 histograms are summed in float32;
``IoU = intersect / union`` and ``Acc = intersect / label`` per class (0/0 gives NaN: a
class in neither prediction nor ground truth has no IoU, a class only predicted has IoU
0 and no Acc); the summary values are NaN-ignoring means times 100, rounded to two
decimals. The exact integer areas are kept too.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import torch

from ..errors import BadInputError
from ..models.loss import IGNORE_INDEX


class IoUAccumulator:
    """Streams (prediction, label) pairs into MMSeg ``IoUMetric`` areas and metrics."""

    KINDS = ("intersect", "union", "pred_label", "label")

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.exact = {k: np.zeros(num_classes, dtype=np.int64) for k in self.KINDS}
        # MMSeg sums per-image float32 histograms in float32; kept apart so that rounding
        # at ADE20K scale (counts past 2**24) is reproduced too.
        self._f32: dict[str, Optional[torch.Tensor]] = {k: None for k in self.KINDS}
        self.count = 0

    def _hist(self, values: np.ndarray) -> np.ndarray:
        values = values[(values >= 0) & (values < self.num_classes)]
        return np.bincount(values, minlength=self.num_classes).astype(np.int64)

    def areas_of(self, pred: Any, label: Any) -> np.ndarray:
        """One image's (4, num_classes) int64 areas, rows in ``KINDS`` order."""
        pred = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred).astype(np.int64)
        label = np.asarray(label).astype(np.int64)
        if pred.shape != label.shape:
            raise BadInputError(f"prediction shape {pred.shape} != label shape {label.shape}")
        keep = label != self.ignore_index
        pred, label = pred[keep], label[keep]
        inter = self._hist(pred[pred == label])
        area_pred, area_label = self._hist(pred), self._hist(label)
        return np.stack([inter, area_pred + area_label - inter, area_pred, area_label])

    def add(self, pred: Any, label: Any) -> None:
        self.add_areas(self.areas_of(pred, label))

    def add_areas(self, areas: np.ndarray) -> None:
        """Accumulate one image's areas (from :meth:`areas_of`, possibly computed on another rank).

        The float32 running sums depend on the order images are added in; distributed
        evaluation gathers every image's areas and adds them in dataset order, so that
        the metrics equal a single process's bit for bit.
        """
        for kind, area in zip(self.KINDS, np.asarray(areas, dtype=np.int64)):
            self.exact[kind] += area
            f32 = torch.from_numpy(area.astype(np.float32))
            prev = self._f32[kind]
            self._f32[kind] = f32 if prev is None else prev + f32
        self.count += 1

    def metrics(self) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """({'aAcc','mIoU','mAcc'} in percent rounded to 2 places, per-class IoU %, Acc %)."""
        if self.count == 0:
            raise BadInputError("no images were evaluated")
        f = self._f32
        # torch float32 division, as MMSeg's; 0/0 gives NaN without a warning.
        all_acc = (f["intersect"].sum() / f["label"].sum()).numpy()
        iou = (f["intersect"] / f["union"]).numpy()
        acc = (f["intersect"] / f["label"]).numpy()
        summary = {"aAcc": _summary(all_acc), "mIoU": _summary(iou), "mAcc": _summary(acc)}
        return summary, np.round(iou * 100, 2), np.round(acc * 100, 2)


def _summary(values: np.ndarray) -> float:
    """MMSeg's ``np.round(np.nanmean(v) * 100, 2)``, as a plain float (NaN when all NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of an all-NaN slice
        mean = np.nanmean(values)
    return two_places(np.round(mean * 100, 2))


def two_places(value: Any) -> float:
    """float32 42.59 -> 42.59 rather than 42.59000015258789."""
    return round(float(value), 2)
