"""``segnext_mscan_t|s|b|l`` for timm: segnext-hub's MSCAN with timm's model interface.

The network is :class:`segnext_hub.models.MSCAN` itself (the same modules, key names and
stage code, so features equal segnext-hub's bit for bit), plus what timm expects of a
backbone: ``feature_info`` (strides 4, 8, 16, 32), ``forward_intermediates`` /
``prune_intermediate_layers`` (``features_only=True`` uses timm's getter wrapper, so
``out_indices`` works), and a classifier: the average over the last stage's positions, then
a linear layer (``head``), the head of the ImageNet-trained MSCAN files.

Pretrained tags name segnext-hub registry artifacts (``.in1k`` MMSeg-hosted ImageNet
weights, ``.in1k_official``, ``.in1k_jittor``, and the backbones of the segmentors:
``.ade20k``, ``.ade20k_official``, ...). They load through segnext-hub's own pull and
conversion (see :mod:`.weights`), never through timm's downloader; a ``file`` in
``pretrained_cfg_overlay`` may be any checkpoint ``segnext-convert`` reads.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from ..hub.registry import list_artifacts
from ..models.init import init_backbone_
from ..models.mscan import MSCAN
from ..models.variants import get_variant
from .weights import REGISTRY_SCHEME, load_weights

__all__ = ["MSCANTimm", "pretrained_tags"]

DEFAULT_TAG = "in1k"


class MSCANTimm(MSCAN):
    """MSCAN with a pooled classifier and timm's feature interface.

    Args:
        size: t, s, b or l.
        num_classes: classifier outputs; 0 leaves no classifier (``forward`` returns the pooled features).
        global_pool: ``"avg"`` (mean over positions, as the ImageNet MSCAN) or ``""`` (no pooling).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth; ``None`` is the variant's (as MMSeg trains: 0.1, L 0.3).
        in_chans: must be 3 (MSCAN's stem is RGB).
    """

    def __init__(self, size: str = "t", num_classes: int = 1000, global_pool: str = "avg",
                 drop_rate: float = 0.0, drop_path_rate: Optional[float] = None, in_chans: int = 3,
                 **unused: Any) -> None:
        spec = get_variant(size)
        if unused:
            raise TypeError(f"segnext_mscan_{spec.name} takes no argument(s) {', '.join(sorted(unused))}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        rate = spec.drop_path_rate if drop_path_rate is None else drop_path_rate
        super().__init__(spec.embed_dims, spec.depths, spec.mlp_ratios, drop_path_rate=rate, in_channels=in_chans)
        init_backbone_(self)
        self.variant = spec.name
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = spec.embed_dims[-1]
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.head_drop = nn.Dropout(drop_rate)
        self.head: nn.Module = self._new_head(num_classes)
        self.feature_info = [dict(num_chs=c, reduction=4 * 2 ** i, module=f"norm{i + 1}")
                             for i, c in enumerate(spec.embed_dims)]

    def _new_head(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        head = nn.Linear(self.num_features, num_classes)
        nn.init.trunc_normal_(head.weight, std=0.02)  # as MSCAN.init_weights treats a Linear
        nn.init.zeros_(head.bias)
        return head

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new classifier of ``num_classes`` outputs (0: none); timm's interface."""
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = self._new_head(num_classes)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"MSCAN expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")

    def forward_intermediates(self, x: Tensor, indices: Optional[Union[int, list[int]]] = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False) -> Union[list[Tensor], tuple[Tensor, list[Tensor]]]:
        """Stage outputs (each after its own LayerNorm, as MSCAN returns them).

        ``indices``: stage indices 0-3 (negative from the end), or an int n for the last n;
        ``norm`` is accepted for timm's interface: every stage output is already normalised.
        """
        if output_fmt != "NCHW":
            raise ValueError("MSCAN's features are NCHW")
        self._check_input(x)
        take, last = feature_take_indices(self.num_stages, indices)
        intermediates = []
        stages = last + 1 if (stop_early or intermediates_only) else self.num_stages
        for i in range(stages):
            x = self.forward_stage(i + 1, x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, list[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last one ``indices`` asks for (and the classifier)."""
        take, last = feature_take_indices(self.num_stages, indices)
        for stage in range(last + 2, self.num_stages + 1):
            for prefix in ("patch_embed", "block", "norm"):
                delattr(self, f"{prefix}{stage}")
        self.num_stages = last + 1
        self.feature_info = self.feature_info[: last + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's output, (B, C4, H/32, W/32)."""
        self._check_input(x)
        for i in range(1, self.num_stages + 1):
            x = self.forward_stage(i, x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]  (MSCAN returns the four stages)
        return self.forward_head(self.forward_features(x))

    def load_pretrained(self, checkpoint_path: str, prefix: str = "") -> None:
        """timm's hook for weights in a format of their own: segnext-hub reads them (strict)."""
        load_weights(self, checkpoint_path, variant=self.variant)


def pretrained_tags(variant: str) -> dict[str, str]:
    """timm tag -> segnext-hub registry name for one size: ``mscan-t-in1k`` is ``in1k``,
    ``mscan-t`` (MMSeg's ADE20K model) is ``ade20k``, ``mscan-t-in1k-official`` is ``in1k_official``."""
    tags = {}
    for artifact in list_artifacts():
        if artifact.variant != variant:
            continue
        rest = artifact.name[len(f"mscan-{variant}"):].lstrip("-")
        tags[rest.replace("-", "_") if rest else artifact.dataset] = artifact.name
    return dict(sorted(tags.items(), key=lambda item: (item[0] != DEFAULT_TAG, item[0])))


def _cfgs() -> dict[str, dict[str, Any]]:
    cfgs = {}
    for variant in ("t", "s", "b", "l"):
        for tag, name in pretrained_tags(variant).items():
            cfgs[f"segnext_mscan_{variant}.{tag}"] = dict(
                file=REGISTRY_SCHEME + name, custom_load=True, num_classes=1000,
                first_conv="patch_embed1.proj.0", classifier="head", input_size=(3, 224, 224),
                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), license="apache-2.0",
                description=f"segnext-hub artifact {name} (segnext-hub info {name})",
                paper_ids="arXiv:2209.08575", paper_name="SegNeXt")
    return cfgs


default_cfgs = generate_default_cfgs(_cfgs())


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> MSCANTimm:
    name = f"segnext_mscan_{variant}"
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if pretrained and not overlay.get("state_dict"):
        overlay["custom_load"] = True  # any file or url goes through segnext-hub's reader, never torch.load
    if kwargs.get("features_only"):
        kwargs.setdefault("num_classes", 0)  # the classifier is pruned anyway: do not look for one
    kwargs.setdefault("feature_cfg", {}).update(feature_cls="getter")
    kwargs["feature_cfg"].setdefault("out_indices", (0, 1, 2, 3))
    feature_cfg = kwargs.pop("feature_cfg")
    return build_model_with_cfg(MSCANTimm, name, pretrained, pretrained_cfg_overlay=overlay,
                                feature_cfg=feature_cfg, pretrained_strict=True,
                                pretrained_filter_fn=_filter, size=variant, **kwargs)


def _filter(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """An in-memory ``state_dict`` overlay: MMSeg-named backbone keys (``backbone.`` and
    ``module.`` prefixes stripped), loaded strictly by timm."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone."):
            key = key.removeprefix(prefix)
        if not key.startswith("decode_head."):
            out[key] = value
    return out


@register_model
def segnext_mscan_t(pretrained: bool = False, **kwargs: Any) -> MSCANTimm:
    """SegNeXt's MSCAN-T."""
    return _create("t", pretrained, **kwargs)


@register_model
def segnext_mscan_s(pretrained: bool = False, **kwargs: Any) -> MSCANTimm:
    """SegNeXt's MSCAN-S."""
    return _create("s", pretrained, **kwargs)


@register_model
def segnext_mscan_b(pretrained: bool = False, **kwargs: Any) -> MSCANTimm:
    """SegNeXt's MSCAN-B."""
    return _create("b", pretrained, **kwargs)


@register_model
def segnext_mscan_l(pretrained: bool = False, **kwargs: Any) -> MSCANTimm:
    """SegNeXt's MSCAN-L."""
    return _create("l", pretrained, **kwargs)
