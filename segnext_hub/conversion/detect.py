"""Guess what a SegNeXt state dict is: layout, kind, variant, classes, dataset, NMF rank.

Every guess carries where it came from, so a report can show it and a flag can
override it. Detection reads names and shapes only; it never trusts file names.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

import torch

from ..errors import BadInputError
from ..models.variants import VARIANTS, get_variant

LAYOUTS = ("official", "mmseg", "jittor")
DATASETS_BY_CLASSES = {150: "ade20k", 19: "cityscapes", 171: "coco-stuff164k", 16: "isaid"}
_OFFICIAL_DWCONV = re.compile(r"(^|\.)mlp\.dwconv\.dwconv\.(weight|bias)$")
_MMSEG_DWCONV = re.compile(r"(^|\.)mlp\.dwconv\.(weight|bias)$")
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def first_keys(keys: list[str], n: int = 3) -> str:
    """The first few keys for a one-line error, with a count of the rest."""
    shown = ", ".join(keys[:n])
    return shown + (f" (and {len(keys) - n} more)" if len(keys) > n else "")


def detect_layout(keys: list[str], file_format: str) -> tuple[str, str]:
    official = [k for k in keys if _OFFICIAL_DWCONV.search(k)]
    mmseg = [k for k in keys if _MMSEG_DWCONV.search(k)]
    if official and mmseg:
        raise BadInputError(f"checkpoint mixes official names ({official[0]}) and MMSeg names ({mmseg[0]})")
    if mmseg:
        return "mmseg", "MMSeg-style mlp.dwconv names"
    if official:
        if file_format == "jittor-pkl":
            return "jittor", "Jittor .pkl container with official names"
        has_bn_counter = any(k.endswith("num_batches_tracked") for k in keys)
        if not has_bn_counter:
            return "jittor", "official names without BatchNorm num_batches_tracked (Jittor)"
        return "official", "official mlp.dwconv.dwconv names"
    raise BadInputError("not a SegNeXt checkpoint: no MSCAN keys such as "
                        f"'block1.0.mlp.dwconv...' found (first keys: {first_keys(keys)})")


def _backbone_prefix(keys: list[str]) -> str:
    return "backbone." if any(k.startswith("backbone.") for k in keys) else ""


def detect_variant(state: Mapping[str, torch.Tensor]) -> str:
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


def detect(
    state: Mapping[str, torch.Tensor],
    *,
    file_format: str,
    layout: Optional[str] = None,
    variant: Optional[str] = None,
    num_classes: Optional[int] = None,
    md_r: Optional[int] = None,
    md_r_source: Optional[str] = None,
) -> Detection:
    """Detect everything not given; ``state`` has containers and DDP prefixes removed.

    ``md_r`` is what the artifact's record (``conversion.record``, resolved by the
    converter) or the user says, with ``md_r_source``; without one, the layout's default.
    """
    keys = list(state)
    sources: dict[str, str] = {}
    if layout not in (None, "auto") and layout not in LAYOUTS:
        raise BadInputError(f"unknown source layout {layout!r}; expected auto, {', '.join(LAYOUTS)}")
    found, how = detect_layout(keys, file_format)  # also rejects non-SegNeXt files
    if layout in (None, "auto"):
        layout = found
        sources["layout"] = f"detected: {how}"
    else:
        if (found == "mmseg") != (layout == "mmseg"):
            raise BadInputError(f"the checkpoint has {found} names ({how}), not {layout} names")
        sources["layout"] = "given"

    kind = "segmentor" if any(k.startswith("decode_head.") for k in keys) else "backbone"
    sources["kind"] = "detected: decode_head.* keys" if kind == "segmentor" else "detected: no decode_head.* keys"

    if variant is None:
        variant = detect_variant(state)
        sources["variant"] = "detected from embed dims and block counts"
    else:
        variant = get_variant(variant).name
        sources["variant"] = "given"

    dataset = None
    if kind == "segmentor":
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
        elif layout == "mmseg":
            md_r = VARIANTS[variant].md_r_mmseg
            sources["md_r"] = "default: MMSeg 1.x configs as resolved (16 for every size)"
        else:
            md_r = VARIANTS[variant].md_r
            sources["md_r"] = "default: official configs (T/S 16, B/L 64)"
    elif num_classes is not None:
        raise BadInputError("--num-classes given, but the checkpoint is a backbone (no decode head)")
    else:
        md_r = None  # no decode head, no NMF rank, whatever a record says
    return Detection(layout, kind, variant, num_classes, dataset, md_r, sources)
