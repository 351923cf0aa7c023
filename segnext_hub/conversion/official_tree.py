"""The official SegNeXt repository's module tree, used only to verify conversions.

An independent second definition: it is laid out like the official code (tokens of shape
(B, N, C) between blocks, the MLP's depth-wise conv wrapped in a ``DWConv`` module, the
classes named as there) and shares no module with the reference model. A conversion is
verified by loading the source tensors under their original names into this tree and the
converted tensors into the reference model, then comparing outputs: a wrong or swapped
rename cannot survive that, whereas comparing tensors key by key would trust the map.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.variants import Variant, get_variant


class DWConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.dwconv(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        x = self.dwconv(x)
        x = self.act(x)
        return self.fc2(x)


class AttentionModule(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv0_1 = nn.Conv2d(dim, dim, (1, 7), padding=(0, 3), groups=dim)
        self.conv0_2 = nn.Conv2d(dim, dim, (7, 1), padding=(3, 0), groups=dim)
        self.conv1_1 = nn.Conv2d(dim, dim, (1, 11), padding=(0, 5), groups=dim)
        self.conv1_2 = nn.Conv2d(dim, dim, (11, 1), padding=(5, 0), groups=dim)
        self.conv2_1 = nn.Conv2d(dim, dim, (1, 21), padding=(0, 10), groups=dim)
        self.conv2_2 = nn.Conv2d(dim, dim, (21, 1), padding=(10, 0), groups=dim)
        self.conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        u = x
        attn = self.conv0(x)
        a0 = self.conv0_2(self.conv0_1(attn))
        a1 = self.conv1_2(self.conv1_1(attn))
        a2 = self.conv2_2(self.conv2_1(attn))
        attn = attn + a0 + a1 + a2
        return self.conv3(attn) * u


class SpatialAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = AttentionModule(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.activation(self.proj_1(x))
        x = self.proj_2(self.spatial_gating_unit(x))
        return x + shortcut


class Block(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(torch.ones(dim))

    def forward(self, tokens: Tensor, height: int, width: int) -> Tensor:
        b, n, c = tokens.shape
        x = tokens.permute(0, 2, 1).view(b, c, height, width)
        x = x + self.layer_scale_1.unsqueeze(-1).unsqueeze(-1) * self.attn(self.norm1(x))
        x = x + self.layer_scale_2.unsqueeze(-1).unsqueeze(-1) * self.mlp(self.norm2(x))
        return x.view(b, c, n).permute(0, 2, 1)


class StemConv(nn.Module):
    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(3, out_dim // 2, 3, 2, 1), nn.BatchNorm2d(out_dim // 2), nn.GELU(),
            nn.Conv2d(out_dim // 2, out_dim, 3, 2, 1), nn.BatchNorm2d(out_dim),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        _, _, h, w = x.shape
        return x.flatten(2).transpose(1, 2), h, w


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 3, 2, 1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.norm(self.proj(x))
        _, _, h, w = x.shape
        return x.flatten(2).transpose(1, 2), h, w


class OfficialMSCAN(nn.Module):
    def __init__(self, variant: Variant) -> None:
        super().__init__()
        dims = variant.embed_dims
        for i in range(4):
            embed = StemConv(dims[0]) if i == 0 else OverlapPatchEmbed(dims[i - 1], dims[i])
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", nn.ModuleList(
                Block(dims[i], variant.mlp_ratios[i]) for _ in range(variant.depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i]))

    def forward(self, x: Tensor) -> list[Tensor]:
        b = x.shape[0]
        outs = []
        for i in range(1, 5):
            tokens, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                tokens = blk(tokens, h, w)
            tokens = getattr(self, f"norm{i}")(tokens)
            x = tokens.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


class ConvModule(nn.Module):
    def __init__(self, cin: int, cout: int, norm: bool, act: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=not norm)
        if norm:
            self.gn = nn.GroupNorm(32, cout)
        self.has_norm, self.has_act = norm, act

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.has_norm:
            x = self.gn(x)
        return F.relu(x, inplace=True) if self.has_act else x


class NMF2D(nn.Module):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def forward(self, x: Tensor, bases: Optional[Tensor] = None) -> Tensor:
        b, c, h, w = x.shape
        x = x.view(b, c, h * w)
        if bases is None:
            bases = F.normalize(torch.rand((b, c, self.rank)).to(x.device), dim=1)
        with torch.no_grad():
            coef = F.softmax(torch.bmm(x.transpose(1, 2), bases), dim=-1)
            for _ in range(7):
                coef = coef * torch.bmm(x.transpose(1, 2), bases) / (
                    coef.bmm(bases.transpose(1, 2).bmm(bases)) + 1e-6)
                bases = bases * torch.bmm(x, coef) / (bases.bmm(coef.transpose(1, 2).bmm(coef)) + 1e-6)
            coef = coef * torch.bmm(x.transpose(1, 2), bases) / (
                coef.bmm(bases.transpose(1, 2).bmm(bases)) + 1e-6)
        return torch.bmm(bases, coef.transpose(1, 2)).view(b, c, h, w)


class Hamburger(nn.Module):
    def __init__(self, channels: int, rank: int) -> None:
        super().__init__()
        self.ham_in = ConvModule(channels, channels, norm=False, act=False)
        self.ham = NMF2D(rank)
        self.ham_out = ConvModule(channels, channels, norm=True, act=False)

    def forward(self, x: Tensor, bases: Optional[Tensor] = None) -> Tensor:
        enjoy = F.relu(self.ham_in(x), inplace=True)
        enjoy = self.ham_out(self.ham(enjoy, bases))
        return F.relu(x + enjoy, inplace=True)


class OfficialLightHamHead(nn.Module):
    def __init__(self, variant: Variant, num_classes: int, md_r: int) -> None:
        super().__init__()
        self.squeeze = ConvModule(sum(variant.head_in_channels), variant.ham_channels, True, True)
        self.hamburger = Hamburger(variant.ham_channels, md_r)
        self.align = ConvModule(variant.ham_channels, variant.channels, True, True)
        self.conv_seg = nn.Conv2d(variant.channels, num_classes, 1)

    def forward(self, feats: Sequence[Tensor], bases: Optional[Tensor] = None) -> Tensor:
        levels = list(feats[1:4])
        levels = [F.interpolate(t, size=levels[0].shape[2:], mode="bilinear", align_corners=False)
                  for t in levels]
        x = self.align(self.hamburger(self.squeeze(torch.cat(levels, dim=1)), bases))
        return self.conv_seg(x)


class OfficialSegNeXt(nn.Module):
    def __init__(self, variant: Variant, num_classes: int, md_r: int) -> None:
        super().__init__()
        self.backbone = OfficialMSCAN(variant)
        self.decode_head = OfficialLightHamHead(variant, num_classes, md_r)

    def forward(self, x: Tensor, bases: Optional[Tensor] = None) -> Tensor:
        return self.decode_head(self.backbone(x), bases)


def build_official(variant: str, *, num_classes: int = 150, md_r: Optional[int] = None,
                   backbone_only: bool = False, ham_channels: Optional[int] = None) -> nn.Module:
    """The official layout's model (eval mode), for loading official-named tensors strictly;
    ``ham_channels`` (None: the variant's) is the decode head's width."""
    spec = get_variant(variant)
    if ham_channels is not None:
        spec = replace(spec, ham_channels=ham_channels)
    if backbone_only:
        return OfficialMSCAN(spec).eval()
    return OfficialSegNeXt(spec, num_classes, spec.md_r if md_r is None else md_r).eval()
