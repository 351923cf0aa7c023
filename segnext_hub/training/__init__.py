"""Fine-tuning in plain PyTorch with MMSegmentation 1.2.2's training math.

MMSeg's recipe for SegNeXt, without mmcv: the optimiser's parameter groups and the
warm-up + poly schedule (:mod:`.optim`), training checkpoints that ``segnext_hub.load``
reads back and a run resumes from (:mod:`.checkpoint`), and the train-time data pipeline
(:mod:`.data`). The loss lives with the model (``SegNeXt.loss``).

May import ``models``, ``conversion``, ``hub``, ``loading`` and the root helpers; ``tasks``
and ``cli`` may import it.
"""

from .checkpoint import resume_checkpoint, save_checkpoint
from .data import InfiniteSampler, SegmentationFolder, TrainTransform, reduce_zero_label
from .optim import CUSTOM_KEYS, WarmupPolyLR, param_groups, poly_schedule

__all__ = ["CUSTOM_KEYS", "InfiniteSampler", "SegmentationFolder", "TrainTransform", "WarmupPolyLR",
           "param_groups", "poly_schedule", "reduce_zero_label", "resume_checkpoint", "save_checkpoint"]
