"""Guess what a SegNeXt state dict is: layout, kind, variant, classes, dataset, NMF rank.

Every guess carries where it came from, so a report can show it and a flag can
override it. Detection reads names and shapes only; it never trusts file names.
The layout is recognised on the source's own key names (``conversion.layouts``); all
the rest is read after the layout's key map renamed the keys to MMSeg's, so a layout
with other module names needs no detection code of its own.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

import torch

from ..errors import BadInputError
from ..models.variants import VARIANTS, get_variant
from .layouts import SourceLayout, get_layout, recognise

DATASETS_BY_CLASSES = {150: "ade20k", 19: "cityscapes", 171: "coco-stuff164k", 16: "isaid"}
_BLOCK = re.compile(r"(?:^|\.)block([1-4])\.(\d+)\.")


@dataclass
class Detection:
    layout: str
    kind: str  # "segmentor" | "backbone"
    variant: str
    num_classes: Optional[int]
    dataset: Optional[str]
    md_r: Optional[int]
    sources: dict[str, str]  # field -> "detected from ..." / "given" / "default ..."
    ham_channels: Optional[int] = None  # the decode head's width; None for a backbone

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def first_keys(keys: list[str], n: int = 3) -> str:
    """The first few keys for a one-line error, with a count of the rest."""
    shown = ", ".join(keys[:n])
    return shown + (f" (and {len(keys) - n} more)" if len(keys) > n else "")


def choose_layout(keys: list[str], file_format: str, given: Optional[str] = None) -> tuple[SourceLayout, str]:
    """The source layout and where that came from: recognised, or ``given`` by the user.

    A given layout must hold the same key names as the recognised one (official and Jittor
    files do); forcing MMSeg names onto official ones is refused rather than mis-mapped.
    """
    found, how = recognise(keys, file_format)  # also rejects non-SegNeXt files
    if given in (None, "auto"):
        return found, f"detected: {how}"
    layout = get_layout(given)
    if layout.names != found.names:
        raise BadInputError(f"the checkpoint has {found.name} names ({how}), not {layout.name} names")
    return layout, "given"


def _backbone_prefix(keys: list[str]) -> str:
    return "backbone." if any(k.startswith("backbone.") for k in keys) else ""


def detect_variant(state: Mapping[str, torch.Tensor]) -> str:
    """T/S/B/L from MMSeg-named keys: the four stage widths and the block counts."""
    keys = list(state)
    prefix = _backbone_prefix(keys)
    dims = []
    for i in range(1, 5):
        weight = state.get(f"{prefix}norm{i}.weight")
        if weight is None or weight.ndim != 1:
            raise BadInputError(f"not a SegNeXt checkpoint: missing '{prefix}norm{i}.weight' "
                                f"(first keys: {first_keys(keys)})")
        dims.append(int(weight.shape[0]))
    depths = [0, 0, 0, 0]
    for key in keys:
        match = _BLOCK.search(key)
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            depths[stage - 1] = max(depths[stage - 1], index + 1)
    for name, spec in VARIANTS.items():
        if tuple(dims) == spec.embed_dims and tuple(depths) == spec.depths:
            return name
    raise BadInputError(f"embed dims {tuple(dims)} and depths {tuple(depths)} match no SegNeXt "
                        "variant (T/S/B/L)")


def detect_head_width(state: Mapping[str, torch.Tensor], variant: str) -> tuple[int, str]:
    """The decode head's width from MMSeg-named head weights, and where it was read.

    Every release builds the head as wide as its Hamburger (``channels == ham_channels``);
    PaddleSeg builds every size 256 wide where MMSeg and the official repo use 512 (B) and
    1024 (L), so the width is read from the file rather than assumed from the variant.
    """
    squeeze, seg = state.get("decode_head.squeeze.conv.weight"), state.get("decode_head.conv_seg.weight")
    default = VARIANTS[variant].ham_channels
    if squeeze is None or squeeze.ndim != 4 or seg is None or seg.ndim != 4:
        # The key check that follows names what is missing or misshapen.
        return default, "default: the variant's (no usable head weights to read it from)"
    width, classifier_in = int(squeeze.shape[0]), int(seg.shape[1])
    if classifier_in != width:
        raise BadInputError(f"decode head of width {width} feeds a classifier of {classifier_in} channels; "
                            "only heads as wide as their Hamburger (every published release) are supported")
    how = "detected from decode_head.squeeze.conv.weight"
    if width != default:
        how += (f" (SegNeXt-{variant.upper()} is {default} wide in MMSeg and the official repo; "
                "their stock configs will not load these weights as they are)")
    return width, how


def detect(
    state: Mapping[str, torch.Tensor],
    *,
    layout: SourceLayout,
    layout_source: str,
    variant: Optional[str] = None,
    num_classes: Optional[int] = None,
    md_r: Optional[int] = None,
    md_r_source: Optional[str] = None,
) -> Detection:
    """Detect everything not given from ``state``, already renamed to MMSeg's keys.

    ``md_r`` is what the artifact's record (``conversion.record``, merged by the
    converter) or the user says, with ``md_r_source``; without one, the layout's default.
    """
    keys = list(state)
    sources = {"layout": layout_source}
    kind = "segmentor" if any(k.startswith("decode_head.") for k in keys) else "backbone"
    sources["kind"] = "detected: decode_head.* keys" if kind == "segmentor" else "detected: no decode_head.* keys"

    if variant is None:
        variant = detect_variant(state)
        sources["variant"] = "detected from embed dims and block counts"
    else:
        variant = get_variant(variant).name
        sources["variant"] = "given"

    dataset = ham_channels = None
    if kind == "segmentor":
        ham_channels, sources["ham_channels"] = detect_head_width(state, variant)
        seg = state.get("decode_head.conv_seg.weight")
        if num_classes is None:
            if seg is None:
                raise BadInputError("segmentor checkpoint has no 'decode_head.conv_seg.weight'")
            num_classes = int(seg.shape[0])
            sources["num_classes"] = "detected from decode_head.conv_seg.weight"
        else:
            sources["num_classes"] = "given"
        dataset = DATASETS_BY_CLASSES.get(num_classes)
        sources["dataset"] = f"from {num_classes} classes" if dataset else f"unknown for {num_classes} classes"
        if md_r is not None:
            sources["md_r"] = md_r_source or "given"
        else:
            md_r = layout.md_r_for(variant)
            sources["md_r"] = f"default: {layout.default_md_r_note}"
    elif num_classes is not None:
        raise BadInputError("--num-classes given, but the checkpoint is a backbone (no decode head)")
    else:
        md_r = None  # no decode head, no NMF rank, whatever a record says
    return Detection(layout.name, kind, variant, num_classes, dataset, md_r, sources, ham_channels)
