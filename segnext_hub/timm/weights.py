"""Weights for the timm MSCAN: segnext-hub's resolver, strict, plus the ImageNet classifier.

The backbone comes through :func:`segnext_hub.loading.create_model` with
``pretrained_backbone=``: a registry name is pulled into segnext-hub's cache (download,
hash check, verified conversion), a local file in any layout ``segnext-convert`` reads is
converted on the fly, and the load is strict (same variant, every backbone tensor used, none
missing). A segmentor artifact gives its backbone; its decode head is not part of an encoder.

The classifier (``head.weight`` / ``head.bias``, a linear layer on the average of the last
stage) is not part of segnext-hub's converted files, whose key maps drop ``head.*``; it is
read from the published file itself where that file has one (the official ImageNet MSCAN
files keep it, MMSeg's backbones do not). Without one, or with a different class count, the
model keeps a new head and says so in a warning.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..conversion.keymap import find_state_dict, load_key_map
from ..conversion.reading import read_checkpoint
from ..errors import BadInputError
from ..hub.names import HF_SCHEME, resolve
from ..hub.pull import pull
from ..hub.registry import get_artifact
from ..loading import create_model

logger = logging.getLogger(__name__)

# ``pretrained_cfg["file"]`` of a registered tag: "segnext-hub:<registry name>", so that a
# registry name can never be taken for a local file of that name (or the other way round).
REGISTRY_SCHEME = "segnext-hub:"
HEAD_KEYS = ("head.weight", "head.bias")


def weights_source(location: Union[str, Path]) -> Union[str, Path]:
    """What a ``pretrained_cfg`` ``file`` names, in segnext-hub's terms.

    Args:
        location: ``segnext-hub:<registry name>`` (the registered tags), ``hf://org/repo``,
            or a local path (file or cache folder).

    Returns:
        The registry name or ``hf://`` text as a ``str``; a local path as a ``Path`` (a path
        never resolves to a registry name, whatever it is called).
    """
    text = str(location)
    if text.startswith(REGISTRY_SCHEME):
        return text[len(REGISTRY_SCHEME):]
    if text.startswith(HF_SCHEME):
        return text
    return Path(text)


def load_weights(model: nn.Module, location: Union[str, Path], *, variant: str) -> dict[str, object]:
    """Fill ``model`` (a :class:`~segnext_hub.timm.models.MSCANTimm`) from ``location``, strictly.

    Args:
        model: the timm MSCAN, before any pruning; its ``num_classes`` decides whether a
            classifier is wanted (0: none).
        location: see :func:`weights_source`.
        variant: the model's size (t, s, b, l); weights of another size are refused.

    Returns:
        ``{"source": ..., "head": "loaded" | "new", "why": ...}``, what happened to the head.

    Raises:
        BadInputError: unreadable or unknown source, another variant, a missing or unused
            backbone tensor (one line naming it).
    """
    source = weights_source(location)
    backbone = create_model(variant, backbone_only=True, pretrained_backbone=source)
    state = dict(backbone.state_dict())
    result: dict[str, object] = {"source": str(location), "head": "none", "why": None}
    if getattr(model, "num_classes", 0) > 0:
        head, why = classifier_state(source, model.num_classes, model.num_features)
        if head is None:
            warnings.warn(f"{location}: {why}; the {model.num_classes}-class classifier head is newly "
                          "initialised", stacklevel=3)
            head = {f"head.{k}": v for k, v in model.head.state_dict().items()}
            result.update(head="new", why=why)
        else:
            result["head"] = "loaded"
        state.update(head)
    missing, unexpected = _difference(model.state_dict(), state)
    if missing or unexpected:  # pruned stages, or a model that is not an MSCANTimm of this size
        raise BadInputError(f"{location}: weights do not fit the model (missing {missing[:3]}, unused {unexpected[:3]})")
    model.load_state_dict(state, strict=True)
    logger.info("MSCAN-%s weights from %s (classifier: %s)", variant.upper(), location, result["head"])
    return result


def _difference(target: dict, state: dict) -> tuple[list[str], list[str]]:
    return sorted(set(target) - set(state)), sorted(set(state) - set(target))


def classifier_state(source: Union[str, Path], num_classes: int,
                     width: int) -> tuple[Optional[dict[str, torch.Tensor]], Optional[str]]:
    """The source's ImageNet classifier, if it has one of ``num_classes`` x ``width``.

    Args:
        source: a registry name, ``hf://`` text, or a local path (see :func:`weights_source`).
        num_classes: classes of the model's head.
        width: channels of the last stage (the head's input).

    Returns:
        ``({"head.weight", "head.bias"}, None)``, or ``(None, why there is none)``.
    """
    raw = _raw_file(source)
    if raw is None:
        return None, "segnext-hub's converted files carry no ImageNet classifier"
    if isinstance(raw, str):
        return None, raw
    state, _ = find_state_dict(read_checkpoint(raw).obj, load_key_map("mmseg").unwrap)
    found = {}
    for key in HEAD_KEYS:
        for name in (key, f"module.{key}"):
            if name in state:
                found[key] = state[name]
    if len(found) < 2:
        return None, "the checkpoint has no ImageNet classifier (head.*)"
    weight, bias = (torch.as_tensor(found[key]) for key in HEAD_KEYS)  # Jittor files hold numpy arrays
    if weight.ndim != 2 or weight.shape[1] != width or bias.shape != (weight.shape[0],):
        return None, f"its head.weight is {tuple(weight.shape)}, not (classes, {width})"
    if weight.shape[0] != num_classes:
        return None, f"its classifier has {weight.shape[0]} classes"
    return {"head.weight": weight.float().clone(), "head.bias": bias.float().clone()}, None


def _raw_file(source: Union[str, Path]) -> Union[Path, str, None]:
    """The published file behind ``source`` (a path, a reason text, or None for a converted file)."""
    if isinstance(source, Path):
        if source.is_dir() or source.suffix == ".safetensors":
            return None
        return source
    if source.startswith(HF_SCHEME):
        return None
    name = resolve(source, note=False).name
    artifact = get_artifact(name)
    if not artifact.is_backbone:
        return f"{name} is a segmentor, trained without an ImageNet classifier"
    result = pull(name)
    return result.entry.raw_path(result.manifest)
