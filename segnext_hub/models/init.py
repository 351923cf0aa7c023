"""MMSegmentation 1.2.2's initialisation of a new SegNeXt, for training from scratch or
from an ImageNet backbone.

The same distributions as MMSeg (not the same random stream: module construction order
differs), so a fine-tuning run starts where MMSeg's would:

- MSCAN without a pretrained checkpoint (``MSCAN.init_weights``): Linear trunc-normal
  std 0.02, LayerNorm 1/0, every Conv2d normal with std sqrt(2 / fan_out), fan_out =
  k_h * k_w * out_channels / groups, bias 0. BatchNorm keeps PyTorch's 1/0 and the layer
  scales MMSeg's 1e-2 (set at construction).
- Decode head: each ``ConvModule`` conv Kaiming-normal (fan_out, ReLU) with bias 0 and its
  GroupNorm 1/0 (mmcv's ``ConvModule.init_weights``); ``conv_seg`` normal std 0.01,
  bias 0 (``BaseDecodeHead``'s ``init_cfg``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .ham_head import ConvGNAct, LightHamHead
from .mscan import MSCAN

#: BaseDecodeHead's classifier initialisation.
CLASSIFIER_STD = 0.01


def _on_meta(module: nn.Module) -> bool:
    """A skeleton built on the meta device (``load``'s) has no values to fill, and
    ``normal_`` on meta tensors imports torch._dynamo (seconds) for nothing."""
    return any(p.is_meta for p in module.parameters())


@torch.no_grad()
def init_backbone_(backbone: MSCAN) -> MSCAN:
    """MSCAN's own initialisation, as when MMSeg builds it with no ``init_cfg``."""
    if _on_meta(backbone):
        return backbone
    for module in backbone.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)  # mmengine truncates at +-2 (absolute)
            _zero_bias(module)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            _zero_bias(module)
    return backbone


@torch.no_grad()
def init_head_(head: LightHamHead) -> LightHamHead:
    """The decode head's initialisation: ConvModule convs and norms, then the classifier."""
    if _on_meta(head):
        return head
    for module in head.modules():
        if isinstance(module, ConvGNAct):
            nn.init.kaiming_normal_(module.conv.weight, a=0, mode="fan_out", nonlinearity="relu")
            _zero_bias(module.conv)
            if module.gn is not None:
                nn.init.ones_(module.gn.weight)
                nn.init.zeros_(module.gn.bias)
    init_classifier_(head.conv_seg)
    return head


@torch.no_grad()
def init_classifier_(conv_seg: nn.Conv2d) -> nn.Conv2d:
    if _on_meta(conv_seg):
        return conv_seg
    nn.init.normal_(conv_seg.weight, 0.0, CLASSIFIER_STD)
    _zero_bias(conv_seg)
    return conv_seg


def _zero_bias(module: nn.Module) -> None:
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
