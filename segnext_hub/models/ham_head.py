"""LightHamHead: the SegNeXt decode head, with its NMF "Hamburger".

The NMF draws random initial bases at every forward. By default it draws them exactly as
MMSegmentation does -- one ``torch.rand((B*S, D, R))`` on the global CPU generator in the
default dtype, then moved to the input's device -- so ``torch.manual_seed(s)`` right
before a forward reproduces MMSeg's output bit for bit. Passing a ``torch.Generator``
makes inference deterministic without touching global RNG state.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NMF_EPS = 1e-6


class ConvGNAct(nn.Module):
    """1x1 conv (bias only when there is no norm), optional GroupNorm, optional ReLU.

    Attribute names ``conv`` / ``gn`` give MMSeg's ConvModule key names.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: bool = True, act: bool = True,
                 num_groups: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=not norm)
        self.gn = nn.GroupNorm(num_groups, out_channels) if norm else None
        self.act = nn.ReLU(inplace=True) if act else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.gn is not None:
            x = self.gn(x)
        if self.act is not None:
            x = self.act(x)
        return x


class NMF2D(nn.Module):
    """Non-negative matrix factorisation by multiplicative updates; no parameters."""

    def __init__(self, rank: int, steps: int = 7, train_steps: int = 6, groups: int = 1) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"NMF rank (md_r) must be a positive integer, got {rank}")
        self.rank = rank
        self.steps = steps
        self.train_steps = train_steps
        self.groups = groups  # MMSeg's MD_S
        self.generator: Optional[torch.Generator] = None

    def draw_bases(self, batch: int, dim: int, device: torch.device, dtype: torch.dtype,
                   generator: Optional[torch.Generator] = None) -> Tensor:
        """Random L2-normalised bases, drawn the way MMSeg draws them.

        They are drawn in the default dtype (as MMSeg does, so the RNG stream is the
        same) and then cast to the input's dtype, which MMSeg omits (it fails on fp64).
        """
        gen = generator if generator is not None else self.generator
        if gen is None:
            bases = torch.rand((batch * self.groups, dim, self.rank))
        else:
            # A generator decides the device it draws on; CPU generators draw on the CPU
            # and the result moves, just like the default path.
            bases = torch.rand((batch * self.groups, dim, self.rank), generator=gen, device=gen.device)
        return F.normalize(bases.to(device=device, dtype=dtype), dim=1)

    @staticmethod
    def _update_coef(x: Tensor, bases: Tensor, coef: Tensor) -> Tensor:
        numerator = torch.bmm(x.transpose(1, 2), bases)
        denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
        return coef * numerator / (denominator + NMF_EPS)

    @staticmethod
    def _update_bases(x: Tensor, bases: Tensor, coef: Tensor) -> Tensor:
        numerator = torch.bmm(x, coef)
        denominator = bases.bmm(coef.transpose(1, 2).bmm(coef))
        return bases * numerator / (denominator + NMF_EPS)

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None,
                bases: Optional[Tensor] = None) -> Tensor:
        b, c, h, w = x.shape
        dim = c // self.groups
        x = x.view(b * self.groups, dim, h * w)
        if bases is None:
            bases = self.draw_bases(b, dim, x.device, x.dtype, generator)
        # No no_grad here: MMSeg 1.2.2 back-propagates through every update (the official
        # repo's one-step gradient does not), and training matches MMSeg.
        coef = torch.bmm(x.transpose(1, 2), bases)
        coef = F.softmax(coef, dim=-1)  # upstream's inv_t is overridden to 1
        for _ in range(self.train_steps if self.training else self.steps):
            coef = self._update_coef(x, bases, coef)
            bases = self._update_bases(x, bases, coef)
        coef = self._update_coef(x, bases, coef)
        x = torch.bmm(bases, coef.transpose(1, 2))
        return x.view(b, c, h, w)


class Hamburger(nn.Module):
    """ham_in (1x1 + ReLU) -> NMF -> ham_out (1x1 + GN) -> ReLU(x + that)."""

    def __init__(self, channels: int, rank: int, num_groups: int = 32) -> None:
        super().__init__()
        if rank > channels:
            raise ValueError(f"md_r {rank} is more than the head's {channels} channels")
        self.ham_in = ConvGNAct(channels, channels, norm=False, act=False)
        self.ham = NMF2D(rank)
        self.ham_out = ConvGNAct(channels, channels, norm=True, act=False, num_groups=num_groups)

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None,
                bases: Optional[Tensor] = None) -> Tensor:
        enjoy = F.relu(self.ham_in(x), inplace=True)
        enjoy = self.ham(enjoy, generator=generator, bases=bases)
        enjoy = self.ham_out(enjoy)
        return F.relu(x + enjoy, inplace=True)


class LightHamHead(nn.Module):
    """Concatenates stages 2-4 at stride 8, squeezes, factorises, classifies."""

    def __init__(self, in_channels: Sequence[int], ham_channels: int, channels: int,
                 num_classes: int, md_r: int, in_index: Sequence[int] = (1, 2, 3),
                 dropout_ratio: float = 0.1, num_groups: int = 32) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
        self.in_channels = tuple(in_channels)
        self.in_index = tuple(in_index)
        self.num_classes = num_classes
        self.squeeze = ConvGNAct(sum(self.in_channels), ham_channels, num_groups=num_groups)
        self.hamburger = Hamburger(ham_channels, md_r, num_groups=num_groups)
        self.align = ConvGNAct(ham_channels, channels, num_groups=num_groups)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    @property
    def md_r(self) -> int:
        return self.hamburger.ham.rank

    @property
    def ham_channels(self) -> int:
        """The head's width (Hamburger channels; the classifier reads as many)."""
        return self.squeeze.conv.out_channels

    def forward(self, features: Sequence[Tensor], generator: Optional[torch.Generator] = None,
                bases: Optional[Tensor] = None) -> Tensor:
        inputs = [features[i] for i in self.in_index]
        size = inputs[0].shape[2:]
        inputs = [F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in inputs]
        x = self.squeeze(torch.cat(inputs, dim=1))
        x = self.hamburger(x, generator=generator, bases=bases)
        x = self.align(x)
        return self.conv_seg(self.dropout(x))
