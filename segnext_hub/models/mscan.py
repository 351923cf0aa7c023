"""MSCAN, the SegNeXt backbone, with MMSeg 1.x module names.

Every tensor operation happens in the same order and on the same memory layout as in
MMSegmentation 1.2.2, so that results match it bit for bit (floating-point addition is
not associative, and several CPU kernels pick a different code path for a
non-contiguous input). Where a line looks redundant, that is usually why.
"""

from __future__ import annotations

from typing import Optional, Sequence, TYPE_CHECKING

import torch
from torch import Tensor, nn

from .variants import STRIP_KERNEL_SIZES

if TYPE_CHECKING:  # the config lives above models; models import nothing else from the package
    from ..config import ArtifactConfig

# MMSeg initialises the layer scales to this; real weights overwrite it.
LAYER_SCALE_INIT = 1e-2


def _to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C) view, as the upstream stage loop keeps it."""
    return x.flatten(2).transpose(1, 2)


class StemConv(nn.Module):
    """Stage-1 patch embedding: two stride-2 3x3 convs (stride 4 overall)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        # Sequential indices 0,1,3,4 are part of the checkpoint key names.
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, mid, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(mid),
            nn.GELU(),
            nn.Conv2d(mid, out_channels, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class OverlapPatchEmbed(nn.Module):
    """Stages 2-4 downsampling: 3x3 stride-2 conv, then BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class MSCAAttention(nn.Module):
    """Multi-scale convolutional attention: the depth-wise strip convs that gate ``u``."""

    def __init__(self, channels: int, strip_sizes: Sequence[int] = STRIP_KERNEL_SIZES) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        for i, k in enumerate(strip_sizes):
            pad = k // 2
            self.add_module(f"conv{i}_1", nn.Conv2d(channels, channels, (1, k), padding=(0, pad), groups=channels))
            self.add_module(f"conv{i}_2", nn.Conv2d(channels, channels, (k, 1), padding=(pad, 0), groups=channels))
        self.num_strips = len(strip_sizes)
        self.conv3 = nn.Conv2d(channels, channels, 1)

    def forward(self, u: Tensor) -> Tensor:
        attn = self.conv0(u)
        branches = [
            getattr(self, f"conv{i}_2")(getattr(self, f"conv{i}_1")(attn)) for i in range(self.num_strips)
        ]
        # Left-to-right sum, as upstream: attn + b0 + b1 + b2.
        for branch in branches:
            attn = attn + branch
        return self.conv3(attn) * u


class MSCASpatialAttention(nn.Module):
    """proj_1 -> GELU -> MSCA -> proj_2, with its own inner residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(channels, channels, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = MSCAAttention(channels)
        self.proj_2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return y + x


class Mlp(nn.Module):
    """1x1 expand -> 3x3 depth-wise -> GELU -> 1x1 project."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class DropPath(nn.Module):
    """Stochastic depth for training; the identity in eval mode.

    Draws and scales exactly as mmcv's ``drop_path`` (which MMSeg's MSCAN uses): one
    ``torch.rand`` per sample in the input's dtype, ``floor(keep + u)`` as the mask and
    ``x / keep * mask``, so a seeded training step consumes the global RNG the way MMSeg
    does and gives the same numbers.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1 - self.p
        mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)).floor()
        return x.div(keep) * mask


class MSCABlock(nn.Module):
    """Pre-norm block: x += ls1 * attn(BN(x)); x += ls2 * mlp(BN(x))."""

    def __init__(self, channels: int, mlp_ratio: float, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(channels)
        self.attn = MSCASpatialAttention(channels)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(channels)
        self.mlp = Mlp(channels, int(channels * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(torch.full((channels,), LAYER_SCALE_INIT))
        self.layer_scale_2 = nn.Parameter(torch.full((channels,), LAYER_SCALE_INIT))

    def forward(self, x: Tensor) -> Tensor:
        ls1 = self.layer_scale_1.unsqueeze(-1).unsqueeze(-1)
        ls2 = self.layer_scale_2.unsqueeze(-1).unsqueeze(-1)
        x = x + self.drop_path(ls1 * self.attn(self.norm1(x)))
        x = x + self.drop_path(ls2 * self.mlp(self.norm2(x)))
        return x


class MSCAN(nn.Module):
    """The four-stage backbone. ``forward`` returns features at strides 4, 8, 16, 32."""

    #: What the artifact is (set by ``segnext_hub.load``/``create_model``; None for a model
    #: built directly): variant, classes, MD_R and where each decisive value came from.
    segnext_config: Optional[ArtifactConfig] = None

    def __init__(
        self,
        embed_dims: Sequence[int],
        depths: Sequence[int],
        mlp_ratios: Sequence[float],
        drop_path_rate: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if in_channels != 3:
            raise ValueError("MSCAN's stem is fixed at 3 input channels (RGB)")
        self.embed_dims = tuple(embed_dims)
        self.depths = tuple(depths)
        self.num_stages = len(depths)
        total = sum(depths)
        # float32 linspace, as MMSeg computes the rates: the keep probabilities then match
        # bit for bit (an explicit CPU device: the model may be built under a meta device).
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, total, device="cpu")]
        cursor = 0
        for i in range(self.num_stages):
            if i == 0:
                embed: nn.Module = StemConv(in_channels, embed_dims[0])
            else:
                embed = OverlapPatchEmbed(embed_dims[i - 1], embed_dims[i])
            blocks = nn.ModuleList(
                MSCABlock(embed_dims[i], mlp_ratios[i], rates[cursor + j]) for j in range(depths[i])
            )
            cursor += depths[i]
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=1e-5))

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"MSCAN expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        outs: list[Tensor] = []
        for i in range(1, self.num_stages + 1):
            x = self.forward_stage(i, x)
            outs.append(x)
        return outs

    def forward_stage(self, stage: int, x: Tensor) -> Tensor:
        """Stage ``stage`` (1-4) alone: its patch embedding, blocks and norm, NCHW in and out.

        ``forward`` chains these; the timm encoder (``segnext_hub.timm``) calls them too, so
        both compute the same numbers.
        """
        x = getattr(self, f"patch_embed{stage}")(x)
        batch, _, height, width = x.shape
        for block in getattr(self, f"block{stage}"):
            x = block(x)
        # LayerNorm over channels on the token view, exactly as upstream lays it out.
        tokens = getattr(self, f"norm{stage}")(_to_tokens(x))
        return tokens.reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()
