"""Prove that converted weights compute the same function as the source weights.

The source tensors are loaded, under their original names, into a model laid out like
their source (the official module tree for official/Jittor files); the converted tensors
into the target layout's model. Both run on the same fixed inputs with the same NMF
seed, and the four backbone outputs and the logits are compared. Models are built on
the meta device and take the checkpoint's tensors by assignment, so verifying an L
checkpoint costs two forward passes, not two model initialisations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

import torch
from torch import nn

from ..errors import BadInputError
from ..models import build_model
from .detect import Detection, first_keys
from .layouts import get_layout
from .official_tree import build_official

# Two sizes, one not a multiple of 32: padding and odd strides are exercised.
VERIFY_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (75, 103))
VERIFY_SEED = 0


@dataclass
class VerificationReport:
    verified: bool
    atol: float
    max_abs_diff: float
    per_output: dict[str, float] = field(default_factory=dict)
    inputs: list[list[int]] = field(default_factory=list)
    seed: int = VERIFY_SEED

    def to_dict(self) -> dict:
        return asdict(self)


def build_for_layout(layout: str, det: Detection) -> nn.Module:
    """An empty (meta-device) model: the reference module tree ``layout`` is verified in."""
    backbone_only = det.kind == "backbone"
    with torch.device("meta"):
        if get_layout(layout).reference == "official":
            return build_official(det.variant, num_classes=det.num_classes or 150, md_r=det.md_r,
                                  backbone_only=backbone_only, ham_channels=det.ham_channels)
        return build_model(det.variant, num_classes=det.num_classes or 150, md_r=det.md_r,
                            backbone_only=backbone_only, ham_channels=det.ham_channels)


def load_into(model: nn.Module, tensors: Mapping[str, torch.Tensor], layout: str) -> nn.Module:
    """Strict load by assignment, in float32 on the CPU.

    Buffers the layout's files lack (its ``fills``: Jittor keeps no BatchNorm counters)
    and only those may be missing; they get a zero, as the key map adds them.
    """
    expected = model.state_dict()
    state = {}
    for key, value in tensors.items():
        if key in expected and expected[key].is_floating_point():
            value = value.float()
        state[key] = value
    fills = get_layout(layout).fills
    if fills:
        for key in expected:
            if key.endswith(fills) and key not in state:
                state[key] = torch.tensor(0, dtype=torch.int64)
    check_keys(state, expected)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def check_keys(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """One-line errors naming the first offending keys."""
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing:
        raise BadInputError(f"{len(missing)} key(s) missing from the checkpoint: {first_keys(missing)}")
    if extra:
        raise BadInputError(f"{len(extra)} unexpected key(s) in the checkpoint: {first_keys(extra)}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise BadInputError(f"shape mismatch for {key}: checkpoint {tuple(value.shape)}, "
                                f"model {tuple(expected[key].shape)}")


@torch.no_grad()
def _outputs(model: nn.Module, x: torch.Tensor, kind: str) -> dict[str, torch.Tensor]:
    backbone = model if kind == "backbone" else model.backbone
    feats = backbone(x)
    out = {f"stage{i + 1}": f for i, f in enumerate(feats)}
    if kind == "segmentor":
        torch.manual_seed(VERIFY_SEED)
        out["logits"] = model.decode_head(feats)
    return out


def compare_models(source: nn.Module, target: nn.Module, kind: str, atol: float = 0.0,
                   sizes: tuple[tuple[int, int], ...] = VERIFY_SIZES) -> VerificationReport:
    """Run both models on the same inputs and seeds; report the largest differences."""
    gen = torch.Generator().manual_seed(VERIFY_SEED)
    per_output: dict[str, float] = {}
    finite = True
    with torch.random.fork_rng(devices=[]):
        for h, w in sizes:
            x = torch.randn((1, 3, h, w), generator=gen) * 1.5
            a, b = _outputs(source, x, kind), _outputs(target, x, kind)
            for name in a:
                finite = finite and bool(torch.isfinite(a[name]).all())
                diff = (a[name] - b[name]).abs().max().item()
                if diff != diff:  # NaN on one side only means a real difference
                    diff = float("inf")
                per_output[name] = max(per_output.get(name, 0.0), diff)
    worst = max(per_output.values())
    return VerificationReport(verified=finite and worst <= atol, atol=atol, max_abs_diff=worst,
                              per_output=per_output, inputs=[[1, 3, h, w] for h, w in sizes])
